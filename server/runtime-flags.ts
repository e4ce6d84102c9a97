/**
 * How the relay is meant to run in production; the bundle's #! line applies both
 * (`#!/usr/bin/env -S VAR=value ... node <flags>`), so running the bundle as a
 * program is enough.
 *
 * Memory is the reason for each. Messages stream through short-lived buffers on
 * two threads (the event loop and the spool's group-commit thread):
 * - a smaller young generation lets fewer dead buffers wait for a collection;
 * - the old generation may grow by half its live size before the next full
 *   collection (V8's default lets it reach several times that): the relay's live
 *   heap is about 20 MiB, and with the default an idle-to-busy relay let dead
 *   objects and the message buffers they hold pile up to 50 MiB more first. The
 *   extra collections cost nothing measurable on small messages and about 15 %
 *   of the rate on 100 KiB ones (README.md, Benchmark);
 * - glibc would otherwise give each thread its own malloc arenas and keep freed
 *   message memory around instead of returning it to the system.
 */
export const RELAY_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4', '--heap-growing-percent=50'];

export const RELAY_ENVIRONMENT: Readonly<Record<string, string>> = {
  MALLOC_ARENA_MAX: '2',
  MALLOC_TRIM_THRESHOLD_: '131072',
};

/** The #! line of the bundle. */
export function bundleShebang(): string {
  const env = Object.entries(RELAY_ENVIRONMENT).map(([name, value]) => `${name}=${value}`);
  return `#!/usr/bin/env -S ${[...env, 'node', ...RELAY_NODE_FLAGS].join(' ')}`;
}
