/** The config of a relay run as a child process for tests of the administration commands. */
import { join } from 'node:path';
import { stringify } from 'yaml';

/**
 * YAML for a relay under `dir`: one MX listener, relay.test delivered to
 * Maildirs, loopback allowed to relay, no metrics listener, and retries only
 * when the administrator asks (nothing moves by itself during a test). `routes`
 * sends each domain to a port on 127.0.0.1 in plain text; `delivery` adds to the
 * delivery settings.
 */
export function adminTestRelayConfig(dir: string, routes: Record<string, number>, delivery: Record<string, unknown> = {}): string {
  return stringify({
    hostname: 'relay.test',
    listeners: [{ role: 'mx', address: '127.0.0.1', port: 0, earlyTalkerCheck: false }],
    domains: [{ name: 'relay.test', delivery: 'maildir' }],
    relay: { networks: ['127.0.0.0/8'] },
    paths: { spool: join(dir, 'spool'), mail: join(dir, 'mail'), state: join(dir, 'state') },
    metrics: { enabled: false },
    delivery: {
      allowedDestinations: ['127.0.0.0/8'],
      retry: { minBackoffMs: 3_600_000, maxBackoffMs: 3_600_000 },
      routes: Object.fromEntries(Object.entries(routes).map(([domain, port]) => [domain, { host: '127.0.0.1', port, tls: 'none' }])),
      ...delivery,
    },
  });
}
