/**
 * Inbound checks on the MX role, end to end on loopback: mail from "other
 * servers" (clients on 127.0.0.2 and 127.0.0.3, outside relay.networks) is
 * checked for SPF, DKIM and DMARC against records served by a real DNS server on
 * 127.0.0.1; the results land in an Authentication-Results header of the stored
 * message, spoofed mail from a p=reject domain is refused (or marked, where the
 * domain says so), and forged Authentication-Results claiming our name are removed.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dkimSign } from 'mailauth';
import nodemailer from 'nodemailer';
import { loadDkimKeys, type DkimSigningKey } from '../../server/dkim/keys';
import { writeTestDkimKeys } from '../helpers/dkim-keys';
import { startDnsServer, type DnsServerHandle } from '../helpers/dns-server';
import { filesIn, spoolCounts, waitFor } from '../helpers/spool-files';
import { startTestRelay, type TestRelay } from '../helpers/test-relay';

let dns: DnsServerHandle;
let keyDir: string;
let senderKey: DkimSigningKey;

before(async () => {
  keyDir = await mkdtemp(join(tmpdir(), 'ownrelay-inbound-'));
  const files = await writeTestDkimKeys(keyDir);
  senderKey = (await loadDkimKeys([{ domain: 'bank.test', selector: 'k1', privateKeyFile: files.rsaFile }]))[0]!;
  dns = await startDnsServer({
    // bank.test sends only from 127.0.0.2 and refuses anything failing DMARC
    'bank.test': { TXT: ['v=spf1 ip4:127.0.0.2 -all'] },
    '_dmarc.bank.test': { TXT: ['v=DMARC1; p=reject; adkim=r; aspf=r'] },
    'k1._domainkey.bank.test': { TXT: [senderKey.dnsRecord] },
    'client.bank.test': { A: ['127.0.0.2'] },
  });
});

after(async () => {
  await dns.close();
  await rm(keyDir, { recursive: true, force: true });
});

function mxRelay(extra: Record<string, unknown> = {}): Promise<TestRelay> {
  return startTestRelay(() => ({
    hostname: 'mx.relay.test',
    listeners: [{ role: 'mx', address: '127.0.0.1', port: 0, earlyTalkerCheck: false }],
    domains: [
      { name: 'relay.test', delivery: 'maildir', mailboxes: ['alice'] },
      { name: 'lenient.test', delivery: 'maildir', mailboxes: ['alice'], dmarcRejectPolicy: 'mark' },
    ],
    dns: { servers: dns.servers },
    inbound: { authentication: true },
    ...extra,
  }));
}

function message(from: string, extraHeaders = '', body = 'Your statement is ready.\r\n'): Buffer {
  return Buffer.from(`From: ${from}\r\nTo: alice@relay.test\r\nSubject: statement\r\nMessage-ID: <${Math.random().toString(36).slice(2)}@bank.test>\r\n${extraHeaders}\r\n${body}`, 'latin1');
}

async function signed(raw: Buffer): Promise<Buffer> {
  const key = { signingDomain: 'bank.test', selector: 'k1', privateKey: senderKey.privateKeyPem, algorithm: 'rsa-sha256', canonicalization: 'relaxed/relaxed' };
  const { signatures } = await dkimSign(raw, { ...key, signatureData: [key] });
  assert.match(signatures, /^DKIM-Signature: /);
  return Buffer.concat([Buffer.from(signatures, 'latin1'), raw]);
}

function send(relay: TestRelay, from: string, localAddress: string, raw: Buffer, to = 'alice@relay.test') {
  return nodemailer
    .createTransport({ host: '127.0.0.1', port: relay.ports[0], secure: false, ignoreTLS: true, localAddress, name: 'client.bank.test' })
    .sendMail({ envelope: { from, to }, raw });
}

async function stored(relay: TestRelay, domain: string): Promise<string> {
  const dir = join(relay.dir, 'mail', domain, 'alice', 'new');
  await waitFor(async () => (await filesIn(dir)).length === 1);
  const [file] = await filesIn(dir);
  return readFile(join(dir, file!), 'latin1');
}

test('mail from an authorised server with a valid signature passes SPF, DKIM and DMARC, recorded above the message', async () => {
  const relay = await mxRelay();
  try {
    await send(relay, 'statements@bank.test', '127.0.0.2', await signed(message('Bank <statements@bank.test>')));
    const text = await stored(relay, 'relay.test');
    // the Maildir copy has LF line endings and a Return-Path first
    const head = text.slice(0, text.indexOf('\n\n'));
    assert.match(head, /^Return-Path: <statements@bank\.test>\nReceived-SPF: pass \(mx\.relay\.test: domain of statements@bank\.test designates 127\.0\.0\.2 as permitted sender\)/);
    assert.match(head, /\nAuthentication-Results: mx\.relay\.test;\n dkim=pass header\.i=@bank\.test header\.s=k1/);
    assert.match(head, /spf=pass \([^)]*\) smtp\.mailfrom=statements@bank\.test/);
    assert.match(head, /dmarc=pass \([^)]*\) header\.from=bank\.test/);
    assert.ok(head.indexOf('Authentication-Results:') < head.indexOf('Received: from'), 'our results come before our Received header');
    const log = await relay.waitForLog((l) => l.event === 'authentication');
    assert.equal(log.results, 'spf=pass dkim=pass dmarc=pass arc=none');
  } finally {
    await relay.stop();
  }
});

test('spoofed mail from a p=reject domain is refused with 550 5.7.1 and nothing is queued', async () => {
  const relay = await mxRelay();
  try {
    await assert.rejects(send(relay, 'statements@bank.test', '127.0.0.3', message('Bank <statements@bank.test>')), (err: Error & { responseCode?: number; response?: string }) => {
      assert.equal(err.responseCode, 550);
      assert.match(err.response ?? '', /^550 5\.7\.1 Message refused: bank\.test publishes DMARC p=reject and this message fails it/);
      return true;
    });
    await relay.waitForLog((l) => l.event === 'refused' && String(l.reason).startsWith('dmarc fail'));
    assert.deepEqual(await spoolCounts(join(relay.dir, 'spool')), { tmp: 0, incoming: 0, active: 0, deferred: 0, hold: 0, corrupt: 0 });
  } finally {
    await relay.stop();
  }
});

test('a domain set to mark gets the spoofed mail, marked dmarc=fail', async () => {
  const relay = await mxRelay();
  try {
    await send(relay, 'statements@bank.test', '127.0.0.3', message('Bank <statements@bank.test>'), 'alice@lenient.test');
    const text = await stored(relay, 'lenient.test');
    assert.match(text, /dmarc=fail \(p=REJECT arc=none\) header\.from=bank\.test/);
    assert.match(text, /spf=fail \([^)]*\) smtp\.mailfrom=statements@bank\.test/);
  } finally {
    await relay.stop();
  }
});

test('forged Authentication-Results with our name are removed; another server\'s are kept', async () => {
  const relay = await mxRelay();
  try {
    const forged = 'Authentication-Results: mx.relay.test; dmarc=pass header.from=bank.test\r\nAuthentication-Results: upstream.test; spf=pass\r\n';
    await send(relay, 'statements@bank.test', '127.0.0.2', await signed(message('statements@bank.test', forged)));
    const text = await stored(relay, 'relay.test');
    assert.equal(text.match(/^Authentication-Results: mx\.relay\.test;/gm)?.length, 1, 'only our own, added by the relay');
    assert.match(text, /\nAuthentication-Results: upstream\.test; spf=pass\n/);
    assert.match(text, /dkim=pass header\.i=@bank\.test header\.s=k1/, 'the signature still verifies without the removed field');
  } finally {
    await relay.stop();
  }
});

test('a message too large to keep in memory gets its results too, and its body arrives whole', async () => {
  const relay = await mxRelay();
  try {
    const line = `${'x'.repeat(76)}\r\n`;
    const body = line.repeat(Math.ceil((600 * 1024) / line.length));
    await send(relay, 'statements@bank.test', '127.0.0.2', await signed(message('statements@bank.test', '', body)));
    const text = await stored(relay, 'relay.test');
    assert.match(text, /dkim=pass header\.i=@bank\.test header\.s=k1/);
    assert.match(text, /dmarc=pass/);
    assert.ok(text.endsWith(`\n\n${body.replace(/\r\n/g, '\n')}`), 'body intact');
  } finally {
    await relay.stop();
  }
});

test('clients in relay.networks are not checked', async () => {
  const relay = await mxRelay({ relay: { networks: ['127.0.0.3/32'] } });
  try {
    await send(relay, 'statements@bank.test', '127.0.0.3', message('statements@bank.test'));
    const text = await stored(relay, 'relay.test');
    assert.doesNotMatch(text, /Authentication-Results|Received-SPF/);
  } finally {
    await relay.stop();
  }
});
