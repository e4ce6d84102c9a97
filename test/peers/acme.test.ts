/**
 * ACME against a real ACME server: Debian's Pebble on loopback validates our
 * HTTP-01 responder for real (it resolves the names through a DNS server on
 * loopback and fetches the token from the relay's port), issues the certificate,
 * and the relay serves it on every SMTP listener and the MTA-STS HTTPS server,
 * verified by a TLS client that trusts only Pebble's root. Renewal replaces it for
 * new connections while a session opened before keeps working.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { acmeFiles } from '../../server/tls/acme';
import { startDnsServer, type DnsServerHandle, type Zone } from '../helpers/dns-server';
import { startRoute53Api } from '../helpers/route53-api';
import { startPebble, type PebbleHandle } from '../helpers/pebble';
import { freePort } from '../helpers/ports';
import { startTestRelay, type TestRelay } from '../helpers/test-relay';
import { SmtpTlsSession } from '../helpers/tls-probe';

const DAY_S = 86_400;
const BASE_ZONE: Zone = { 'relay.test': { A: ['127.0.0.1'] }, 'mta-sts.relay.test': { A: ['127.0.0.1'] } };

let dir: string;
let dns: DnsServerHandle;
let pebble: PebbleHandle;
let httpPort: number;
let relay: TestRelay | undefined;
let root: string;
let intermediate: X509Certificate;

function relayConfig(acme: Record<string, unknown> = {}): () => Record<string, unknown> {
  return () => ({
    tls: {
      acme: { directoryUrl: pebble.directoryUrl, email: 'hostmaster@relay.test', challenge: 'http-01', http01: { address: '127.0.0.1', port: httpPort }, caFile: pebble.httpsCaFile, ...acme },
      mtaStsPolicy: { address: '127.0.0.1', port: 0, mode: 'enforce', maxAgeSeconds: DAY_S, mx: ['relay.test'] },
    },
    // loopback is a trusted network, so the submission ports take mail without AUTH here
    relay: { networks: ['127.0.0.1/32'] },
  });
}

async function startRelay(acme: Record<string, unknown> = {}): Promise<TestRelay> {
  relay = await startTestRelay(relayConfig(acme), { dir });
  return relay;
}

async function stopRelay(): Promise<void> {
  await relay?.stop();
  relay = undefined;
}

/** The certificate each SMTP listener presents to a client that trusts only Pebble's root and checks the name. */
async function verifiedSerials(r: TestRelay): Promise<string[]> {
  const [mx, submission, implicit] = r.ports as [number, number, number];
  const serials: string[] = [];
  for (const [port, mode] of [[mx, 'starttls'], [submission, 'starttls'], [implicit, 'implicit']] as const) {
    const session = await SmtpTlsSession.open({ port, mode, ca: root, servername: 'relay.test' });
    assert.equal(session.socket.authorized, true);
    serials.push(session.certificate.serialNumber);
    session.close();
  }
  return serials;
}

/** The MTA-STS server's certificate, verified against Pebble's root for mta-sts.relay.test. */
function httpsCertificate(r: TestRelay): Promise<{ serial: string; body: string }> {
  return new Promise((resolve, reject) => {
    const request = https.get(
      { host: '127.0.0.1', port: r.relay.tls.mtaSts!.port, path: '/.well-known/mta-sts.txt', servername: 'mta-sts.relay.test', headers: { host: 'mta-sts.relay.test' }, ca: root, agent: false },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ serial: (res.socket as import('node:tls').TLSSocket).getPeerCertificate().serialNumber, body }));
      },
    );
    request.on('error', reject);
  });
}

function httpStatus(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    }).on('error', reject);
  });
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ownrelay-acme-'));
  dns = await startDnsServer(BASE_ZONE);
  httpPort = await freePort();
  // every certificate Pebble issues here lives 60 days
  pebble = await startPebble({ dir, httpPort, dnsServer: dns.servers[0]!, certificateValiditySeconds: 60 * DAY_S });
  root = await pebble.root();
  intermediate = new X509Certificate(await pebble.intermediate());
});

