/**
 * The outbound TLS policy end to end on loopback, with real parts only: a DNS
 * server publishing `_mta-sts.sts.test` and the MX, an HTTPS server serving the
 * policy with a certificate of a private test CA, and a real smtp-server as the
 * MX with certificates of that CA (for the right name, the wrong name) or none.
 * Each test ends by checking what the destination received and the TLS report
 * record the relay wrote under paths.state.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import nodemailer from 'nodemailer';
import { hashPassword } from '../../server/stages/password';
import pino from 'pino';
import { TlsReportStore, type TlsDayRecord } from '../../server/delivery/tls-report-store';
import { writeTestDkimKeys } from '../helpers/dkim-keys';
import { startDnsServer, type DnsServerHandle } from '../helpers/dns-server';
import { startDestination, type DestinationServer } from '../helpers/destination-server';
import { createTestCa, policyText, startPolicyServer, type PolicyServer, type TestCa } from '../helpers/mta-sts-peers';
import { PROJECT_ROOT } from '../helpers/relay-process';
import { spoolCounts, waitFor } from '../helpers/spool-files';
import { startTestRelay, type TestRelay } from '../helpers/test-relay';

const execFileAsync = promisify(execFile);
const TSX_LOADER = pathToFileURL(require.resolve('tsx', { paths: [PROJECT_ROOT] })).href;

let dns: DnsServerHandle;
let ca: TestCa;
let policyServer: PolicyServer;
let passwordHash: string;
const dirs: string[] = [];

before(async () => {
  passwordHash = await hashPassword('app-secret', 10);
  ca = await createTestCa();
  policyServer = await startPolicyServer(await ca.issue(['mta-sts.sts.test']), policyText('enforce', ['mx.sts.test']));
  dns = await startDnsServer({
    'sts.test': { MX: [{ exchange: 'mx.sts.test', priority: 10 }] },
    'mx.sts.test': { A: ['127.0.0.1'] },
    '_mta-sts.sts.test': { TXT: ['v=STSv1; id=20261129T1;'] },
    'mta-sts.sts.test': { A: ['127.0.0.1'] },
    '_smtp._tls.sts.test': { TXT: ['v=TLSRPTv1; rua=mailto:tls-reports@sts.test'] },
  });
});

after(async () => {
  await dns.close();
  await policyServer.close();
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function relayTo(destination: DestinationServer, dir?: string, extra: Record<string, unknown> = {}): Promise<TestRelay> {
  const stateDir = dir ?? (await mkdtemp(join(tmpdir(), 'ownrelay-sts-')));
  if (!dirs.includes(stateDir)) dirs.push(stateDir);
  return startTestRelay(() => ({ dns: { servers: dns.servers }, users: [{ name: 'app', passwordHash, senders: ['@relay.test'] }], ...extra }), {
    dir: stateDir,
    mxPort: destination.port,
    outboundTls: { extraCaPem: [ca.cert], mtaStsHttpsPort: policyServer.port },
  });
}

function submit(relay: TestRelay, subject: string): Promise<unknown> {
  const transport = nodemailer.createTransport({
    host: '127.0.0.1',
    port: relay.ports[1],
    secure: false,
    requireTLS: true,
    auth: { user: 'app', pass: 'app-secret' },
    tls: { rejectUnauthorized: false },
  });
  return transport.sendMail({ from: 'app@relay.test', to: 'carol@sts.test', subject, text: 'secret\n' });
}

/** Every TLS report record the relay wrote for sts.test (one per UTC day; tests may cross midnight). */
async function reportsOf(relay: TestRelay): Promise<TlsDayRecord[]> {
  const root = join(relay.dir, 'state', 'tls-reports');
  const records: TlsDayRecord[] = [];
  for (const day of await readdir(root).catch(() => [] as string[])) {
    const text = await readFile(join(root, day, 'sts.test.json'), 'utf8').catch(() => undefined);
    if (text) records.push(JSON.parse(text) as TlsDayRecord);
  }
  return records;
}

function totals(records: TlsDayRecord[]): { ok: number; failed: number; resultTypes: string[]; failureMx: string[] } {
  const policies = records.flatMap((r) => r.policies);
  return {
    ok: policies.reduce((n, p) => n + p.summary['total-successful-session-count'], 0),
    failed: policies.reduce((n, p) => n + p.summary['total-failure-session-count'], 0),
    resultTypes: [...new Set(policies.flatMap((p) => p['failure-details'].map((d) => d['result-type'])))],
    failureMx: [...new Set(policies.flatMap((p) => p['failure-details'].map((d) => d['receiving-mx-hostname'] ?? '')))],
  };
}

