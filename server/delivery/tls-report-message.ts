/**
 * The parts of sending an SMTP TLS report (RFC 8460) that need no I/O: reading a
 * domain's `_smtp._tls` TXT record, and writing the report as an email (5.3):
 * multipart/report; report-type="tlsrpt" with a short text part and the JSON
 * report gzipped (application/tlsrpt+gzip, base64), with the TLS-Report-Domain
 * and TLS-Report-Submitter fields and the Subject and file name RFC 8460 asks for.
 *
 * mailto: destinations get the email; https: ones are listed apart, for a POST
 * of the report (tls-report-post.ts).
 */
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { rfc5322Date } from '../stages/message-header';
import { foldedHeader } from './dsn';
import type { TlsReport } from './tls-report';

export interface TlsRptRecord {
  /** mailto: addresses, decoded, in the record's order */
  mailto: string[];
  /** https: URIs, in the record's order */
  https: string[];
}

/** At most this many mail addresses (and as many https: URIs) get one report: a record is not a mailing list. */
export const MAX_REPORT_ADDRESSES = 5;

const ADDRESS = /^[^\s@<>()\\,;:"[\]\x00-\x1f\x7f]+@[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/i;

/**
 * The TLSRPT record among a name's TXT records (each the strings of one record),
 * per RFC 8460 3: records not starting with "v=TLSRPTv1;" are ignored, and unless
 * exactly one is left the domain has none. Unusable rua URIs are left out.
 */
export function parseTlsRptRecord(txt: readonly (readonly string[])[]): TlsRptRecord | undefined {
  const records = txt.map((strings) => strings.join('')).filter((r) => /^v=TLSRPTv1\s*;/.test(r));
  if (records.length !== 1) return undefined;
  const fields = new Map<string, string>();
  for (const part of records[0]!.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) fields.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim());
  }
  const rua = fields.get('rua');
  if (rua === undefined) return undefined;
  const record: TlsRptRecord = { mailto: [], https: [] };
  for (const uri of rua.split(',').map((u) => u.trim())) {
    if (/^https:\/\//i.test(uri)) {
      if (URL.canParse(uri) && !record.https.includes(uri)) record.https.push(uri);
    }
    else if (/^mailto:/i.test(uri)) {
      let address: string;
      try {
        address = decodeURIComponent(uri.slice('mailto:'.length).split('?')[0]!);
      } catch {
        continue;
      }
      if (ADDRESS.test(address) && !record.mailto.includes(address)) record.mailto.push(address);
    }
  }
  return record;
}

export interface TlsReportEmailInput {
  report: TlsReport;
  /** the policy domain the report is about */
  domain: string;
  /** the reporting host name (TLS-Report-Submitter and the file name) */
  submitter: string;
  from: string;
  to: string[];
  now?: Date;
}

const CRLF = '\r\n';

/** The report as RFC 8460 sends it: gzipped JSON (application/tlsrpt+gzip). */
export function gzippedReport(report: TlsReport): Buffer {
  return gzipSync(Buffer.from(JSON.stringify(report)));
}

/** The email (CRLF line ends, ready to queue) that carries `report`. */
export function tlsReportEmail(input: TlsReportEmailInput): Buffer {
  const { report, domain, submitter } = input;
  const now = input.now ?? new Date();
  const gz = gzippedReport(report);
  const begin = Math.floor(Date.parse(report['date-range']['start-datetime']) / 1000);
  const end = Math.floor(Date.parse(report['date-range']['end-datetime']) / 1000);
  const filename = `${submitter}!${domain}!${begin}!${end}.json.gz`;
  const boundary = `=_tlsrpt_${randomBytes(12).toString('hex')}`;
  const base64 = gz.toString('base64').replace(/.{1,76}/g, (line) => line + CRLF);
  const text = [
    `This is an aggregate TLS report (RFC 8460) from ${submitter} about`,
    `mail sent to ${domain} from ${report['date-range']['start-datetime']} to ${report['date-range']['end-datetime']}.`,
    `It is attached as ${filename}.`,
  ].join(CRLF);
  const head = [
    `From: TLS reporting <${input.from}>`,
    foldedHeader('To', input.to.map((a) => `<${a}>`).join(', ')),
    foldedHeader('Subject', `Report Domain: ${domain} Submitter: ${submitter} Report-ID: <${report['report-id']}>`),
    `Date: ${rfc5322Date(now)}`,
    `Message-ID: <${randomBytes(8).toString('hex')}.tlsrpt@${submitter}>`,
    `TLS-Report-Domain: ${domain}`,
    `TLS-Report-Submitter: ${submitter}`,
    'Auto-Submitted: auto-generated',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type="tlsrpt";${CRLF} boundary="${boundary}"`,
  ].join(CRLF);
  return Buffer.from(
    [
      head,
      '',
      'This is a MIME-encapsulated message.',
      '',
      `--${boundary}`,
      'Content-Type: text/plain; charset=us-ascii',
      'Content-Transfer-Encoding: 7bit',
      '',
      text,
      '',
      `--${boundary}`,
      'Content-Type: application/tlsrpt+gzip',
      'Content-Transfer-Encoding: base64',
      `Content-Disposition: attachment;${CRLF} filename="${filename}"`,
      '',
      base64 + `--${boundary}--`,
      '',
    ].join(CRLF),
    'latin1',
  );
}
