/**
 * Sends each finished UTC day's TLS reports (RFC 8460) to the destinations in
 * the `rua` of the policy domain's `_smtp._tls` TXT record: an email through the
 * relay's own queue to the mailto: addresses, and an HTTPS POST to each https:
 * URI (tls-report-post.ts).
 *
 * Contract:
 * - `sendDue(now)` looks at the day records (tls-report-store.ts) of the last
 *   MAX_AGE_DAYS days before `now`'s UTC day. A record without a `.sent` file
 *   beside it is reported: its email is queued durably (null sender, so a report
 *   that cannot be delivered never bounces), it is posted, and only then is the
 *   `.sent` file written, so a crash in between sends a report twice (receivers
 *   tell duplicates apart by Report-ID), never not at all.
 * - An https: destination that did not take the report (no answer, a status
 *   other than 2xx) is listed as pending in the `.sent` file and gets the same
 *   report again in each later round, until it takes it or the day is older
 *   than MAX_AGE_DAYS. The email is never queued twice for that.
 * - A domain without a usable record (none, several, or no usable address) gets
 *   a `.sent` file that says why, and no report. A DNS failure leaves no file:
 *   the next round tries again.
 * - The relay signs the report with the DKIM key of the From domain (RFC 8460 5.3
 *   requires a signature); the caller checks that there is one.
 * - Rounds run `firstDelayMs` after start and then every hour; they never throw.
 *   `stop()` aborts the POSTs in flight (their destinations stay pending) and
 *   waits for the round to end.
 */
import { readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../log/logger';
import { ownMessageEnvelope, type QueueEnvelope } from '../queue/envelope';
import type { QueueEntry, Spool } from '../queue/spool';
import { buildTlsReport, type TlsReport, type TlsReportMeta } from './tls-report';
import { MAX_REPORT_ADDRESSES, gzippedReport, parseTlsRptRecord, tlsReportEmail } from './tls-report-message';
import type { ReportPoster } from './tls-report-post';
import type { TlsDayRecord } from './tls-report-store';

/** Days older than this are not reported any more. */
export const MAX_AGE_DAYS = 7;
const ROUND_INTERVAL_MS = 3600_000;
const DAY = /^\d{4}-\d{2}-\d{2}$/;
const RECORD_FILE = /^([a-z0-9]([a-z0-9.-]*[a-z0-9])?)\.json$/;

export interface TlsReportSenderOptions {
  /** where the day records are (delivery.tlsReports.dir) */
  dir: string;
  spool: Spool;
  /** hands a queued report to the scheduler */
  enqueue: (entry: QueueEntry) => void;
  lookupTxt: (name: string) => Promise<string[][]>;
  /** the relay's host name: TLS-Report-Submitter and organization-name */
  hostname: string;
  /** the reports' From address (its domain must be DKIM-signed) */
  from: string;
  logger: Logger;
  firstDelayMs?: number;
  /** submits a report to an https: destination; without it those are not used */
  post?: ReportPoster;
}

export interface SendOutcome {
  day: string;
  domain: string;
  /** the report's queue id, when one was queued */
  queueId?: string;
  /** why none was sent */
  skipped?: string;
  /** https: destinations that took the report in this round */
  posted?: string[];
  /** https: destinations that did not, tried again in the next round */
  pending?: string[];
}

/** An https: destination that has not taken the report yet, and why. */
interface PendingPost {
  uri: string;
  reason: string;
}

/** What the `.sent` file beside a day record says. */
interface SentMark {
  at?: string;
  queueId?: string;
  to?: string[];
  skipped?: string;
  posted?: string[];
  pending?: PendingPost[];
}

export class TlsReportSender {
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<SendOutcome[]> | undefined;
  /** aborted by stop(): a stopping relay does not wait for slow receivers */
  private readonly stopping = new AbortController();
  private readonly meta: TlsReportMeta;

  constructor(private readonly opts: TlsReportSenderOptions) {
    this.meta = { organizationName: opts.hostname, contactInfo: `postmaster@${opts.hostname}` };
  }

  start(): void {
    const run = (): void => {
      void this.sendDue();
      this.timer = setTimeout(run, ROUND_INTERVAL_MS);
      this.timer.unref();
    };
    this.timer = setTimeout(run, this.opts.firstDelayMs ?? 5 * 60_000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.stopping.abort();
    await this.round;
  }

  /** One round (see the module comment); concurrent calls share it. */
  sendDue(now = new Date()): Promise<SendOutcome[]> {
    this.round ??= this.sendRound(now)
      .catch((err: unknown) => {
        this.opts.logger.error({ event: 'tls-report-error', err: String(err) }, 'TLS report round failed');
        return [];
      })
      .finally(() => (this.round = undefined));
    return this.round;
  }

  private async sendRound(now: Date): Promise<SendOutcome[]> {
    const today = now.toISOString().slice(0, 10);
    const oldest = new Date(Date.parse(`${today}T00:00:00Z`) - MAX_AGE_DAYS * 86_400_000).toISOString().slice(0, 10);
    const days = (await listOrEmpty(this.opts.dir)).filter((d) => DAY.test(d) && d < today && d >= oldest).sort();
    const outcomes: SendOutcome[] = [];
    for (const day of days) {
      const names = await listOrEmpty(join(this.opts.dir, day));
      for (const name of names.sort()) {
        const domain = RECORD_FILE.exec(name)?.[1];
        if (!domain) continue;
        try {
          const outcome = names.includes(`${domain}.sent`) ? await this.postAgain(day, domain) : await this.report(day, domain);
          if (outcome) outcomes.push(outcome);
        } catch (err) {
          // e.g. an unreadable record or a full spool: the other domains go on, this one is tried next round
          this.opts.logger.error({ event: 'tls-report-error', domain, day, err: String(err) }, `could not send the TLS report for ${domain} (${day}); trying again in the next round`);
        }
      }
    }
    return outcomes;
  }

  /** Reports one domain's day; undefined when it is to be tried again later. */
  private async report(day: string, domain: string): Promise<SendOutcome | undefined> {
    const { logger } = this.opts;
    let txt: string[][];
    try {
      txt = await this.opts.lookupTxt(`_smtp._tls.${domain}`);
    } catch (err) {
      logger.warn({ event: 'tls-report-deferred', domain, day, err: String(err) }, `TLS report for ${domain} (${day}) waits: the _smtp._tls lookup failed`);
      return undefined;
    }
    const record = parseTlsRptRecord(txt);
    const to = record?.mailto.slice(0, MAX_REPORT_ADDRESSES) ?? [];
    const uris = this.opts.post ? (record?.https.slice(0, MAX_REPORT_ADDRESSES) ?? []) : [];
    if (to.length === 0 && uris.length === 0) {
      const skipped = !record ? `no single v=TLSRPTv1 record at _smtp._tls.${domain}` : record.https.length > 0 ? 'only https: report addresses, which are not used' : 'no usable report address';
      await this.mark(day, domain, { skipped });
      logger.info({ event: 'tls-report-skipped', domain, day, reason: skipped }, `no TLS report for ${domain} (${day}): ${skipped}`);
      return { day, domain, skipped };
    }
    const report = await this.readReport(day, domain);
    let queueId: string | undefined;
    if (to.length > 0) {
      const message = tlsReportEmail({ report, domain, submitter: this.opts.hostname, from: this.opts.from, to });
      const envelope: QueueEnvelope = { ...ownMessageEnvelope({ to, hostname: this.opts.hostname, source: 'tls-report' }), tlsReport: true };
      const entry = await this.opts.spool.enqueue(envelope, message);
      this.opts.enqueue(entry);
      queueId = entry.id;
      logger.info({ event: 'tls-report-queued', domain, day, queueId, to }, `TLS report for ${domain} (${day}) queued as ${queueId} to ${to.join(', ')}`);
    }
    const posts = await this.postAll(day, domain, report, uris);
    await this.mark(day, domain, { ...(queueId ? { queueId, to } : {}), ...posts });
    return { day, domain, ...(queueId ? { queueId } : {}), ...outcomeOf(posts) };
  }

  /** A later round for a reported day: the https: destinations still pending get the report again. */
  private async postAgain(day: string, domain: string): Promise<SendOutcome | undefined> {
    const file = join(this.opts.dir, day, `${domain}.sent`);
    const mark = JSON.parse(await readFile(file, 'utf8')) as SentMark;
    const pending = Array.isArray(mark.pending) ? mark.pending.map((p) => p.uri).filter((uri) => typeof uri === 'string') : [];
    if (pending.length === 0 || !this.opts.post) return undefined;
    const posts = await this.postAll(day, domain, await this.readReport(day, domain), pending);
    await this.mark(day, domain, { ...mark, posted: [...(mark.posted ?? []), ...(posts.posted ?? [])], pending: posts.pending ?? [] });
    return { day, domain, ...outcomeOf(posts) };
  }

  private async readReport(day: string, domain: string): Promise<TlsReport> {
    const text = await readFile(join(this.opts.dir, day, `${domain}.json`), 'utf8');
    return buildTlsReport(JSON.parse(text) as TlsDayRecord, this.meta);
  }

  /** POSTs the report to each URI in turn; never throws. */
  private async postAll(day: string, domain: string, report: TlsReport, uris: string[]): Promise<Pick<SentMark, 'posted' | 'pending'>> {
    if (uris.length === 0 || !this.opts.post) return {};
    const body = gzippedReport(report);
    const posted: string[] = [];
    const pending: PendingPost[] = [];
    for (const uri of uris) {
      try {
        if (this.stopping.signal.aborted) throw new Error('the relay is stopping');
        await this.opts.post(uri, body, this.stopping.signal);
        posted.push(uri);
        this.opts.logger.info({ event: 'tls-report-posted', domain, day, uri }, `TLS report for ${domain} (${day}) posted to ${uri}`);
      } catch (err) {
        const reason = err instanceof Error ? err.message : String(err);
        pending.push({ uri, reason });
        this.opts.logger.warn({ event: 'tls-report-post-failed', domain, day, uri, reason }, `TLS report for ${domain} (${day}) not taken by ${uri}, trying again in the next round: ${reason}`);
      }
    }
    return { posted, pending };
  }

  private async mark(day: string, domain: string, what: SentMark): Promise<void> {
    const file = join(this.opts.dir, day, `${domain}.sent`);
    const temporary = `${file}.${process.pid}.tmp`;
    await writeFile(temporary, `${JSON.stringify({ ...what, at: new Date().toISOString() })}\n`);
    await rename(temporary, file);
  }
}

function outcomeOf(posts: Pick<SentMark, 'posted' | 'pending'>): Pick<SendOutcome, 'posted' | 'pending'> {
  return posts.posted === undefined ? {} : { posted: posts.posted, pending: (posts.pending ?? []).map((p) => p.uri) };
}

async function listOrEmpty(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
