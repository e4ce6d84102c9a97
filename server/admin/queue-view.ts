/**
 * Reading the queue for people: listings with filters, one message in detail,
 * and a qshape-like summary (Postfix's QSHAPE_README). Read-only: it lists the
 * state directories and reads envelopes, and never writes, so it is safe
 * against a running relay (a message may move between two reads; it is then
 * reported where it was found, or skipped when it is gone).
 */
import { open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { openWithAddedHeaders } from '../delivery/prefixed-message';
import { addedHeaders, domainOf, type QueueEnvelope } from '../queue/envelope';
import { readQueueFile } from '../queue/queue-file';
import { QUEUE_STATES, parseEntryName, type QueueEntry, type QueueState } from '../queue/spool';

export interface QueueFilter {
  /** envelope sender: a full address, or "@domain" for a whole domain */
  sender?: string;
  /** a recipient domain (pending recipients only) */
  recipientDomain?: string;
  /** at least this old (seconds since acceptance) */
  minAgeSeconds?: number;
  state?: QueueState;
}

export interface QueueItem {
  id: string;
  state: QueueState;
  /** deferred: when the next attempt is due (ISO time) */
  nextAttempt?: string;
  receivedAt: string;
  ageSeconds: number;
  size: number;
  from: string;
  attempts: number;
  recipients: Array<{ address: string; status: string; reply?: string; remoteHost?: string; notify?: QueueEnvelope['recipients'][number]['notify']; orcpt?: string }>;
  client?: QueueEnvelope['client'];
  /** RFC 3461 RET and ENVID, when the client gave them */
  dsn?: QueueEnvelope['dsn'];
  /** corrupt files: why they could not be read */
  error?: string;
}

export interface QueueDetail extends QueueItem {
  /** the message's header block, as received (at most 64 KiB) */
  headers: string;
}

/** Age buckets in minutes, as qshape's default: 5, 10, 20, ... 1280, and older. */
export const SUMMARY_BUCKETS_MINUTES = [5, 10, 20, 40, 80, 160, 320, 640, 1280] as const;

export interface QueueSummary {
  buckets: string[];
  /** one row per destination domain, most messages first; the first row is the total */
  rows: Array<{ domain: string; total: number; counts: number[] }>;
}

const HEADER_LIMIT_BYTES = 64 * 1024;

/** The queue ids are time-sortable: their first 9 base-36 digits are the acceptance time in ms. */
export function acceptedAtFromId(id: string): number {
  const ms = Number.parseInt(id.slice(0, 9), 36);
  return Number.isFinite(ms) ? ms : Date.now();
}

export class QueueView {
  constructor(readonly spoolDir: string) {}

  async entries(state: QueueState): Promise<QueueEntry[]> {
    let names: string[];
    try {
      names = await readdir(join(this.spoolDir, state));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    return names.map((name) => parseEntryName(state, name)).filter((e): e is QueueEntry => e !== undefined);
  }

  /** Counts per state and the age of the oldest message, from directory listings only. */
  async counts(): Promise<{ counts: Record<QueueState, number>; oldestAgeSeconds: number }> {
    const counts = {} as Record<QueueState, number>;
    let oldest = Infinity;
    for (const state of QUEUE_STATES) {
      const entries = await this.entries(state);
      counts[state] = entries.length;
      if (state === 'corrupt') continue;
      for (const entry of entries) oldest = Math.min(oldest, acceptedAtFromId(entry.id));
    }
    return { counts, oldestAgeSeconds: oldest === Infinity ? 0 : Math.max(0, Math.round((Date.now() - oldest) / 1000)) };
  }

  /** Finds a message by queue id in any state. */
  async find(id: string): Promise<QueueEntry | undefined> {
    for (const state of QUEUE_STATES) {
      const found = (await this.entries(state)).find((e) => e.id === id);
      if (found) return found;
    }
    return undefined;
  }

  async list(filter: QueueFilter = {}): Promise<QueueItem[]> {
    const items: QueueItem[] = [];
    for (const state of filter.state ? [filter.state] : QUEUE_STATES) {
      for (const entry of (await this.entries(state)).sort((a, b) => (a.id < b.id ? -1 : 1))) {
        const item = await this.item(entry);
        if (item && matches(item, filter)) items.push(item);
      }
    }
    return items;
  }

  async show(id: string): Promise<QueueDetail | undefined> {
    const entry = await this.find(id);
    if (!entry) return undefined;
    const item = await this.item(entry);
    if (!item) return undefined;
    return { ...item, headers: item.error ? '' : await this.headers(entry) };
  }

  async summary(states: readonly QueueState[] = ['incoming', 'active', 'deferred', 'hold']): Promise<QueueSummary> {
    const total = { domain: 'TOTAL', total: 0, counts: new Array<number>(SUMMARY_BUCKETS_MINUTES.length + 1).fill(0) };
    const byDomain = new Map<string, { domain: string; total: number; counts: number[] }>();
    const now = Date.now();
    for (const state of states) {
      for (const item of await this.list({ state })) {
        const minutes = (now - Date.parse(item.receivedAt)) / 60_000;
        let bucket = SUMMARY_BUCKETS_MINUTES.findIndex((limit) => minutes < limit);
        if (bucket < 0) bucket = SUMMARY_BUCKETS_MINUTES.length;
        // a message counts once per destination domain it still has recipients at
        const pending = item.recipients.filter((r) => r.status === 'pending');
        const domains = new Set((pending.length > 0 ? pending : item.recipients).map((r) => domainOf(r.address) || '(none)'));
        for (const domain of domains) {
          let row = byDomain.get(domain);
          if (!row) byDomain.set(domain, (row = { domain, total: 0, counts: new Array<number>(total.counts.length).fill(0) }));
          row.total++;
          row.counts[bucket]!++;
        }
        total.total++;
        total.counts[bucket]!++;
      }
    }
    const rows = [...byDomain.values()].sort((a, b) => b.total - a.total || (a.domain < b.domain ? -1 : 1));
    return { buckets: [...SUMMARY_BUCKETS_MINUTES.map(String), `${SUMMARY_BUCKETS_MINUTES[SUMMARY_BUCKETS_MINUTES.length - 1]!}+`], rows: [total, ...rows] };
  }

  private path(entry: QueueEntry): string {
    return join(this.spoolDir, entry.state, entry.name);
  }

  private async item(entry: QueueEntry): Promise<QueueItem | undefined> {
    const nextAttempt = entry.dueAt !== undefined ? new Date(entry.dueAt).toISOString() : undefined;
    try {
      const { envelope, size } = await readQueueFile(this.path(entry));
      return {
        id: entry.id,
        state: entry.state,
        ...(nextAttempt ? { nextAttempt } : {}),
        receivedAt: new Date(envelope.receivedAt).toISOString(),
        ageSeconds: Math.max(0, Math.round((Date.now() - envelope.receivedAt) / 1000)),
        size,
        from: envelope.from,
        attempts: envelope.attempts,
        recipients: envelope.recipients.map((r) => ({
          address: r.address,
          status: r.status,
          ...(r.reply ? { reply: r.reply } : {}),
          ...(r.remoteHost ? { remoteHost: r.remoteHost } : {}),
          ...(r.notify ? { notify: r.notify } : {}),
          ...(r.orcpt !== undefined ? { orcpt: r.orcpt } : {}),
        })),
        client: envelope.client,
        ...(envelope.dsn ? { dsn: envelope.dsn } : {}),
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined; // moved on meanwhile
      const acceptedAt = acceptedAtFromId(entry.id);
      return {
        id: entry.id,
        state: entry.state,
        receivedAt: new Date(acceptedAt).toISOString(),
        ageSeconds: Math.max(0, Math.round((Date.now() - acceptedAt) / 1000)),
        size: 0,
        from: '',
        attempts: 0,
        recipients: [],
        error: err instanceof Error ? err.message : String(err),
      };
    }
  }

  private async headers(entry: QueueEntry): Promise<string> {
    try {
      const { bodyOffset, envelope } = await readQueueFile(this.path(entry));
      const handle = await open(this.path(entry), 'r');
      try {
        const buffer = Buffer.alloc(HEADER_LIMIT_BYTES);
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, bodyOffset);
        // as the message will be passed on: with the fields the relay adds
        const added = addedHeaders(envelope);
        const head = buffer.subarray(0, bytesRead);
        const text = (added ? Buffer.concat(await openWithAddedHeaders(added, () => Readable.from([head]))().toArray()) : head).toString('utf8');
        const end = text.search(/\r?\n\r?\n/);
        return end >= 0 ? text.slice(0, end) : text;
      } finally {
        await handle.close();
      }
    } catch {
      return '';
    }
  }
}

function matches(item: QueueItem, filter: QueueFilter): boolean {
  if (filter.sender !== undefined) {
    const wanted = filter.sender.toLowerCase();
    const from = item.from.toLowerCase();
    if (wanted.startsWith('@') ? `@${domainOf(from)}` !== wanted : from !== wanted) return false;
  }
  if (filter.recipientDomain !== undefined) {
    const wanted = filter.recipientDomain.toLowerCase().replace(/^@/, '');
    if (!item.recipients.some((r) => r.status === 'pending' && domainOf(r.address) === wanted)) return false;
  }
  if (filter.minAgeSeconds !== undefined && item.ageSeconds < filter.minAgeSeconds) return false;
  return true;
}
