/**
 * Sending the daily TLS reports (RFC 8460) end to end on loopback: sessions are
 * recorded for yesterday, the relay reads the policy domain's _smtp._tls record
 * from a real DNS server on 127.0.0.1, queues the report, DKIM-signs it and
 * delivers it to a real smtp-server acting as the MX of the rua mailto: address,
 * where the test unpacks the gzipped JSON and verifies the signature with
 * mailauth; and it POSTs the report to the rua https: URI, a real HTTPS server
 * with a certificate of a test CA.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { dkimVerify } from 'mailauth';
import pino from 'pino';
import { loadDkimKeys, type DkimSigningKey } from '../../server/dkim/keys';
import { TlsReportStore } from '../../server/delivery/tls-report-store';
import { loopbackResolver, writeTestDkimKeys, type TestKeyFiles } from '../helpers/dkim-keys';
import { startDnsServer, type DnsServerHandle } from '../helpers/dns-server';
import { startDestination } from '../helpers/destination-server';
import { createTestCa, type TestCa } from '../helpers/mta-sts-peers';
import { startTestRelay, type TestRelay } from '../helpers/test-relay';

/** An HTTPS server taking TLS reports: it records each request and answers `status`. */
interface ReportReceiver {
  port: number;
  requests: Array<{ method: string; url: string; headers: Record<string, unknown>; body: Buffer }>;
  status: number;
  /** when set, requests are taken in and never answered */
  silent: boolean;
  close(): Promise<void>;
}

