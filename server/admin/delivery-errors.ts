/**
 * The last delivery error per destination domain, for `ownrelay status`: what a
 * remote server (or the network) last said when a recipient was deferred or
 * bounced. Bounded: the domains with the oldest errors are forgotten first, and a
 * delivery to a domain clears its entry.
 *
 * With a file, the list outlives restarts: it is read at start (an unreadable file
 * is logged and ignored: the list only informs), and written, whole and by rename,
 * a few seconds after a change and at `close()`.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { domainOf } from '../queue/envelope';
import type { RecipientResult } from '../delivery/types';
import type { Logger } from '../log/logger';

export interface DomainError {
  domain: string;
  /** ISO time of the last error */
  at: string;
  outcome: 'deferred' | 'failed';
  reply: string;
  remoteHost?: string;
  queueId: string;
  /** errors for this domain since its last successful delivery */
  count: number;
}

/** The file in `paths.state` that keeps the list across restarts. */
export const DELIVERY_ERRORS_FILE = 'delivery-errors.json';

const MAX_DOMAINS = 100;
/** How long a change waits before the file is written (changes in between go in the same write). */
const SAVE_DELAY_MS = 5_000;

export class DeliveryErrors {
  private readonly byDomain = new Map<string, DomainError>();
  private saveTimer?: NodeJS.Timeout;

  constructor(private readonly persisted?: { file: string; logger: Logger }) {
    if (persisted) this.load(persisted.file, persisted.logger);
  }

  record(queueId: string, result: RecipientResult): void {
    if (this.apply(queueId, result)) this.scheduleSave();
  }

  /** most recent first */
  list(): DomainError[] {
    return [...this.byDomain.values()].reverse();
  }

  /** Writes pending changes now and stops the timer. */
  close(): void {
    if (!this.saveTimer) return;
    clearTimeout(this.saveTimer);
    this.saveTimer = undefined;
    this.save();
  }

  /** Returns whether the list changed. */
  private apply(queueId: string, result: RecipientResult): boolean {
    const domain = domainOf(result.address);
    if (result.outcome === 'delivered') return this.byDomain.delete(domain);
    const previous = this.byDomain.get(domain);
    // re-inserted so the map stays ordered by time of the last error
    this.byDomain.delete(domain);
    this.byDomain.set(domain, {
      domain,
      at: new Date().toISOString(),
      outcome: result.outcome,
      reply: result.reply,
      ...(result.remoteHost ? { remoteHost: result.remoteHost } : {}),
      queueId,
      count: (previous?.count ?? 0) + 1,
    });
    if (this.byDomain.size > MAX_DOMAINS) this.byDomain.delete(this.byDomain.keys().next().value!);
    return true;
  }

  private scheduleSave(): void {
    if (!this.persisted || this.saveTimer) return;
    this.saveTimer = setTimeout(() => {
      this.saveTimer = undefined;
      this.save();
    }, SAVE_DELAY_MS);
    this.saveTimer.unref();
  }

  private save(): void {
    const { file, logger } = this.persisted!;
    const tmp = `${file}.tmp`;
    try {
      mkdirSync(dirname(file), { recursive: true });
      // oldest first, the order of the map
      writeFileSync(tmp, `${JSON.stringify({ version: 1, errors: [...this.byDomain.values()] })}\n`, { mode: 0o640 });
      renameSync(tmp, file);
    } catch (err) {
      logger.warn({ event: 'delivery-errors-file', file, err: String(err) }, `cannot write the last delivery errors to ${file}; status shows them until a restart`);
    }
  }

  private load(file: string, logger: Logger): void {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') logger.warn({ event: 'delivery-errors-file', file, err: String(err) }, `cannot read the last delivery errors from ${file}; starting with none`);
      return;
    }
    try {
      const parsed = JSON.parse(text) as { version?: unknown; errors?: unknown };
      if (parsed.version !== 1 || !Array.isArray(parsed.errors)) throw new Error('not a version 1 list of errors');
      for (const entry of parsed.errors.slice(-MAX_DOMAINS)) {
        if (!isDomainError(entry)) throw new Error(`unexpected entry ${JSON.stringify(entry).slice(0, 200)}`);
        this.byDomain.set(entry.domain, entry);
      }
    } catch (err) {
      this.byDomain.clear();
      logger.warn({ event: 'delivery-errors-file', file, err: String(err) }, `ignoring the unreadable list of last delivery errors in ${file}; starting with none`);
    }
  }
}

function isDomainError(value: unknown): value is DomainError {
  if (typeof value !== 'object' || value === null) return false;
  const e = value as Record<string, unknown>;
  return (
    typeof e.domain === 'string' &&
    typeof e.at === 'string' &&
    (e.outcome === 'deferred' || e.outcome === 'failed') &&
    typeof e.reply === 'string' &&
    (e.remoteHost === undefined || typeof e.remoteHost === 'string') &&
    typeof e.queueId === 'string' &&
    typeof e.count === 'number'
  );
}
