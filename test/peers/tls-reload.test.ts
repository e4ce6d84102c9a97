/**
 * Certificate renewal without a restart: the relay runs with tls.certFile/keyFile,
 * the files are replaced on disk (as certbot or an operator would), and new
 * connections on every listener get the new certificate while a session opened
 * before keeps its own and still delivers a message. Real sockets, real files,
 * Node's TLS client reading the served certificate's serial number.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generate } from 'selfsigned';
import { startTestRelay, type TestRelay } from '../helpers/test-relay';
import { SmtpTlsSession } from '../helpers/tls-probe';

interface Pair {
  cert: string;
  key: string;
  serial: string;
}

async function makePair(commonName: string): Promise<Pair> {
  const pems = await generate([{ name: 'commonName', value: commonName }], { keySize: 2048, algorithm: 'sha256' });
  return { cert: pems.cert, key: pems.private, serial: new X509Certificate(pems.cert).serialNumber };
}

/** Replaces a file the way renewal tools do: write elsewhere, then rename over it. */
async function replaceFile(path: string, content: string): Promise<void> {
  await writeFile(`${path}.new`, content);
  await rename(`${path}.new`, path);
}

let relay: TestRelay;
let certFile: string;
let keyFile: string;
let first: Pair;
let ports: { mx: number; submission: number; implicit: number };

before(async () => {
  first = await makePair('relay.test');
  const dir = await mkdtemp(join(tmpdir(), 'ownrelay-tls-reload-'));
  certFile = join(dir, 'tls', 'fullchain.pem');
  keyFile = join(dir, 'tls', 'privkey.pem');
  await mkdir(join(dir, 'tls'));
  await writeFile(certFile, first.cert);
  await writeFile(keyFile, first.key, { mode: 0o600 });
  // loopback is a trusted network, so the submission ports take mail without AUTH here
  relay = await startTestRelay(() => ({ tls: { certFile, keyFile, reloadCheckIntervalMs: 100 }, relay: { networks: ['127.0.0.1/32'] } }), { dir });
  const [mx, submission, implicit] = relay.ports as [number, number, number];
  ports = { mx, submission, implicit };
});

after(async () => {
  await relay?.stop();
  if (relay) await rm(relay.dir, { recursive: true, force: true });
});

async function servedSerials(): Promise<string[]> {
  const serials: string[] = [];
  for (const [port, mode] of [[ports.mx, 'starttls'], [ports.submission, 'starttls'], [ports.implicit, 'implicit']] as const) {
    const session = await SmtpTlsSession.open({ port, mode });
    serials.push(session.certificate.serialNumber);
    await session.command('QUIT');
    session.close();
  }
  return serials;
}

function changes(): number {
  return relay.logs.filter((l) => l.event === 'tls-certificate-changed').length;
}

test('a renewed certificate on disk is served to new connections on every listener, and open sessions keep working', async () => {
  assert.deepEqual(await servedSerials(), [first.serial, first.serial, first.serial]);

  // sessions opened before the renewal, one per kind of listener
  const liveStartTls = await SmtpTlsSession.open({ port: ports.mx, mode: 'starttls' });
  const liveImplicit = await SmtpTlsSession.open({ port: ports.implicit, mode: 'implicit' });

  const second = await makePair('relay.test');
  await replaceFile(keyFile, second.key);
  await replaceFile(certFile, second.cert);
  await relay.waitForLog((l) => l.event === 'tls-certificate-changed' && l.serial === second.serial);

  assert.deepEqual(await servedSerials(), [second.serial, second.serial, second.serial]);

  // the open sessions still have the old certificate and still take mail
  for (const live of [liveStartTls, liveImplicit]) {
    assert.equal(live.certificate.serialNumber, first.serial);
    await live.expectCommand('MAIL FROM:<sender@outside.test>', 250);
    await live.expectCommand('RCPT TO:<alice@relay.test>', 250);
    await live.expectCommand('DATA', 354);
    const queued = await live.expectCommand('Subject: during renewal\r\n\r\nstill here\r\n.', 250);
    assert.match(queued, /queued as/);
    await live.expectCommand('QUIT', 221);
    live.close();
  }
  const delivered = async () => (await readdir(join(relay.dir, 'mail', 'relay.test', 'alice', 'new')).catch(() => [])).length;
  for (let i = 0; i < 100 && (await delivered()) < 2; i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(await delivered(), 2);
});

test('a half-written renewal (new certificate, old key) is not used until the key matches', async () => {
  const before = (await servedSerials())[0];
  const third = await makePair('relay.test');
  const changesBefore = changes();
  await replaceFile(certFile, third.cert);
  const warning = await relay.waitForLog((l) => l.event === 'tls-reload-failed' && String(l.msg).includes('does not belong'));
  assert.ok(warning);
  assert.deepEqual(await servedSerials(), [before, before, before]);
  assert.equal(changes(), changesBefore);

  await replaceFile(keyFile, third.key);
  await relay.waitForLog((l) => l.event === 'tls-certificate-changed' && l.serial === third.serial);
  assert.deepEqual(await servedSerials(), [third.serial, third.serial, third.serial]);
});

test('a certificate file replaced by garbage is refused and the current certificate stays', async () => {
  const current = (await servedSerials())[0];
  await replaceFile(certFile, 'this is not a certificate\n');
  await relay.waitForLog((l) => l.event === 'tls-reload-failed' && String(l.msg).includes('not a PEM certificate'));
  assert.deepEqual(await servedSerials(), [current, current, current]);
});
