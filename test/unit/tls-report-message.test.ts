import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { MAX_REPORT_ADDRESSES, parseTlsRptRecord, tlsReportEmail } from '../../server/delivery/tls-report-message';
import type { TlsReport } from '../../server/delivery/tls-report';

describe('parseTlsRptRecord', () => {
  test('reads mailto: and https: destinations from the one v=TLSRPTv1 record, whatever else is published', () => {
    const record = parseTlsRptRecord([['v=spf1 -all'], ['v=TLSRPTv1; rua=mailto:a@x.test,', 'https://r.x.test/v1, mailto:b%2Bc@x.test?subject=tls']]);
    assert.deepEqual(record, { mailto: ['a@x.test', 'b+c@x.test'], https: ['https://r.x.test/v1'] });
  });

  test('has no record with none or several v=TLSRPTv1 records, or without rua', () => {
    assert.equal(parseTlsRptRecord([]), undefined);
    assert.equal(parseTlsRptRecord([['v=TLSRPTv1; rua=mailto:a@x.test'], ['v=TLSRPTv1; rua=mailto:b@x.test']]), undefined);
    assert.equal(parseTlsRptRecord([['v=TLSRPTv1;']]), undefined);
    assert.equal(parseTlsRptRecord([['v=TLSRPTv2; rua=mailto:a@x.test']]), undefined);
  });

  test('leaves out addresses that could not be put in an envelope, and repeats', () => {
    const record = parseTlsRptRecord([['v=TLSRPTv1; rua=mailto:a%0D%0Ab@x.test,mailto:<c@x.test>,mailto:no-domain,mailto:%E0%A4%A,mailto:d@x.test,mailto:d@x.test']]);
    assert.deepEqual(record?.mailto, ['d@x.test']);
  });

  test('leaves out https: URIs that do not parse, and repeats', () => {
    const record = parseTlsRptRecord([['v=TLSRPTv1; rua=https://[bad/,https://r.x.test:8443/v1?k=1,https://r.x.test:8443/v1?k=1,http://plain.x.test/']]);
    assert.deepEqual(record?.https, ['https://r.x.test:8443/v1?k=1']);
  });

  test('caps a report at a handful of addresses', () => {
    assert.equal(MAX_REPORT_ADDRESSES, 5);
  });
});

describe('tlsReportEmail', () => {
  const report: TlsReport = {
    'organization-name': 'relay.test',
    'date-range': { 'start-datetime': '2026-11-28T00:00:00Z', 'end-datetime': '2026-11-28T23:59:59Z' },
    'contact-info': 'postmaster@relay.test',
    'report-id': '2026-11-28T00:00:00Z_dest.test@relay.test',
    policies: [],
  };

  test('is a multipart/report of type tlsrpt with the RFC 8460 fields, CRLF lines under 78 bytes and the gzipped report', () => {
    const raw = tlsReportEmail({ report, domain: 'dest.test', submitter: 'relay.test', from: 'tlsrpt@relay.test', to: ['a@x.test', 'b@x.test'], now: new Date('2026-11-29T01:00:00Z') }).toString('latin1');
    assert.doesNotMatch(raw, /(?<!\r)\n/, 'CRLF only');
    for (const line of raw.split('\r\n')) assert.ok(line.length <= 78, line);
    assert.match(raw, /^From: TLS reporting <tlsrpt@relay\.test>\r\nTo: <a@x\.test>, <b@x\.test>\r\n/);
    assert.match(raw, /\r\nDate: Sun, 29 Nov 2026 01:00:00 \+0000\r\n/);
    assert.match(raw, /\r\nTLS-Report-Domain: dest\.test\r\nTLS-Report-Submitter: relay\.test\r\n/);
    const boundary = /boundary="([^"]+)"/.exec(raw)![1]!;
    const attachment = raw.split(`--${boundary}`)[2]!;
    assert.match(attachment, /filename="relay\.test!dest\.test!1795824000!1795910399\.json\.gz"/);
    const body = attachment.slice(attachment.indexOf('\r\n\r\n') + 4);
    assert.deepEqual(JSON.parse(gunzipSync(Buffer.from(body.replace(/\s/g, ''), 'base64')).toString('utf8')), report);
    assert.ok(raw.endsWith(`--${boundary}--\r\n`));
  });
});
