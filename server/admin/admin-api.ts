/**
 * The operations of the admin socket, bound to a running relay. Reads go to the
 * spool through QueueView; changes go through QueueControl (which coordinates
 * with the scheduler); `status` gathers what `ownrelay status` shows.
 */
import { readFile } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import { join, resolve } from 'node:path';
import { version } from '../../package.json';
import type { RelayConfig } from '../config/schema';
import type { Relay } from '../relay';
import { QUEUE_STATES, type QueueState } from '../queue/spool';
import { freeBytes } from '../queue/spool-space';
import type { SuspendedDestination } from '../queue/suspended-destinations';
import type { AdminHandler } from './admin-server';
import type { AdminOp } from './protocol';
import type { QueueControl, QueueAction } from './queue-control';
import type { DomainError } from './delivery-errors';
import type { QueueFilter, QueueView } from './queue-view';

/** Where the admin socket of this config is: `admin.socket`, or <paths.state>/admin.sock. */
export function adminSocketPath(config: RelayConfig): string {
  return resolve(config.admin.socket ?? join(config.paths.state, 'admin.sock'));
}

export interface CertificateStatus {
  file: string;
  subject: string;
  validTo: string;
  daysLeft: number;
  error?: string;
}

export interface RelayStatus {
  version: string;
  pid: number;
  hostname: string;
  configFile?: string;
  startedAt: string;
  uptimeSeconds: number;
  listeners: Array<{ role: string; address: string; port: number; tls: string }>;
  metrics?: string;
  adminSocket: string;
  /** `waiting`: messages parked for a free slot at a busy destination */
  queue: { counts: Record<QueueState, number>; oldestAgeSeconds: number; delivering: number; waiting: number };
  /** destinations where nothing answered, whose mail waits without attempts until `until` */
  suspendedDestinations: SuspendedDestination[];
  /** the spool directory and its file system's free space (absent when it cannot be read) */
  spool: { path: string; freeBytes?: number; minFreeBytes: number };
  certificate: CertificateStatus;
  lastErrors: DomainError[];
}

export function adminHandlers(relay: Relay, control: QueueControl, view: QueueView): Record<AdminOp, AdminHandler> {
  // `ids`, or `select`: a filter like queue.list's (an empty one selects all)
  const action =
    (name: QueueAction): AdminHandler =>
    (args, by) =>
      isRecord(args.select) ? control.applyToMatching(name, filterOf(args.select), by) : control.apply(name, idsOf(args), by);
  return {
    status: () => relayStatus(relay, view),
    reload: () => relay.reload(),
    'queue.list': (args) => view.list(filterOf(args)),
    'queue.show': async (args) => {
      const id = String(args.id ?? '');
      const detail = await view.show(id);
      if (!detail) throw new Error(`${id}: not in the queue`);
      return detail;
    },
    'queue.summary': (args) => view.summary(statesOf(args)),
    'queue.hold': action('hold'),
    'queue.release': action('release'),
    'queue.retry': action('retry'),
    'queue.delete': action('delete'),
    'queue.flush': async (_args, by) => ({ count: await control.flush(by) }),
  };
}

export async function relayStatus(relay: Relay, view: QueueView): Promise<RelayStatus> {
  const config = relay.config;
  const metrics = relay.metricsEndpoint;
  return {
    version,
    pid: process.pid,
    hostname: config.hostname,
    ...(relay.configPath ? { configFile: resolve(relay.configPath) } : {}),
    startedAt: relay.startedAt.toISOString(),
    uptimeSeconds: Math.round((Date.now() - relay.startedAt.getTime()) / 1000),
    listeners: relay.runningListeners.map((l) => ({ role: l.listener.role, address: l.listener.address, port: l.port, tls: l.listener.tls })),
    ...(metrics ? { metrics: `http://${metrics.address.includes(':') ? `[${metrics.address}]` : metrics.address}:${metrics.port}/metrics` } : {}),
    adminSocket: adminSocketPath(config),
    queue: { ...(await view.counts()), delivering: relay.scheduler.activeCount, waiting: relay.scheduler.waitingCount },
    suspendedDestinations: relay.scheduler.suspendedDestinations(),
    spool: { path: resolve(config.paths.spool), freeBytes: freeBytes(config.paths.spool), minFreeBytes: config.limits.spoolMinFreeBytes },
    certificate: await certificateStatus(config),
    lastErrors: relay.deliveryErrors.list(),
  };
}

/** Reads the certificate file in use now (a renewed file shows its new expiry before a reload). */
export async function certificateStatus(config: RelayConfig): Promise<CertificateStatus> {
  const file = resolve(config.tls.certFile ?? join(config.paths.state, 'tls', 'self-signed-cert.pem'));
  try {
    const cert = new X509Certificate(await readFile(file));
    const validTo = new Date(cert.validTo);
    return { file, subject: cert.subject.replace(/\n/g, ', '), validTo: validTo.toISOString(), daysLeft: Math.floor((validTo.getTime() - Date.now()) / 86_400_000) };
  } catch (err) {
    return { file, subject: '', validTo: '', daysLeft: 0, error: `cannot read the certificate: ${(err as Error).message}` };
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function idsOf(args: Record<string, unknown>): string[] {
  const ids = args.ids;
  if (!Array.isArray(ids) || ids.length === 0 || !ids.every((id) => typeof id === 'string')) throw new Error('expected ids (a list of queue ids) or select (a filter)');
  return ids as string[];
}

export function filterOf(args: Record<string, unknown>): QueueFilter {
  const filter: QueueFilter = {};
  if (typeof args.sender === 'string') filter.sender = args.sender;
  if (typeof args.recipientDomain === 'string') filter.recipientDomain = args.recipientDomain;
  if (typeof args.minAgeSeconds === 'number') filter.minAgeSeconds = args.minAgeSeconds;
  if (args.state !== undefined) {
    if (!(QUEUE_STATES as readonly unknown[]).includes(args.state)) throw new Error(`unknown state ${JSON.stringify(args.state)}; expected one of ${QUEUE_STATES.join(', ')}`);
    filter.state = args.state as QueueState;
  }
  return filter;
}

function statesOf(args: Record<string, unknown>): QueueState[] | undefined {
  if (!Array.isArray(args.states)) return undefined;
  for (const state of args.states) if (!(QUEUE_STATES as readonly unknown[]).includes(state)) throw new Error(`unknown state ${JSON.stringify(state)}`);
  return args.states as QueueState[];
}
