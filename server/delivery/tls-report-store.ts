/**
 * Records of outbound TLS sessions for SMTP TLS Reporting (RFC 8460), kept for
 * the customer on disk: one file per policy domain per UTC day,
 * `<dir>/<YYYY-MM-DD>/<domain>.json`, already in the shape of the report's
 * `policies` array (policy, summary counts, failure details).
 *
 * Contract: `recordSuccess`/`recordFailure` are synchronous and never throw;
 * counts are kept in memory and merged into the day's file at most
 * `flushDelayMs` later (and on `close`), by writing a new file and renaming it
 * over the old one, so a reader never sees a half-written file. A crash loses at
 * most the counts of that delay. An unreadable day file is moved aside (kept,
 * never deleted) and counting starts again.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../log/logger';
import type { TlsResultType } from './tls-report-result';

export interface TlsPolicyDescription {
  'policy-type': 'sts' | 'no-policy-found';
  'policy-string': string[];
  'policy-domain': string;
  'mx-host': string[];
}

export interface TlsFailureDetail {
  'result-type': TlsResultType;
  'sending-mta-ip'?: string;
  'receiving-mx-hostname'?: string;
  'receiving-ip'?: string;
  'failed-session-count': number;
  /** the TLS error code or a short reason */
  'failure-reason-code'?: string;
}

export interface TlsPolicyRecord {
  policy: TlsPolicyDescription;
  summary: { 'total-successful-session-count': number; 'total-failure-session-count': number };
  'failure-details': TlsFailureDetail[];
}

/** The content of one day file. */
export interface TlsDayRecord {
  'policy-domain': string;
  'date-range': { 'start-datetime': string; 'end-datetime': string };
  policies: TlsPolicyRecord[];
}

export type TlsFailure = Omit<TlsFailureDetail, 'failed-session-count'>;

const DEFAULT_FLUSH_DELAY_MS = 1000;
const SAFE_DOMAIN = /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/;

export class TlsReportStore {
  /** day file path -> counts not yet written */
  private pending = new Map<string, TlsDayRecord>();
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    readonly dir: string,
    private readonly logger: Logger,
    private readonly flushDelayMs = DEFAULT_FLUSH_DELAY_MS,
  ) {}

  recordSuccess(policy: TlsPolicyDescription, at = new Date()): void {
    const record = this.policyRecord(policy, at);
    if (record) record.summary['total-successful-session-count']++;
  }

  recordFailure(policy: TlsPolicyDescription, failure: TlsFailure, at = new Date()): void {
    const record = this.policyRecord(policy, at);
    if (!record) return;
    record.summary['total-failure-session-count']++;
    addFailure(record['failure-details'], { ...failure, 'failed-session-count': 1 });
  }

  /** Writes what was recorded so far. */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.pending;
    this.pending = new Map();
    this.writing = this.writing.then(async () => {
      for (const [file, delta] of batch) await this.merge(file, delta);
    });
    return this.writing;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.flush();
  }

  /** The file of a policy domain's day, e.g. <dir>/2026-11-29/example.org.json */
  fileOf(day: string, domain: string): string {
    return join(this.dir, day, `${domain}.json`);
  }

  private policyRecord(policy: TlsPolicyDescription, at: Date): TlsPolicyRecord | undefined {
    const domain = policy['policy-domain'];
    if (!SAFE_DOMAIN.test(domain)) return undefined;
    const day = at.toISOString().slice(0, 10);
    const file = this.fileOf(day, domain);
    let dayRecord = this.pending.get(file);
    if (!dayRecord) this.pending.set(file, (dayRecord = emptyDay(domain, day)));
    this.schedule();
    return policyIn(dayRecord, policy);
  }

  private schedule(): void {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => void this.flush(), this.flushDelayMs);
    this.timer.unref();
  }

  private async merge(file: string, delta: TlsDayRecord): Promise<void> {
    try {
      const current = (await this.read(file)) ?? emptyDay(delta['policy-domain'], delta['date-range']['start-datetime'].slice(0, 10));
      for (const record of delta.policies) {
        const target = policyIn(current, record.policy);
        target.summary['total-successful-session-count'] += record.summary['total-successful-session-count'];
        target.summary['total-failure-session-count'] += record.summary['total-failure-session-count'];
        for (const detail of record['failure-details']) addFailure(target['failure-details'], detail);
      }
      await mkdir(join(file, '..'), { recursive: true });
      const temporary = `${file}.${process.pid}.tmp`;
      await writeFile(temporary, `${JSON.stringify(current, null, 2)}\n`);
      await rename(temporary, file);
    } catch (err) {
      this.logger.error({ event: 'tls-report-error', file, err: String(err) }, 'cannot write the TLS report record');
    }
  }

  private async read(file: string): Promise<TlsDayRecord | undefined> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    try {
      const record = JSON.parse(text) as TlsDayRecord;
      if (!Array.isArray(record.policies)) throw new Error('no policies array');
      return record;
    } catch (err) {
      const aside = `${file}.unreadable-${Date.now()}`;
      await rename(file, aside);
      this.logger.warn({ event: 'tls-report-error', file, movedTo: aside, err: String(err) }, 'unreadable TLS report record moved aside; counting starts again');
      return undefined;
    }
  }
}

function emptyDay(domain: string, day: string): TlsDayRecord {
  return { 'policy-domain': domain, 'date-range': { 'start-datetime': `${day}T00:00:00Z`, 'end-datetime': `${day}T23:59:59Z` }, policies: [] };
}

function policyIn(day: TlsDayRecord, policy: TlsPolicyDescription): TlsPolicyRecord {
  const key = policyKey(policy);
  let record = day.policies.find((candidate) => policyKey(candidate.policy) === key);
  if (!record) {
    record = { policy, summary: { 'total-successful-session-count': 0, 'total-failure-session-count': 0 }, 'failure-details': [] };
    day.policies.push(record);
  }
  return record;
}

function policyKey(policy: TlsPolicyDescription): string {
  return JSON.stringify([policy['policy-type'], policy['policy-string'], policy['mx-host']]);
}

function detailKey(detail: TlsFailure): string {
  return JSON.stringify([detail['result-type'], detail['sending-mta-ip'], detail['receiving-mx-hostname'], detail['receiving-ip'], detail['failure-reason-code']]);
}

function addFailure(details: TlsFailureDetail[], detail: TlsFailureDetail): void {
  const key = detailKey(detail);
  const existing = details.find((candidate) => detailKey(candidate) === key);
  if (existing) existing['failed-session-count'] += detail['failed-session-count'];
  else details.push({ ...detail });
}