async function startReportReceiver(credentials: { key: string; cert: string }): Promise<ReportReceiver> {
  const server = https.createServer({ ...credentials, minVersion: 'TLSv1.2' }, (request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      receiver.requests.push({ method: request.method ?? '', url: request.url ?? '', headers: request.headers, body: Buffer.concat(chunks) });
      if (receiver.silent) return;
      response.writeHead(receiver.status, { 'content-type': 'text/plain' }).end(receiver.status < 300 ? '' : 'try later');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const receiver: ReportReceiver = {
    port: (server.address() as AddressInfo).port,
    requests: [],
    status: 201,
    silent: false,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return receiver;
}

let ca: TestCa;
let receiver: ReportReceiver;
let dns: DnsServerHandle;
let keyDir: string;
let keyFiles: TestKeyFiles;
let keys: DkimSigningKey[];

const POLICY = { 'policy-type': 'sts' as const, 'policy-string': ['version: STSv1', 'mode: enforce', 'mx: mx.dest.test', 'max_age: 86400'], 'policy-domain': 'dest.test', 'mx-host': ['mx.dest.test'] };

before(async () => {
  keyDir = await mkdtemp(join(tmpdir(), 'ownrelay-tlsrpt-'));
  keyFiles = await writeTestDkimKeys(keyDir);
  keys = await loadDkimKeys([{ domain: 'relay.test', selector: 'rsa1', privateKeyFile: keyFiles.rsaFile }]);
  ca = await createTestCa();
  receiver = await startReportReceiver(await ca.issue(['reports.test']));
  dns = await startDnsServer({
    '_smtp._tls.dest.test': { TXT: [`v=TLSRPTv1; rua=https://reports.test:${receiver.port}/v1?k=1,mailto:tls-reports@reports.test`] },
    '_smtp._tls.web.test': { TXT: [`v=TLSRPTv1;rua=https://reports.test:${receiver.port}/web`] },
    '_smtp._tls.wrongname.test': { TXT: [`v=TLSRPTv1;rua=https://wrongname.test:${receiver.port}/`] },
    '_smtp._tls.inside.test': { TXT: ['v=TLSRPTv1;rua=https://inside.test/'] },
    'wrongname.test': { A: ['127.0.0.1'] },
    'inside.test': { A: ['10.1.2.3'] },
    '_smtp._tls.quiet.test': { TXT: ['v=spf1 -all'] },
    '_smtp._tls.broken.test': { TXT: ['v=TLSRPTv1; rua=mailto:tls-reports@reports.test'] },
    'mx.reports.test': { A: ['127.0.0.1'] },
    'reports.test': { MX: [{ exchange: 'mx.reports.test', priority: 10 }], A: ['127.0.0.1'] },
    'rsa1._domainkey.relay.test': { TXT: [keys[0]!.dnsRecord] },
  });
});

after(async () => {
  await dns.close();
  await receiver.close();
  await rm(keyDir, { recursive: true, force: true });
});

function yesterday(): Date {
  return new Date(Date.now() - 86_400_000);
}

/** Records sessions for yesterday the way delivery does. */
async function recordYesterday(dir: string, domain: string): Promise<string> {
  const store = new TlsReportStore(dir, pino({ level: 'silent' }));
  const at = yesterday();
  const policy = { ...POLICY, 'policy-domain': domain };
  store.recordSuccess(policy, at);
  store.recordSuccess(policy, at);
  store.recordFailure(policy, { 'result-type': 'certificate-expired', 'receiving-mx-hostname': `mx.${domain}`, 'failure-reason-code': 'CERT_HAS_EXPIRED' }, at);
  await store.close();
  return at.toISOString().slice(0, 10);
}

async function reportingRelay(mxPort: number, tlsReports: Record<string, unknown> = {}): Promise<TestRelay> {
  return startTestRelay(
    (dir) => ({
      dns: { servers: dns.servers },
      dkim: { keys: [{ domain: 'relay.test', selector: 'rsa1', privateKeyFile: keyFiles.rsaFile }] },
      delivery: { allowedDestinations: ['127.0.0.0/8'], tlsReports: { enabled: true, dir: join(dir, 'tls-reports'), send: true, from: 'tlsrpt@relay.test', ...tlsReports } },
    }),
    { mxPort, outboundTls: { extraCaPem: [ca.cert] } },
  );
}

/** The parts of a multipart message, by Content-Type (the first of each type). */
function partsOf(raw: string): Map<string, { headers: string; body: string }> {
  const boundary = /boundary="([^"]+)"/.exec(raw)![1]!;
  const parts = new Map<string, { headers: string; body: string }>();
  for (const section of raw.split(`--${boundary}`).slice(1, -1)) {
    const split = section.indexOf('\r\n\r\n');
    const headers = section.slice(0, split).replace(/\r\n\s+/g, ' ');
    const type = /Content-Type: ([^;\r\n]+)/i.exec(headers)![1]!;
    if (!parts.has(type)) parts.set(type, { headers, body: section.slice(split + 4) });
  }
  return parts;
}

test("yesterday's report goes to the rua mailto: address, signed, gzipped JSON with the counts, and is POSTed to the https: one; once", async () => {
  const destination = await startDestination();
  const relay = await reportingRelay(destination.port);
  receiver.requests.length = 0;
  receiver.status = 201;
  try {
    const dir = join(relay.dir, 'tls-reports');
    const day = await recordYesterday(dir, 'dest.test');
    const outcomes = await relay.relay.tlsReportSender!.sendDue();
    const uri = `https://reports.test:${receiver.port}/v1?k=1`;
    assert.equal(outcomes.length, 1);
    assert.equal(outcomes[0]!.domain, 'dest.test');
    assert.deepEqual(outcomes[0]!.posted, [uri]);
    assert.deepEqual(outcomes[0]!.pending, []);
    const [message] = await destination.waitForMessages(1);
    assert.equal(message!.from, '', 'the null sender: a report that cannot be delivered never bounces');
    assert.deepEqual(message!.to, ['tls-reports@reports.test']);
    const raw = message!.raw.toString('latin1');
    assert.match(raw, /^TLS-Report-Domain: dest\.test$/m);
    assert.match(raw, /^TLS-Report-Submitter: relay\.test$/m);
    assert.match(raw.replace(/\r\n /g, ' '), new RegExp(`^Subject: Report Domain: dest\\.test Submitter: relay\\.test Report-ID: <${day}T00:00:00Z_dest\\.test@relay\\.test>\r$`, 'm'));
    assert.match(raw, /^Content-Type: multipart\/report; report-type="tlsrpt";/m);

    const verified = await dkimVerify(message!.raw, { resolver: loopbackResolver(dns.servers) as never });
    assert.deepEqual(verified.results.map((r) => [r.signingDomain, r.status.result]), [['relay.test', 'pass']], 'RFC 8460 5.3: signed by the reporting domain');

    const attachment = partsOf(raw).get('application/tlsrpt+gzip')!;
    const begin = Date.parse(`${day}T00:00:00Z`) / 1000;
    assert.match(attachment.headers, new RegExp(`filename="relay\\.test!dest\\.test!${begin}!${begin + 86_399}\\.json\\.gz"`));
    assert.match(attachment.headers, /Content-Transfer-Encoding: base64/);
    const report = JSON.parse(gunzipSync(Buffer.from(attachment.body.replace(/\s/g, ''), 'base64')).toString('utf8'));
    assert.equal(report['organization-name'], 'relay.test');
    assert.deepEqual(report['date-range'], { 'start-datetime': `${day}T00:00:00Z`, 'end-datetime': `${day}T23:59:59Z` });
    assert.equal(report['report-id'], `${day}T00:00:00Z_dest.test@relay.test`);
    assert.deepEqual(report.policies[0].policy, POLICY);
    assert.deepEqual(report.policies[0].summary, { 'total-successful-session-count': 2, 'total-failure-session-count': 1 });
    assert.equal(report.policies[0]['failure-details'][0]['result-type'], 'certificate-expired');

    // RFC 8460 5.3.2: the same report, gzipped, in one POST
    assert.equal(receiver.requests.length, 1);
    const request = receiver.requests[0]!;
    assert.equal(request.method, 'POST');
    assert.equal(request.url, '/v1?k=1');
    assert.equal(request.headers['content-type'], 'application/tlsrpt+gzip');
    assert.equal(request.headers['user-agent'], 'ownrelay (relay.test)');
    assert.deepEqual(JSON.parse(gunzipSync(request.body).toString('utf8')), report);

    const marker = JSON.parse(await readFile(join(dir, day, 'dest.test.sent'), 'utf8'));
    assert.equal(marker.queueId, outcomes[0]!.queueId);
    assert.deepEqual(marker.posted, [uri]);
    assert.deepEqual(await relay.relay.tlsReportSender!.sendDue(), [], 'a day is reported once');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(destination.messages.length, 1);
    assert.equal(receiver.requests.length, 1);
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('an https: destination that does not take the report gets it again in the next round; the email is not queued twice', async () => {
  const destination = await startDestination();
  const relay = await reportingRelay(destination.port);
  receiver.requests.length = 0;
  receiver.status = 503;
  try {
    const dir = join(relay.dir, 'tls-reports');
    const day = await recordYesterday(dir, 'dest.test');
    const uri = `https://reports.test:${receiver.port}/v1?k=1`;
    const first = await relay.relay.tlsReportSender!.sendDue();
    assert.deepEqual(first.map((o) => [o.posted, o.pending]), [[[], [uri]]]);
    assert.ok(first[0]!.queueId);
    const failure = await relay.waitForLog((l) => l.event === 'tls-report-post-failed');
    assert.match(String(failure.reason), /HTTP status 503: try later/);
    const marker = JSON.parse(await readFile(join(dir, day, 'dest.test.sent'), 'utf8'));
    assert.deepEqual(marker.pending.map((p: { uri: string }) => p.uri), [uri]);
    await destination.waitForMessages(1);

    // still refusing: pending again
    assert.deepEqual((await relay.relay.tlsReportSender!.sendDue()).map((o) => o.pending), [[uri]]);
    receiver.status = 200;
    const third = await relay.relay.tlsReportSender!.sendDue();
    assert.deepEqual(third, [{ day, domain: 'dest.test', posted: [uri], pending: [] }]);
    assert.equal(receiver.requests.length, 3);
    // the three POSTs carried one report (receivers tell duplicates apart by its Report-ID)
    assert.equal(new Set(receiver.requests.map((r) => gunzipSync(r.body).toString('utf8'))).size, 1);
    assert.deepEqual(await relay.relay.tlsReportSender!.sendDue(), []);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(destination.messages.length, 1, 'the email was queued once');
    const done = JSON.parse(await readFile(join(dir, day, 'dest.test.sent'), 'utf8'));
    assert.deepEqual([done.queueId, done.posted, done.pending], [first[0]!.queueId, [uri], []]);
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('https: destinations alone get the report; a wrong certificate or an address delivery may not use leaves it pending', async () => {
  const destination = await startDestination();
  const relay = await reportingRelay(destination.port);
  receiver.requests.length = 0;
  receiver.status = 200;
  try {
    const dir = join(relay.dir, 'tls-reports');
    const day = await recordYesterday(dir, 'web.test');
    await recordYesterday(dir, 'wrongname.test');
    await recordYesterday(dir, 'inside.test');
    const outcomes = await relay.relay.tlsReportSender!.sendDue();
    assert.deepEqual(
      outcomes.map((o) => [o.domain, o.queueId, o.posted, o.pending]),
      [
        ['inside.test', undefined, [], ['https://inside.test/']],
        ['web.test', undefined, [`https://reports.test:${receiver.port}/web`], []],
        ['wrongname.test', undefined, [], [`https://wrongname.test:${receiver.port}/`]],
      ],
    );
    assert.deepEqual(receiver.requests.map((r) => r.url), ['/web']);
    const reasons = relay.logs.filter((l) => l.event === 'tls-report-post-failed').map((l) => String(l.reason));
    assert.match(reasons[0]!, /10\.1\.2\.3 is a private address, not allowed by delivery\.allowedDestinations/);
    assert.match(reasons[1]!, /wrongname\.test/i);
    assert.match(reasons[1]!, /altnames|certificate/i);
    assert.equal(JSON.parse(await readFile(join(dir, day, 'web.test.sent'), 'utf8')).queueId, undefined);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(destination.messages.length, 0, 'no email without a mailto: address');
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('a stopping relay does not wait for a receiver that never answers: the POST is aborted and stays pending', async () => {
  const destination = await startDestination();
  const relay = await reportingRelay(destination.port);
  receiver.requests.length = 0;
  receiver.silent = true;
  try {
    const dir = join(relay.dir, 'tls-reports');
    const day = await recordYesterday(dir, 'web.test');
    const round = relay.relay.tlsReportSender!.sendDue();
    const deadline = Date.now() + 10_000;
    while (receiver.requests.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(receiver.requests.length, 1, 'the POST reached the receiver');
    const started = Date.now();
    await relay.relay.tlsReportSender!.stop();
    assert.ok(Date.now() - started < 5000, `stop took ${Date.now() - started} ms`);
    const [outcome] = await round;
    assert.deepEqual(outcome!.pending, [`https://reports.test:${receiver.port}/web`]);
    const marker = JSON.parse(await readFile(join(dir, day, 'web.test.sent'), 'utf8'));
    assert.match(marker.pending[0].reason, /abort/i);
  } finally {
    receiver.silent = false;
    await relay.stop();
    await destination.close();
  }
});

test("a domain without a TLSRPT record gets no report; today's sessions and days older than a week wait or are left alone", async () => {
  const destination = await startDestination();
  const relay = await reportingRelay(destination.port);
  try {
    const dir = join(relay.dir, 'tls-reports');
    const day = await recordYesterday(dir, 'quiet.test');
    // today: not over yet; ten days ago: too old to report
    const store = new TlsReportStore(dir, pino({ level: 'silent' }));
    store.recordSuccess(POLICY);
    store.recordSuccess(POLICY, new Date(Date.now() - 10 * 86_400_000));
    await store.close();
    const outcomes = await relay.relay.tlsReportSender!.sendDue();
    assert.deepEqual(outcomes, [{ day, domain: 'quiet.test', skipped: 'no single v=TLSRPTv1 record at _smtp._tls.quiet.test' }]);
    assert.match(await readFile(join(dir, day, 'quiet.test.sent'), 'utf8'), /no single v=TLSRPTv1 record/);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(destination.messages.length, 0);
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('an unreadable day record is logged and skipped; the other domains are still reported', async () => {
  const destination = await startDestination();
  const relay = await reportingRelay(destination.port);
  try {
    const dir = join(relay.dir, 'tls-reports');
    const day = await recordYesterday(dir, 'dest.test');
    await mkdir(join(dir, day), { recursive: true });
    await writeFile(join(dir, day, 'broken.test.json'), '{ not json');
    const outcomes = await relay.relay.tlsReportSender!.sendDue();
    assert.deepEqual(outcomes.map((o) => o.domain), ['dest.test']);
    await destination.waitForMessages(1);
    await relay.waitForLog((l) => l.event === 'tls-report-error' && l.domain === 'broken.test');
    assert.deepEqual(await relay.relay.tlsReportSender!.sendDue(), [], 'tried again in the next round, still unreadable');
    assert.equal(relay.logs.filter((l) => l.event === 'tls-report-error' && l.domain === 'broken.test').length, 2);
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('a config that would send unsigned reports is refused, naming the key path and the domain', async () => {
  await assert.rejects(reportingRelay(0, { from: 'tlsrpt@unsigned.test' }), /delivery\.tlsReports\.from: TLS reports must be DKIM-signed \(RFC 8460\), and no dkim\.keys entry signs mail from unsigned\.test/);
  // the default From, noreply-tlsrpt@<hostname>, is signed by a key of the hostname or a parent domain
  const relay = await reportingRelay(0, { from: undefined });
  try {
    assert.ok(relay.relay.tlsReportSender);
  } finally {
    await relay.stop();
  }
});