after(async () => {
  await stopRelay();
  await pebble?.stop();
  await dns?.close();
  await rm(dir, { recursive: true, force: true });
});

test('Pebble issues a certificate over HTTP-01 and every listener serves it, chained to Pebble\'s intermediate', async () => {
  const r = await startRelay();
  const issued = await r.waitForLog((l) => l.event === 'acme-issued' || l.event === 'acme-failed', 60_000);
  assert.equal(issued.event, 'acme-issued', `${JSON.stringify(issued)}\n${pebble.output().slice(-3000)}`);
  // Pebble fetched the token from our responder: one answered request per name
  const answered = r.logs.filter((l) => l.event === 'acme-http01-request' && l.answered === true).length;
  assert.ok(answered >= 2, `the HTTP-01 responder answered ${answered} validation request(s)`);

  const serials = await verifiedSerials(r);
  assert.equal(new Set(serials).size, 1);
  assert.equal(serials[0], issued.serial);

  const files = acmeFiles(join(dir, 'state'));
  const served = new X509Certificate(await readFile(files.cert));
  assert.equal(served.serialNumber, serials[0]);
  assert.ok(served.checkIssued(intermediate), `issuer ${served.issuer} is not Pebble's intermediate ${intermediate.subject}`);
  assert.ok(served.verify(intermediate.publicKey));
  assert.deepEqual(served.subjectAltName?.split(', ').sort(), ['DNS:mta-sts.relay.test', 'DNS:relay.test']);
  for (const key of [files.key, files.accountKey]) assert.equal((await stat(key)).mode & 0o777, 0o600, `${key} must be 0600`);

  // the HTTP-01 responder serves nothing but pending challenge tokens
  for (const path of ['/', '/.well-known/acme-challenge/', '/.well-known/acme-challenge/unknown-token', '/.well-known/mta-sts.txt', '/etc/passwd']) {
    assert.equal(await httpStatus(httpPort, path), 404, path);
  }

  const policy = await httpsCertificate(r);
  assert.equal(policy.serial, serials[0]);
  assert.match(policy.body, /^version: STSv1\r\nmode: enforce\r\n/);
});

test('a renewal reaches new connections at once while a session opened before keeps its certificate and its mail goes through', async () => {
  const r = relay!;
  const [mx, , implicit] = r.ports as [number, number, number];
  const before = (await verifiedSerials(r))[0];
  const liveMx = await SmtpTlsSession.open({ port: mx, mode: 'starttls', ca: root, servername: 'relay.test' });
  const liveImplicit = await SmtpTlsSession.open({ port: implicit, mode: 'implicit', ca: root, servername: 'relay.test' });

  assert.equal(await r.relay.tls.acme!.renewNow(), true);

  const after = await verifiedSerials(r);
  assert.notEqual(after[0], before);
  assert.equal(new Set(after).size, 1);
  assert.equal((await httpsCertificate(r)).serial, after[0]);

  for (const live of [liveMx, liveImplicit]) {
    assert.equal(live.certificate.serialNumber, before);
    await live.expectCommand('MAIL FROM:<sender@outside.test>', 250);
    await live.expectCommand('RCPT TO:<alice@relay.test>', 250);
    await live.expectCommand('DATA', 354);
    assert.match(await live.expectCommand('Subject: renewal\r\n\r\nsent across a renewal\r\n.', 250), /queued as/);
    await live.expectCommand('QUIT', 221);
    live.close();
  }
});

test('after a restart the stored certificate is served at once and kept while more than renewBeforeDays remain', async () => {
  const stored = (await verifiedSerials(relay!))[0];
  await stopRelay();
  const r = await startRelay({ renewBeforeDays: 30 });
  assert.equal(r.relay.tls.store.credentials.source, 'acme');
  assert.deepEqual(await verifiedSerials(r), [stored, stored, stored]);
  assert.equal(await r.relay.tls.acme!.check(), false);
  assert.equal(r.logs.filter((l) => l.event === 'acme-order').length, 0);
});

