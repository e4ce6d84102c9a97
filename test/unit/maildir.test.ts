import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { DomainSchema } from '../../server/config/schema';
import { CrlfToLf, deliverToMaildir, MaildirTransport } from '../../server/delivery/maildir';
import type { OutboundMessage } from '../../server/delivery/types';
import { silentLogger } from '../../server/log/logger';

let work: string;
let case_ = 0;

before(() => {
  work = mkdtempSync(path.join(os.tmpdir(), 'ownrelay-maildir-'));
});

after(() => {
  rmSync(work, { recursive: true, force: true });
});

/** A fresh mail root per test, so tests never see each other's files. */
function freshRoot(): string {
  case_ += 1;
  return path.join(work, `case${case_}`);
}

function chunks(...parts: string[]): Readable {
  return Readable.from(parts.map((p) => Buffer.from(p, 'utf8')));
}

function files(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir) : [];
}

const MESSAGE = 'Subject: hello\r\nFrom: a@example.net\r\n\r\nline one\r\nline two\r\n';

describe('deliverToMaildir', () => {
  test('stores the message in new/ with LF endings and a Return-Path first, leaving tmp/ empty', async () => {
    const mailRoot = freshRoot();
    const file = await deliverToMaildir({ mailRoot, domain: 'Example.ORG', mailbox: 'alice', sender: 'a@example.net', hostname: 'mx.example.org', message: chunks(MESSAGE) });

    const maildir = path.join(mailRoot, 'example.org', 'alice');
    assert.equal(path.dirname(file), path.join(maildir, 'new'));
    assert.deepEqual(files(path.join(maildir, 'new')), [path.basename(file)]);
    assert.deepEqual(files(path.join(maildir, 'tmp')), []);
    assert.deepEqual(files(path.join(maildir, 'cur')), []);
    assert.equal(readFileSync(file, 'utf8'), 'Return-Path: <a@example.net>\nSubject: hello\nFrom: a@example.net\n\nline one\nline two\n');
    assert.equal(statSync(maildir).mode & 0o777, 0o700);
    assert.equal(statSync(path.join(maildir, 'new')).mode & 0o777, 0o700);
    assert.equal(statSync(file).mode & 0o077, 0, 'the message is readable by its owner only');
    assert.match(path.basename(file), /^\d+\.M\d+P\d+_\d+R[0-9a-f]+\.mx\.example\.org$/);
  });

  test('writes Return-Path: <> for the null sender and strips line breaks from the sender', async () => {
    const mailRoot = freshRoot();
    const a = await deliverToMaildir({ mailRoot, domain: 'example.org', mailbox: 'bob', sender: '', hostname: 'h', message: chunks('X: 1\r\n\r\nbody\r\n') });
    assert.ok(readFileSync(a, 'utf8').startsWith('Return-Path: <>\nX: 1\n'));
    const b = await deliverToMaildir({ mailRoot, domain: 'example.org', mailbox: 'bob', sender: 'x@y\r\nBcc: z', hostname: 'h', message: chunks('X: 1\r\n\r\nb\r\n') });
    assert.equal(readFileSync(b, 'utf8').split('\n')[0], 'Return-Path: <x@yBcc: z>');
  });

  test('a CRLF split across two chunks becomes one LF, and a lone CR is kept', async () => {
    const mailRoot = freshRoot();
    const file = await deliverToMaildir({
      mailRoot, domain: 'example.org', mailbox: 'carol', sender: 's@x', hostname: 'h',
      message: chunks('A: 1\r', '\n\r', '\nbody\r', '', '\nbare\rcr\r'),
    });
    assert.equal(readFileSync(file, 'utf8'), 'Return-Path: <s@x>\nA: 1\n\nbody\nbare\rcr\r');
  });

  test('two deliveries to one mailbox get two distinct files', async () => {
    const mailRoot = freshRoot();
    const opts = { mailRoot, domain: 'example.org', mailbox: 'dave', sender: 's@x', hostname: 'h' };
    const [a, b] = await Promise.all([deliverToMaildir({ ...opts, message: chunks('1') }), deliverToMaildir({ ...opts, message: chunks('2') })]);
    assert.notEqual(a, b);
    assert.equal(files(path.join(mailRoot, 'example.org', 'dave', 'new')).length, 2);
  });

  test('a message stream failing midway throws and leaves nothing in new/ or tmp/', async () => {
    const mailRoot = freshRoot();
    await deliverToMaildir({ mailRoot, domain: 'example.org', mailbox: 'erin', sender: 's', hostname: 'h', message: chunks('first\r\n') });
    const failing = new Readable({
      read() {
        this.push(Buffer.from('partial\r\n'));
        this.destroy(new Error('queue file unreadable'));
      },
    });
    await assert.rejects(deliverToMaildir({ mailRoot, domain: 'example.org', mailbox: 'erin', sender: 's', hostname: 'h', message: failing }), /queue file unreadable/);
    const maildir = path.join(mailRoot, 'example.org', 'erin');
    assert.equal(files(path.join(maildir, 'new')).length, 1, 'only the earlier message');
    assert.deepEqual(files(path.join(maildir, 'tmp')), []);
  });

  test('a mail root below a regular file throws and creates nothing', async () => {
    const blocker = path.join(freshRoot() + '-file');
    writeFileSync(blocker, 'not a directory');
    const mailRoot = path.join(blocker, 'mail');
    await assert.rejects(deliverToMaildir({ mailRoot, domain: 'example.org', mailbox: 'f', sender: 's', hostname: 'h', message: chunks('x') }), { code: 'ENOTDIR' });
    assert.equal(readFileSync(blocker, 'utf8'), 'not a directory');
  });

  test('refuses mailbox and domain names that would escape the mail root', async () => {
    const mailRoot = freshRoot();
    for (const [domain, mailbox] of [['example.org', '..'], ['..', 'x'], ['example.org', 'a/b'], ['a/b', 'x']] as const) {
      await assert.rejects(deliverToMaildir({ mailRoot, domain, mailbox, sender: 's', hostname: 'h', message: chunks('x') }), /unsafe/);
    }
    assert.equal(existsSync(mailRoot), false);
  });
});

