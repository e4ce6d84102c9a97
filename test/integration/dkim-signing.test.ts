/**
 * DKIM signing end to end on loopback: a message submitted with AUTH leaves the
 * relay signed with the configured RSA and Ed25519 keys, and mailauth's verifier
 * checks the signatures against the keys published by a real DNS server on
 * 127.0.0.1 (the independent python3-dkim check is in test/peers/dkim.test.ts).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dkimVerify } from 'mailauth';
import nodemailer from 'nodemailer';
import type Mail from 'nodemailer/lib/mailer';
import { dkimPublicKeyBase64 } from '../../infra/render/dns-records';
import { DkimKeyError, loadDkimKeys, type DkimSigningKey } from '../../server/dkim/keys';
import { hashPassword } from '../../server/stages/password';
import { loopbackResolver, writeTestDkimKeys, type TestKeyFiles } from '../helpers/dkim-keys';
import { startDnsServer, type DnsServerHandle } from '../helpers/dns-server';
import { startDestination, type DestinationServer } from '../helpers/destination-server';
import { filesIn, waitFor } from '../helpers/spool-files';
import { startTestRelay, type TestRelay } from '../helpers/test-relay';

let dns: DnsServerHandle;
let keyDir: string;
let keyFiles: TestKeyFiles;
let keys: DkimSigningKey[];
let passwordHash: string;

const dkimConfig = () => ({
  keys: [
    { domain: 'customer.test', selector: 'rsa1', privateKeyFile: keyFiles.rsaFile },
    { domain: 'customer.test', selector: 'ed1', privateKeyFile: keyFiles.ed25519File },
  ],
});

before(async () => {
  keyDir = await mkdtemp(join(tmpdir(), 'ownrelay-dkim-'));
  keyFiles = await writeTestDkimKeys(keyDir);
  keys = await loadDkimKeys(dkimConfig().keys);
  passwordHash = await hashPassword('app-secret', 10);
  dns = await startDnsServer({
    'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] },
    'other-dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] },
    'mx.dest.test': { A: ['127.0.0.1'] },
    'rsa1._domainkey.customer.test': { TXT: [keys[0]!.dnsRecord] },
    'ed1._domainkey.customer.test': { TXT: [keys[1]!.dnsRecord] },
  });
});

after(async () => {
  await dns.close();
  await rm(keyDir, { recursive: true, force: true });
});

async function signingRelay(destination: DestinationServer): Promise<TestRelay> {
  return startTestRelay(
    () => ({
      dns: { servers: dns.servers },
      users: [{ name: 'app', passwordHash, senders: ['@customer.test', '@news.customer.test', '@other.test'] }],
      dkim: dkimConfig(),
    }),
    { mxPort: destination.port },
  );
}

function submit(relay: TestRelay, mail: Mail.Options) {
  return nodemailer
    .createTransport({ host: '127.0.0.1', port: relay.ports[1], secure: false, requireTLS: true, auth: { user: 'app', pass: 'app-secret' }, tls: { rejectUnauthorized: false } })
    .sendMail(mail);
}

async function verify(raw: Buffer) {
  return dkimVerify(raw, { resolver: loopbackResolver(dns.servers) as never });
}

test('the RSA key record is the one the infra publishes for the same key', () => {
  assert.equal(keys[0]!.algorithm, 'rsa-sha256');
  const publicPem = (require('node:crypto') as typeof import('node:crypto')).createPublicKey(keys[0]!.privateKeyPem).export({ format: 'pem', type: 'spki' }).toString();
  assert.equal(keys[0]!.dnsRecord, `v=DKIM1; k=rsa; p=${dkimPublicKeyBase64(publicPem)}`);
  assert.equal(keys[1]!.algorithm, 'ed25519-sha256');
  assert.match(keys[1]!.dnsRecord, /^v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=$/);
});

test('mail from a signing domain leaves with RSA and Ed25519 signatures that verify', async () => {
  const destination = await startDestination();
  const relay = await signingRelay(destination);
  try {
    await submit(relay, { from: 'App <app@customer.test>', to: 'carol@dest.test', subject: 'signed', text: 'body line\n.leading dot\n' });
    const [message] = await destination.waitForMessages(1);
    const raw = message!.raw;
    assert.match(raw.toString('latin1'), /^DKIM-Signature: v=1; a=rsa-sha256; c=relaxed\/relaxed; d=customer\.test;[^]*?s=rsa1;/);
    const result = await verify(raw);
    const byAlgorithm = new Map(result.results.map((r) => [r.signingDomain + '/' + (r as { algo?: string }).algo, r.status.result]));
    assert.deepEqual(
      Object.fromEntries(byAlgorithm),
      { 'customer.test/rsa-sha256': 'pass', 'customer.test/ed25519-sha256': 'pass' },
      JSON.stringify(result.results.map((r) => r.status)),
    );
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('every copy of one message carries the same signature, with t= the time it was accepted', async () => {
  const destination = await startDestination();
  const relay = await signingRelay(destination);
  try {
    const before = Math.floor(Date.now() / 1000);
    await submit(relay, { from: 'app@customer.test', to: ['carol@dest.test', 'dave@other-dest.test'], subject: 'two routes', text: 'same bytes\n' });
    const copies = await destination.waitForMessages(2);
    const signatures = copies.map((copy) => copy.raw.toString('latin1').split('\r\nReceived:')[0]);
    assert.equal(signatures[0], signatures[1], 'deterministic signatures: the message is signed once, in effect');
    const t = Number(/ t=(\d+);/.exec(signatures[0]!)?.[1]);
    assert.ok(t >= before - 1 && t <= Math.ceil(Date.now() / 1000), `t=${t}`);
    for (const copy of copies) assert.equal((await verify(copy.raw)).results.filter((r) => r.status.result === 'pass').length, 2);
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('a subdomain sender is signed by its parent domain; other domains are not signed', async () => {
  const destination = await startDestination();
  const relay = await signingRelay(destination);
  try {
    await submit(relay, { from: 'news@news.customer.test', to: 'carol@dest.test', subject: 'sub', text: 'x\n' });
    await submit(relay, { from: 'someone@other.test', to: 'carol@dest.test', subject: 'other', text: 'y\n' });
    const messages = await destination.waitForMessages(2);
    const sub = messages.find((m) => m.from === 'news@news.customer.test')!;
    const other = messages.find((m) => m.from === 'someone@other.test')!;
    assert.equal((await verify(sub.raw)).results.filter((r) => r.status.result === 'pass' && r.signingDomain === 'customer.test').length, 2);
    assert.doesNotMatch(other.raw.toString('latin1'), /DKIM-Signature/i);
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('mail stored in a local Maildir is not signed', async () => {
  const destination = await startDestination();
  const relay = await signingRelay(destination);
  try {
    await submit(relay, { from: 'app@customer.test', to: 'alice@relay.test', subject: 'local', text: 'z\n' });
    const dir = join(relay.dir, 'mail', 'relay.test', 'alice', 'new');
    await waitFor(async () => (await filesIn(dir)).length === 1);
    const [file] = await filesIn(dir);
    assert.doesNotMatch(await readFile(join(dir, file!), 'latin1'), /DKIM-Signature/i);
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('a missing or weak key stops the start with the key and the reason', async () => {
  const weak = join(keyDir, 'weak.pem');
  const { generateKeyPairSync } = require('node:crypto') as typeof import('node:crypto');
  await writeFile(weak, generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs8' }));
  const garbage = join(keyDir, 'garbage.pem');
  await writeFile(garbage, 'not a key\n');
  const cases: Array<[string, RegExp]> = [
    [join(keyDir, 'missing.pem'), /s1\._domainkey\.customer\.test \(.*missing\.pem\): cannot read the key file: ENOENT/],
    [weak, /an RSA key of 1024 bits is too short; use 2048 bits or more/],
    [garbage, /not a PEM private key/],
  ];
  for (const [file, message] of cases) {
    await assert.rejects(
      startTestRelay(() => ({ dkim: { keys: [{ domain: 'customer.test', selector: 's1', privateKeyFile: file }] } })),
      (err: unknown) => err instanceof DkimKeyError && message.test(err.message),
    );
  }
});
