/**
 * Starts a relay in this process on loopback port 0 with a fresh temporary spool,
 * Maildir root and state directory. Config is given as a plain object (the YAML
 * shape) merged over a test base config; it goes through the real schema.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { stringify } from 'yaml';
import { parseConfig } from '../../server/config/load';
import { Relay, type RelayOptions } from '../../server/relay';

export interface TestRelay {
  relay: Relay;
  dir: string;
  ports: number[];
  /** parsed JSON log lines so far */
  logs: Array<Record<string, unknown>>;
  waitForLog(predicate: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

export function baseConfig(dir: string): Record<string, unknown> {
  return {
    hostname: 'relay.test',
    listeners: [
      { role: 'mx', address: '127.0.0.1', port: 0, earlyTalkerCheck: false },
      { role: 'submission', address: '127.0.0.1', port: 0, tls: 'starttls' },
      { role: 'submission', address: '127.0.0.1', port: 0, tls: 'implicit' },
    ],
    domains: [{ name: 'relay.test', delivery: 'maildir', mailboxes: ['alice', 'bob'], aliases: { root: 'alice' } }],
    paths: { spool: join(dir, 'spool'), mail: join(dir, 'mail'), state: join(dir, 'state') },
    delivery: { allowedDestinations: ['127.0.0.0/8', '::1/128'], retry: { minBackoffMs: 200, maxBackoffMs: 400 } },
    // off unless a test turns it on (with dns.servers on loopback): no lookups through the system resolver
    inbound: { authentication: false },
    // a free port each: test relays run side by side
    metrics: { port: 0 },
  };
}

export async function startTestRelay(
  overrides: (dir: string) => Record<string, unknown> = () => ({}),
  options: RelayOptions & { dir?: string } = {},
): Promise<TestRelay> {
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'ownrelay-test-')));
  const config = parseConfig(stringify({ ...baseConfig(dir), ...overrides(dir) }), 'test config');
  const logs: Array<Record<string, unknown>> = [];
  const waiters = new Set<() => void>();
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) logs.push(JSON.parse(line) as Record<string, unknown>);
      for (const wake of waiters) wake();
      done();
    },
  });
  const logger = pino({ level: 'debug', base: null }, sink);
  const relay = await Relay.start(config, logger, { shutdownTimeoutMs: 2000, ...options });
  return {
    relay,
    dir,
    ports: relay.ports,
    logs,
    waitForLog(predicate, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = logs.find(predicate);
          if (!found) return false;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(found);
          return true;
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no matching log line within ${timeoutMs} ms; last lines:\n${logs.slice(-10).map((l) => JSON.stringify(l)).join('\n')}`));
        }, timeoutMs);
        if (!check()) waiters.add(check);
      });
    },
    async stop() {
      await relay.stop();
      if (!options.dir) await rm(dir, { recursive: true, force: true });
    },
  };
}
