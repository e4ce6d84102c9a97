/** Lists what is on disk in a spool or Maildir, for assertions. */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

export async function filesIn(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** Counts of queue files per state directory. */
export interface SpoolCounts {
  tmp: number;
  incoming: number;
  active: number;
  deferred: number;
  hold: number;
  corrupt: number;
}

export async function spoolCounts(spoolDir: string): Promise<SpoolCounts> {
  const count = async (state: string) => (await filesIn(join(spoolDir, state))).length;
  return {
    tmp: await count('tmp'),
    incoming: await count('incoming'),
    active: await count('active'),
    deferred: await count('deferred'),
    hold: await count('hold'),
    corrupt: await count('corrupt'),
  };
}

export async function waitFor<T>(probe: () => Promise<T | undefined | false>, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * Waits until nothing is queued for delivery (incoming, active, deferred): every
 * message and notice has gone. Listing three directories is not one atomic look:
 * a message that moves from deferred/ to active/ (or back) between two listings
 * is in neither of them. So the spool must look empty three times in a row, 50
 * ms apart: a message still being retried is all but certain to show in one.
 */
export async function waitForDrainedSpool(spoolDir: string, timeoutMs = 10_000): Promise<void> {
  let emptyLooks = 0;
  await waitFor(async () => {
    const c = await spoolCounts(spoolDir);
    emptyLooks = c.incoming + c.active + c.deferred === 0 ? emptyLooks + 1 : 0;
    if (emptyLooks >= 3) return true;
    await new Promise((resolve) => setTimeout(resolve, 25));
    return undefined;
  }, timeoutMs, 'an empty spool');
}