async function deferrals(relay: TestRelay, count: number): Promise<Array<Record<string, unknown>>> {
  return waitFor(async () => {
    const lines = relay.logs.filter((l) => l.event === 'deferred');
    return lines.length >= count ? lines : undefined;
  }, 15_000, `${count} deferral(s)`);
}

test('enforce: an MX whose certificate is for another name gets nothing, not even in plain text; the message is deferred and the failure recorded', async () => {
  policyServer.serve(policyText('enforce', ['mx.sts.test']));
  const destination = await startDestination({ credentials: await ca.issue(['mx.wrong.test']) });
  const relay = await relayTo(destination);
  try {
    await submit(relay, 'must not leak');
    const [first] = await deferrals(relay, 2); // the first attempt and a retry
    assert.match(String(first!.reply), /^MTA-STS policy of sts\.test \(enforce\) requires STARTTLS with a valid certificate: mx\.sts\.test\[127\.0\.0\.1\]:\d+: .*(altnames|does not match)/i);
    assert.ok(destination.connections >= 2, 'the MX was tried on each attempt');
    assert.equal(destination.messages.length, 0, 'nothing delivered, in plain text or otherwise');
    const counts = await spoolCounts(join(relay.dir, 'spool'));
    assert.equal(counts.deferred + counts.active, 1, 'the message stays queued');
  } finally {
    await relay.stop();
    await destination.close();
  }
  const report = totals(await reportsOf(relay));
  assert.equal(report.ok, 0);
  assert.ok(report.failed >= 2, `failures counted per session (${report.failed})`);
  assert.deepEqual(report.resultTypes, ['certificate-host-mismatch']);
  assert.deepEqual(report.failureMx, ['mx.sts.test']);
  const [record] = await reportsOf(relay);
  assert.deepEqual(record!.policies[0]!.policy, {
    'policy-type': 'sts',
    'policy-string': ['version: STSv1', 'mode: enforce', 'mx: mx.sts.test', 'max_age: 86400'],
    'policy-domain': 'sts.test',
    'mx-host': ['mx.sts.test'],
  });
});

test('enforce: an MX with a certificate valid for its name (signed by a trusted CA) gets the message over TLS; a success is recorded', async () => {
  policyServer.serve(policyText('enforce', ['mx.sts.test']));
  const destination = await startDestination({ credentials: await ca.issue(['mx.sts.test']) });
  const relay = await relayTo(destination);
  try {
    await submit(relay, 'verified');
    const [message] = await destination.waitForMessages(1);
    assert.equal(message!.secure, true);
    assert.deepEqual(message!.to, ['carol@sts.test']);
    await relay.waitForLog((l) => l.event === 'delivered');
    const policyLine = relay.logs.find((l) => l.event === 'mta-sts-policy');
    assert.equal(policyLine?.mode, 'enforce');
  } finally {
    await relay.stop();
    await destination.close();
  }
  const report = totals(await reportsOf(relay));
  assert.deepEqual({ ok: report.ok, failed: report.failed }, { ok: 1, failed: 0 });
});

test('enforce: a self-signed or expired certificate is refused as not trusted or expired', async () => {
  policyServer.serve(policyText('enforce', ['mx.sts.test']));
  const cases = [
    { credentials: undefined, resultType: 'certificate-not-trusted' }, // the shared self-signed certificate of the destination helper
    { credentials: await ca.issue(['mx.sts.test'], { notBefore: new Date(Date.now() - 10 * 86400_000), notAfter: new Date(Date.now() - 86400_000) }), resultType: 'certificate-expired' },
  ];
  for (const { credentials, resultType } of cases) {
    const destination = await startDestination(credentials ? { credentials } : {});
    const relay = await relayTo(destination);
    try {
      await submit(relay, resultType);
      await deferrals(relay, 1);
      assert.equal(destination.messages.length, 0);
    } finally {
      await relay.stop();
      await destination.close();
    }
    assert.deepEqual(totals(await reportsOf(relay)).resultTypes, [resultType]);
  }
});