test('a certificate with fewer than renewBeforeDays left is renewed at start', async () => {
  const stored = (await verifiedSerials(relay!))[0];
  await stopRelay();
  // Pebble's certificates live 60 days: with a 90-day window this one is due
  const r = await startRelay({ renewBeforeDays: 90 });
  const order = await r.waitForLog((l) => l.event === 'acme-order', 30_000);
  assert.match(String(order.reason), /^\d+ days left$/);
  const issued = await r.waitForLog((l) => l.event === 'acme-issued' || l.event === 'acme-failed', 60_000);
  assert.equal(issued.event, 'acme-issued', JSON.stringify(issued));
  // and the window is longer than Pebble's certificates live, which the log points out
  await r.waitForLog((l) => l.event === 'acme-window-too-long' && l.renewBeforeDays === 90);
  const now = await verifiedSerials(r);
  assert.notEqual(now[0], stored);
  assert.deepEqual(now, [issued.serial, issued.serial, issued.serial]);
});

/**
 * DNS-01 through Route 53: the relay's real Route 53 provider and the AWS SDK talk
 * to a stand-in for Route 53's API on loopback, which serves the changed records
 * from the DNS server Pebble asks.
 */
test('DNS-01 through Route 53: the challenge TXT is published, validated by Pebble through DNS, and withdrawn', async () => {
  await stopRelay();
  const dnsDir = await mkdtemp(join(tmpdir(), 'ownrelay-acme-dns01-'));
  const txt = new Map<string, string[]>();
  const route53 = await startRoute53Api({ 'relay.test.': 'ZRELAYTEST' }, (change) => {
    const name = change.name.replace(/\.$/, '');
    const values = change.values.map((v) => JSON.parse(v) as string);
    if (change.action === 'UPSERT') txt.set(name, values);
    if (change.action === 'DELETE') txt.delete(name);
    const zone: Zone = { ...BASE_ZONE };
    for (const [record, list] of txt) zone[record] = { TXT: list };
    dns.setZone(zone);
  });
  const saved = { ...process.env };
  Object.assign(process.env, route53.environment);
  const config = () => ({
    tls: { acme: { directoryUrl: pebble.directoryUrl, email: 'hostmaster@relay.test', challenge: 'dns-01', dns01: { provider: 'route53' }, domains: ['smtp.relay.test'], caFile: pebble.httpsCaFile } },
  });
  const r = await startTestRelay(config, { dir: dnsDir });
  try {
    assert.equal(r.relay.tls.acme!.http01Port, 0, 'no HTTP-01 responder with dns-01');
    const issued = await r.waitForLog((l) => l.event === 'acme-issued' || l.event === 'acme-failed', 60_000);
    assert.equal(issued.event, 'acme-issued', `${JSON.stringify(issued)}\n${pebble.output().slice(-3000)}`);
    const upserts = route53.changes.filter((c) => c.action === 'UPSERT');
    assert.deepEqual(upserts.map((c) => c.name.replace(/\.$/, '')).sort(), ['_acme-challenge.relay.test', '_acme-challenge.smtp.relay.test']);
    for (const change of upserts) {
      assert.equal(change.zoneId, 'ZRELAYTEST', 'the zone found by name');
      assert.equal(change.type, 'TXT');
      assert.equal(change.ttl, 60);
      assert.match(change.values[0]!, /^"[A-Za-z0-9_-]{43}"$/, 'the key authorization digest, quoted as Route 53 wants TXT values');
    }
    assert.equal(route53.changes.filter((c) => c.action === 'DELETE').length, 2, 'every challenge record was withdrawn');
    assert.ok(route53.changePolls() >= 4, 'each change was waited for until INSYNC');
    assert.equal(txt.size, 0);
    const session = await SmtpTlsSession.open({ port: r.ports[0]!, mode: 'starttls', ca: root, servername: 'smtp.relay.test' });
    assert.equal(session.certificate.serialNumber, issued.serial);
    assert.ok(new X509Certificate(session.certificate.raw).checkIssued(intermediate));
    session.close();
  } finally {
    await r.stop();
    process.env = saved;
    await route53.close();
    await rm(dnsDir, { recursive: true, force: true });
  }
});
