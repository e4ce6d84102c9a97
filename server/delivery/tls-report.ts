/**
 * Turns a day's TLS report record (see tls-report-store.ts) into the JSON report
 * of RFC 8460 section 4, ready to send to the rua of the domain's `_smtp._tls`
 * record (sending is not done here).
 *
 * Contract: `tlsReportForDay` answers undefined when nothing was recorded for
 * that domain and day, and throws for an unreadable record or a bad day/domain.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { RelayConfig } from '../config/schema';
import type { TlsDayRecord, TlsPolicyRecord } from './tls-report-store';

export interface TlsReportMeta {
  /** the reporting organization, e.g. the relay's host name */
  organizationName: string;
  /** a contact for the report's recipient, e.g. postmaster@<hostname> */
  contactInfo: string;
}

export interface TlsReport {
  'organization-name': string;
  'date-range': { 'start-datetime': string; 'end-datetime': string };
  'contact-info': string;
  'report-id': string;
  policies: TlsPolicyRecord[];
}

const DAY = /^\d{4}-\d{2}-\d{2}$/;
const DOMAIN = /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/;

export function buildTlsReport(record: TlsDayRecord, meta: TlsReportMeta): TlsReport {
  const start = record['date-range']['start-datetime'];
  return {
    'organization-name': meta.organizationName,
    'date-range': { ...record['date-range'] },
    'contact-info': meta.contactInfo,
    'report-id': `${start}_${record['policy-domain']}@${meta.organizationName}`,
    policies: record.policies,
  };
}

export async function tlsReportForDay(dir: string, day: string, domain: string, meta: TlsReportMeta): Promise<TlsReport | undefined> {
  if (!DAY.test(day) || Number.isNaN(Date.parse(`${day}T00:00:00Z`))) throw new Error(`"${day}" is not a day (YYYY-MM-DD)`);
  const name = domain.toLowerCase().replace(/\.$/, '');
  if (!DOMAIN.test(name)) throw new Error(`"${domain}" is not a domain name`);
  let text: string;
  try {
    text = await readFile(join(dir, day, `${name}.json`), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const record = JSON.parse(text) as TlsDayRecord;
  if (!Array.isArray(record.policies) || record['policy-domain'] !== name) throw new Error(`${join(dir, day, `${name}.json`)} is not a TLS report record of ${name}`);
  return buildTlsReport(record, meta);
}

/** The UTC day before `now`, as YYYY-MM-DD: the day a daily report covers. */
export function previousUtcDay(now = new Date()): string {
  return new Date(now.getTime() - 24 * 3600_000).toISOString().slice(0, 10);
}

/** The From address of the TLS reports the relay sends: delivery.tlsReports.from, else noreply-tlsrpt@<hostname>. */
export function tlsReportFrom(config: { hostname: string; delivery: { tlsReports: { from?: string } } }): string {
  return config.delivery.tlsReports.from ?? `noreply-tlsrpt@${config.hostname}`;
}

/** Where the relay keeps its TLS report records: delivery.tlsReports.dir, else <paths.state>/tls-reports. */
export function tlsReportDir(config: RelayConfig): string {
  return config.delivery.tlsReports.dir ?? join(config.paths.state, 'tls-reports');
}