test('enforce: an MX that is not in the policy is never connected to; the message is deferred', async () => {
  policyServer.serve(policyText('enforce', ['mx1.elsewhere.test', '*.mail.sts.test']));
  const destination = await startDestination({ credentials: await ca.issue(['mx.sts.test']) });
  const relay = await relayTo(destination);
  try {
    await submit(relay, 'wrong mx');
    const [first] = await deferrals(relay, 1);
    assert.match(String(first!.reply), /MTA-STS policy of sts\.test \(enforce\) allows mx mx1\.elsewhere\.test, \*\.mail\.sts\.test; none of its MX hosts \(mx\.sts\.test\) matches/);
    assert.equal(destination.connections, 0);
    assert.equal(destination.messages.length, 0);
  } finally {
    await relay.stop();
    await destination.close();
  }
  const records = await reportsOf(relay);
  const details = records.flatMap((r) => r.policies.flatMap((p) => p['failure-details']));
  assert.ok(details.length > 0);
  assert.ok(details.every((d) => d['result-type'] === 'validation-failure' && d['failure-reason-code'] === 'mx-mismatch' && d['receiving-mx-hostname'] === 'mx.sts.test'));
});

test('enforce: an MX without STARTTLS is refused (starttls-not-supported) and the message deferred', async () => {
  policyServer.serve(policyText('enforce', ['mx.sts.test']));
  const destination = await startDestination({ noTls: true });
  const relay = await relayTo(destination);
  try {
    await submit(relay, 'no starttls');
    const [first] = await deferrals(relay, 1);
    assert.match(String(first!.reply), /^MTA-STS policy of sts\.test \(enforce\) requires STARTTLS with a valid certificate: mx\.sts\.test\[127\.0\.0\.1\]:\d+: 5\d\d /);
    assert.ok(destination.connections >= 1);
    assert.equal(destination.messages.length, 0);
  } finally {
    await relay.stop();
    await destination.close();
  }
  assert.deepEqual(totals(await reportsOf(relay)).resultTypes, ['starttls-not-supported']);
});

test('a TLS report is delivered even where the enforce policy refuses the MX (RFC 8460 5.3), and its session is not counted', async () => {
  policyServer.serve(policyText('enforce', ['mx.sts.test']));
  const destination = await startDestination({ credentials: await ca.issue(['mx.wrong.test']) });
  const stateDir = await mkdtemp(join(tmpdir(), 'ownrelay-sts-'));
  const keys = await writeTestDkimKeys(stateDir);
  const relay = await relayTo(destination, stateDir, {
    dkim: { keys: [{ domain: 'relay.test', selector: 'rsa1', privateKeyFile: keys.rsaFile }] },
    delivery: { allowedDestinations: ['127.0.0.0/8'], tlsReports: { enabled: true, send: true, from: 'tlsrpt@relay.test' } },
  });
  try {
    const yesterday = new Date(Date.now() - 86_400_000);
    const store = new TlsReportStore(join(relay.dir, 'state', 'tls-reports'), pino({ level: 'silent' }));
    store.recordFailure({ 'policy-type': 'sts', 'policy-string': [], 'policy-domain': 'sts.test', 'mx-host': ['mx.sts.test'] }, { 'result-type': 'certificate-host-mismatch' }, yesterday);
    await store.close();
    const [outcome] = await relay.relay.tlsReportSender!.sendDue();
    assert.ok(outcome?.queueId);
    const [report] = await destination.waitForMessages(1);
    assert.deepEqual(report!.to, ['tls-reports@sts.test']);
    assert.match(report!.raw.toString('latin1'), /^TLS-Report-Domain: sts\.test$/m);
    await relay.waitForLog((l) => l.event === 'delivered' && l.queueId === outcome.queueId);
  } finally {
    await relay.stop();
    await destination.close();
  }
  const today = new Date().toISOString().slice(0, 10);
  assert.equal((await reportsOf(relay)).filter((r) => r['date-range']['start-datetime'].startsWith(today)).length, 0, 'no session of the report is counted');
});

