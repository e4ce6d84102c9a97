/**
 * What a reload can apply in place and what it cannot. Pure functions of two
 * validated configs.
 */
import { isDeepStrictEqual } from 'node:util';
import type { ListenerConfig, RelayConfig } from '../config/schema';

/** A running listener can take the new config in place when none of these changed. */
export function sameListener(a: ListenerConfig, b: ListenerConfig): boolean {
  return a.role === b.role && a.address === b.address && a.port === b.port && a.tls === b.tls && a.earlyTalkerCheck === b.earlyTalkerCheck;
}

/**
 * Settings read once at start (where the queue lives, the admin socket, the
 * metrics endpoint, the outbound SMTP client's settings): a change is reported,
 * not applied, until the relay restarts.
 */
const RESTART_ONLY_PATHS = ['paths', 'admin', 'metrics', 'dns', 'tls', 'delivery.connectTimeoutMs', 'delivery.commandTimeoutMs', 'delivery.allowedDestinations', 'delivery.maxPerDestination', 'delivery.mtaSts', 'delivery.tlsReports'] as const;

export function restartOnlyChanges(running: RelayConfig, next: RelayConfig): string[] {
  const changed: string[] = RESTART_ONLY_PATHS.filter((path) => !isDeepStrictEqual(valueAt(running, path), valueAt(next, path)));
  // the greeting uses the new hostname at once; outbound EHLO keeps the old one until a restart
  if (running.hostname !== next.hostname) changed.push('hostname (outbound EHLO)');
  return changed;
}

/**
 * The config a reload runs with: the new file, except the restart-only settings,
 * which keep their running values (so the queue, the Maildirs and the sockets
 * stay where they are, and the next reload still reports the pending change).
 */
export function effectiveConfig(running: RelayConfig, next: RelayConfig): RelayConfig {
  return Object.freeze({
    ...next,
    paths: running.paths,
    admin: running.admin,
    metrics: running.metrics,
    dns: running.dns,
    delivery: Object.freeze({
      ...next.delivery,
      connectTimeoutMs: running.delivery.connectTimeoutMs,
      commandTimeoutMs: running.delivery.commandTimeoutMs,
      allowedDestinations: running.delivery.allowedDestinations,
      maxPerDestination: running.delivery.maxPerDestination,
    }),
  });
}

function valueAt(config: RelayConfig, path: string): unknown {
  let value: unknown = config;
  for (const key of path.split('.')) value = (value as Record<string, unknown> | undefined)?.[key];
  return value;
}