describe('CrlfToLf', () => {
  test('gives the same output for every way of splitting the input in two', () => {
    const input = Buffer.from('a\r\nb\rc\r\n\r\n\r\r\nd\r');
    const expected = 'a\nb\rc\n\n\r\nd\r';
    for (let cut = 0; cut <= input.length; cut++) {
      const c = new CrlfToLf();
      const out = Buffer.concat([c.push(input.subarray(0, cut)), c.push(input.subarray(cut)), c.end()]).toString();
      assert.equal(out, expected, `cut at ${cut}`);
    }
  });
});

function outbound(recipients: string[], body = MESSAGE, from = 'sender@example.net'): OutboundMessage {
  return { from, recipients, size: Buffer.byteLength(body), open: () => chunks(body), queueId: 'Q1' };
}

describe('MaildirTransport', () => {
  const domains = [
    DomainSchema.parse({ name: 'example.org', mailboxes: ['alice', 'bob'], aliases: { root: 'alice', hostmaster: 'alice' } }),
    DomainSchema.parse({ name: 'open.test' }),
    DomainSchema.parse({ name: 'relayed.test', delivery: 'forward', forwardTo: { host: 'mail.relayed.test' } }),
  ];

  test('answers each recipient: delivered, unknown mailbox failed with 5.1.1, non-local domain deferred', async () => {
    const mailRoot = freshRoot();
    const t = new MaildirTransport({ mailRoot, hostname: 'mx.example.org', domains, logger: silentLogger() });
    const recipients = ['alice@example.org', 'nobody@example.org', 'bob+x@EXAMPLE.org', 'any.one@open.test', 'x@elsewhere.test', 'y@relayed.test'];
    const results = await t.deliver(outbound(recipients));

    assert.deepEqual(results.map((r) => r.address), recipients);
    assert.deepEqual(results.map((r) => r.outcome), ['delivered', 'failed', 'delivered', 'delivered', 'deferred', 'deferred']);
    assert.match(results[1]!.reply, /^550 5\.1\.1 /);
    assert.match(results[4]!.reply, /^451 4\./);
    assert.equal(files(path.join(mailRoot, 'example.org', 'bob', 'new')).length, 1);
    assert.equal(files(path.join(mailRoot, 'open.test', 'any.one', 'new')).length, 1);
    assert.equal(existsSync(path.join(mailRoot, 'example.org', 'nobody')), false);
    assert.equal(existsSync(path.join(mailRoot, 'relayed.test')), false, 'a forward domain is never stored locally');
    await t.close();
  });

  test('recipients that resolve to the same mailbox get one copy and are all delivered', async () => {
    const mailRoot = freshRoot();
    const t = new MaildirTransport({ mailRoot, hostname: 'h', domains, logger: silentLogger() });
    const results = await t.deliver(outbound(['root@example.org', 'Alice@example.org', 'hostmaster@example.org', 'alice+tag@example.org']));
    assert.deepEqual(results.map((r) => r.outcome), ['delivered', 'delivered', 'delivered', 'delivered']);
    const copies = files(path.join(mailRoot, 'example.org', 'alice', 'new'));
    assert.equal(copies.length, 1);
    assert.ok(readFileSync(path.join(mailRoot, 'example.org', 'alice', 'new', copies[0]!), 'utf8').startsWith('Return-Path: <sender@example.net>\n'));
  });

  test('a recipient whose alias became a list during the attempt is written to every member, and is delivered only when all were', async () => {
    const listDomains = [DomainSchema.parse({ name: 'example.org', mailboxes: ['alice', 'bob', 'carol'], aliases: { team: ['alice', 'bob'] } })];
    const mailRoot = freshRoot();
    const t = new MaildirTransport({ mailRoot, hostname: 'h', domains: listDomains, logger: silentLogger() });
    const [team] = await t.deliver(outbound(['team@example.org']));
    assert.equal(team!.outcome, 'delivered');
    for (const member of ['alice', 'bob']) assert.equal(files(path.join(mailRoot, 'example.org', member, 'new')).length, 1, member);

    // bob's Maildir cannot be made: the recipient is deferred, though alice's copy was written
    const blocked = freshRoot();
    mkdirSync(path.join(blocked, 'example.org'), { recursive: true });
    writeFileSync(path.join(blocked, 'example.org', 'bob'), '');
    const blockedTransport = new MaildirTransport({ mailRoot: blocked, hostname: 'h', domains: listDomains, logger: silentLogger() });
    const [deferred, carol] = await blockedTransport.deliver(outbound(['team@example.org', 'carol@example.org']));
    assert.equal(deferred!.outcome, 'deferred');
    assert.match(deferred!.reply, /^451 4\.3\.0 local delivery failed: /);
    assert.equal(carol!.outcome, 'delivered');
    assert.equal(files(path.join(blocked, 'example.org', 'alice', 'new')).length, 1);
  });

  test('a recipient whose alias became a forward during the attempt is deferred, to be sent on at the next one', async () => {
    const forwarding = [DomainSchema.parse({ name: 'example.org', aliases: { abuse: 'ops@example.net', team: ['alice', 'lead@example.net'] } })];
    const mailRoot = freshRoot();
    const t = new MaildirTransport({ mailRoot, hostname: 'h', domains: forwarding, logger: silentLogger() });
    const results = await t.deliver(outbound(['abuse@example.org', 'team@example.org', 'alice@example.org']));
    assert.deepEqual(results.map((r) => r.outcome), ['deferred', 'deferred', 'delivered']);
    assert.match(results[0]!.reply, /^451 4\.3\.0 its alias changed while it was queued/);
    assert.equal(existsSync(path.join(mailRoot, 'example.org', 'abuse')), false);
  });

  test('a local I/O error defers the recipients with 451 4.3.0 and no file path in the reply', async () => {
    const blocker = freshRoot() + '-file';
    writeFileSync(blocker, '');
    const t = new MaildirTransport({ mailRoot: path.join(blocker, 'mail'), hostname: 'h', domains, logger: silentLogger() });
    const results = await t.deliver(outbound(['alice@example.org', 'root@example.org', 'ghost@example.org']));
    assert.deepEqual(results.map((r) => r.outcome), ['deferred', 'deferred', 'failed']);
    assert.match(results[0]!.reply, /^451 4\.3\.0 .*ENOTDIR/);
    assert.equal(results[0]!.reply.includes(blocker), false);
  });
});