test('testing: the message is delivered as usual and what enforce would refuse is recorded', async () => {
  policyServer.serve(policyText('testing', ['mx.sts.test']));
  const destination = await startDestination({ credentials: await ca.issue(['mx.wrong.test']) });
  const relay = await relayTo(destination);
  try {
    await submit(relay, 'testing mode');
    const [message] = await destination.waitForMessages(1);
    assert.deepEqual(message!.to, ['carol@sts.test']);
    const warning = await relay.waitForLog((l) => l.event === 'mta-sts-failure');
    assert.equal(warning.mode, 'testing');
    assert.equal(warning.resultType, 'certificate-host-mismatch');
  } finally {
    await relay.stop();
    await destination.close();
  }
  const report = totals(await reportsOf(relay));
  assert.deepEqual(report, { ok: 0, failed: 1, resultTypes: ['certificate-host-mismatch'], failureMx: ['mx.sts.test'] });

  // the customer's view: `ownrelay tls-report` prints the RFC 8460 report of that day
  const [day] = await readdir(join(relay.dir, 'state', 'tls-reports'));
  const configFile = join(relay.dir, 'report-config.yaml');
  await writeFile(configFile, stringify({ hostname: 'relay.test', listeners: [{ role: 'mx', port: 25 }], paths: { state: join(relay.dir, 'state') } }));
  const { stdout } = await execFileAsync(process.execPath, ['--import', TSX_LOADER, join(PROJECT_ROOT, 'server', 'main.ts'), 'tls-report', '-c', configFile, '--domain', 'sts.test', '--day', day!]);
  const rfc8460 = JSON.parse(stdout) as Record<string, unknown> & { policies: TlsDayRecord['policies'] };
  assert.equal(rfc8460['organization-name'], 'relay.test');
  assert.equal(rfc8460['contact-info'], 'postmaster@relay.test');
  assert.equal(rfc8460['report-id'], `${day}T00:00:00Z_sts.test@relay.test`);
  assert.deepEqual(rfc8460['date-range'], { 'start-datetime': `${day}T00:00:00Z`, 'end-datetime': `${day}T23:59:59Z` });
  assert.equal(rfc8460.policies[0]!.policy['policy-string'][1], 'mode: testing');
  assert.equal(rfc8460.policies[0]!['failure-details'][0]!['result-type'], 'certificate-host-mismatch');
  assert.equal(rfc8460.policies[0]!['failure-details'][0]!['receiving-ip'], '127.0.0.1');
});

test('with delivery.mtaSts.enabled false, policies are not looked up and STARTTLS stays opportunistic', async () => {
  policyServer.serve(policyText('enforce', ['mx.sts.test']));
  const requestsBefore = policyServer.requests;
  const destination = await startDestination({ credentials: await ca.issue(['mx.wrong.test']) });
  const stateDir = await mkdtemp(join(tmpdir(), 'ownrelay-sts-'));
  dirs.push(stateDir);
  const relay = await startTestRelay(
    (dir) => ({
      dns: { servers: dns.servers },
      users: [{ name: 'app', passwordHash, senders: ['@relay.test'] }],
      delivery: { allowedDestinations: ['127.0.0.0/8'], retry: { minBackoffMs: 200, maxBackoffMs: 400 }, mtaSts: { enabled: false }, tlsReports: { enabled: true, dir: join(dir, 'records') } },
    }),
    { dir: stateDir, mxPort: destination.port, outboundTls: { extraCaPem: [ca.cert], mtaStsHttpsPort: policyServer.port } },
  );
  try {
    await submit(relay, 'no mta-sts');
    const [message] = await destination.waitForMessages(1);
    assert.equal(message!.secure, true, 'opportunistic STARTTLS, certificate not checked');
  } finally {
    await relay.stop();
    await destination.close();
  }
  assert.equal(policyServer.requests, requestsBefore);
  assert.deepEqual(await readdir(join(stateDir, 'records')).catch(() => []), [], 'no policy, no TLS report records');
});

test('a cached policy survives a restart and is enforced while the policy server is gone', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ownrelay-sts-'));
  const requestsBefore = policyServer.requests;
  policyServer.serve(policyText('enforce', ['mx.sts.test']));
  const good = await startDestination({ credentials: await ca.issue(['mx.sts.test']) });
  const first = await relayTo(good, dir);
  try {
    await submit(first, 'before restart');
    await good.waitForMessages(1);
  } finally {
    await first.stop();
    await good.close();
  }
  assert.equal(policyServer.requests, requestsBefore + 1, 'the policy was fetched once');
  const cacheFile = join(dir, 'state', 'mta-sts', 'sts.test.json');
  assert.ok((await stat(cacheFile)).isFile());

  // the HTTPS server is gone: the second relay only has the policy cached on disk
  await policyServer.close();
  try {
    const wrongName = await startDestination({ credentials: await ca.issue(['mx.wrong.test']) });
    const second = await relayTo(wrongName, dir);
    try {
      await submit(second, 'after restart');
      const [deferred] = await deferrals(second, 1);
      assert.match(String(deferred!.reply), /altnames|does not match/i, 'the cached enforce policy still applies');
      assert.equal(wrongName.messages.length, 0);
      assert.equal(second.logs.filter((l) => l.event === 'mta-sts-fetch-failed').length, 0, 'no fetch was needed');
    } finally {
      await second.stop();
      await wrongName.close();
    }
  } finally {
    // for the tests that follow (and the after hook)
    policyServer = await startPolicyServer(await ca.issue(['mta-sts.sts.test']), policyText('enforce', ['mx.sts.test']));
  }
});
