/**
 * RFC 3461 delivery status notifications end to end: a raw SMTP client gives
 * NOTIFY, ORCPT, RET and ENVID; the relay delivers to a real smtp-server found
 * through a real DNS server on loopback (with or without DSN offered) or to its
 * local Maildir, and the DSNs that arrive in the sender's mailbox (or do not)
 * are read from disk.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startDnsServer, type DnsServerHandle } from '../helpers/dns-server';
import { startDestination, type DestinationOptions, type DestinationServer } from '../helpers/destination-server';
import { SmtpDialog } from '../helpers/smtp-dialog';
import { filesIn, waitFor, waitForDrainedSpool } from '../helpers/spool-files';
import { startTestRelay, type TestRelay } from '../helpers/test-relay';

let dns: DnsServerHandle;

before(async () => {
  dns = await startDnsServer({
    'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] },
    'mx.dest.test': { A: ['127.0.0.1'] },
  });
});

after(async () => dns.close());

interface World {
  relay: TestRelay;
  destination: DestinationServer;
  stop(): Promise<void>;
}

/** A relay (loopback may relay) whose MX lookups find `destination`. */
async function world(destination: DestinationOptions = {}, extra: Record<string, unknown> = {}): Promise<World> {
  const dest = await startDestination(destination);
  const relay = await startTestRelay(() => ({ dns: { servers: dns.servers }, relay: { networks: ['127.0.0.0/8'] }, ...extra }), { mxPort: dest.port });
  return {
    relay,
    destination: dest,
    async stop() {
      await relay.stop();
      await dest.close();
    },
  };
}

/** Sends one message with these MAIL FROM parameters and RCPT TO lines (address and parameters); returns the queue id. */
async function send(relay: TestRelay, mailParams: string, rcpts: string[], body = 'Subject: dsn test\r\n\r\nthe body text\r\n'): Promise<string> {
  const dialog = await SmtpDialog.connect(relay.ports[0]!);
  try {
    assert.equal((await dialog.read()).code, 220);
    assert.match((await dialog.command('EHLO client.test')).text, /^250-DSN$/m, 'DSN is offered');
    assert.equal((await dialog.command(`MAIL FROM:<alice@relay.test>${mailParams}`)).code, 250);
    for (const rcpt of rcpts) assert.equal((await dialog.command(`RCPT TO:${rcpt}`)).code, 250, rcpt);
    assert.equal((await dialog.command('DATA')).code, 354);
    dialog.write(`${body}.\r\n`);
    const reply = await dialog.read();
    assert.equal(reply.code, 250);
    return /queued as (\S+)/.exec(reply.text)![1]!;
  } finally {
    dialog.close();
  }
}

async function aliceMailbox(relay: TestRelay): Promise<string[]> {
  const dir = join(relay.dir, 'mail', 'relay.test', 'alice', 'new');
  return Promise.all((await filesIn(dir)).sort().map((name) => readFile(join(dir, name), 'utf8')));
}

/** Waits until the spool is empty: every message and notice has been delivered. */
async function drained(relay: TestRelay): Promise<void> {
  await waitForDrainedSpool(join(relay.dir, 'spool'));
}

test('EHLO offers DSN, and malformed DSN parameters get 501 5.5.4 without ending the session', async () => {
  const { relay, stop } = await world();
  const dialog = await SmtpDialog.connect(relay.ports[0]!);
  try {
    await dialog.read();
    await dialog.command('EHLO client.test');
    for (const bad of ['RET=SOME', 'RET', 'ENVID']) assert.match((await dialog.command(`MAIL FROM:<alice@relay.test> ${bad}`)).text, /^501 5\.5\.4 /, bad);
    assert.equal((await dialog.command('MAIL FROM:<alice@relay.test> RET=HDRS ENVID=abc')).code, 250);
    for (const bad of ['NOTIFY=NEVER,SUCCESS', 'NOTIFY=SOMETIMES', 'NOTIFY', 'ORCPT=no-type', 'NOTIFY=SUCCESS NOTIFY=DELAY']) {
      assert.match((await dialog.command(`RCPT TO:<bob@relay.test> ${bad}`)).text, /^501 5\.5\.4 /, bad);
    }
    assert.equal((await dialog.command('RCPT TO:<bob@relay.test> NOTIFY=FAILURE')).code, 250);
  } finally {
    dialog.close();
    await stop();
  }
});

test('NOTIFY=NEVER: a refused recipient gets no bounce, while a recipient without NOTIFY in the same message does', async () => {
  const { relay, destination, stop } = await world({ rcptPolicy: (address) => (address.startsWith('gone') ? { code: 550, message: '5.1.1 no such user' } : undefined) });
  try {
    await send(relay, '', ['<gone-quiet@dest.test> NOTIFY=NEVER', '<gone-loud@dest.test>', '<fine@dest.test> NOTIFY=NEVER']);
    await destination.waitForMessages(1);
    await relay.waitForLog((l) => l.event === 'bounced');
    await drained(relay);
    const mailbox = await aliceMailbox(relay);
    assert.equal(mailbox.length, 1, 'one bounce');
    assert.match(mailbox[0]!, /Final-Recipient: rfc822; gone-loud@dest\.test/);
    assert.doesNotMatch(mailbox[0]!, /gone-quiet/);

    await send(relay, '', ['<gone-again@dest.test> NOTIFY=NEVER']);
    const silent = await relay.waitForLog((l) => l.event === 'bounced' && (l.to as string[])[0] === 'gone-again@dest.test');
    assert.equal(silent.bounceId, undefined);
    assert.match(String(silent.msg), /no DSN \(the sender asked for none/);
    await drained(relay);
    assert.equal((await aliceMailbox(relay)).length, 1, 'still one bounce');
  } finally {
    await stop();
  }
});

test('a server that offers DSN gets RET and ENVID on MAIL FROM and each recipient its own NOTIFY and ORCPT, in one transaction; the relay sends no notice itself', async () => {
  const { relay, destination, stop } = await world();
  try {
    await send(relay, ' RET=HDRS ENVID=batch+2B42', [
      '<one@dest.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;first+2Blist@example.test',
      '<two@dest.test> NOTIFY=NEVER',
      '<three@dest.test>',
    ]);
    const [message] = await destination.waitForMessages(1);
    assert.deepEqual(message!.to, ['one@dest.test', 'two@dest.test', 'three@dest.test'], 'one transaction for all three');
    assert.deepEqual(message!.dsn, { ret: 'HDRS', envid: 'batch+42' });
    assert.deepEqual(message!.rcptDsn, {
      'one@dest.test': { notify: ['SUCCESS', 'FAILURE'], orcpt: 'rfc822;first+list@example.test' },
      'two@dest.test': { notify: ['NEVER'] },
    });
    await drained(relay);
    assert.equal(relay.logs.filter((l) => l.event === 'success-notice').length, 0);
    assert.deepEqual(await aliceMailbox(relay), []);
  } finally {
    await stop();
  }
});

test('NOTIFY=SUCCESS to a server without DSN: the sender is told the message was relayed, with its ENVID and ORCPT', async () => {
  const { relay, destination, stop } = await world({ noDsn: true });
  try {
    const id = await send(relay, ' ENVID=order-17', ['<one@dest.test> NOTIFY=SUCCESS ORCPT=rfc822;list@example.test', '<two@dest.test>']);
    const [message] = await destination.waitForMessages(1);
    assert.deepEqual(message!.rcptDsn, {}, 'no DSN parameters to a server that did not offer DSN');
    const logged = await relay.waitForLog((l) => l.event === 'success-notice');
    assert.deepEqual(logged.to, ['one@dest.test']);
    await drained(relay);
    const [notice, ...more] = await aliceMailbox(relay);
    assert.equal(more.length, 0);
    assert.match(notice!, /^Return-Path: <>\n/);
    assert.match(notice!, /^Subject: Successful Mail Delivery Report$/m);
    assert.match(notice!, /^Original-Envelope-Id: order-17$/m);
    assert.match(notice!, /^Original-Recipient: rfc822; list@example\.test\nFinal-Recipient: rfc822; one@dest\.test\nAction: relayed\nStatus: 2\.6\.0\nRemote-MTA: dns; mx\.dest\.test$/m);
    assert.doesNotMatch(notice!, /two@dest\.test/);
    assert.match(notice!, new RegExp(`X-Ownrelay-Queue-ID: ${id}`));
    assert.match(notice!, /Content-Type: text\/rfc822-headers/);
  } finally {
    await stop();
  }
});

test('NOTIFY=SUCCESS into a local mailbox: Action: delivered', async () => {
  const { relay, stop } = await world();
  try {
    await send(relay, '', ['<bob@relay.test> NOTIFY=SUCCESS,DELAY']);
    await relay.waitForLog((l) => l.event === 'success-notice');
    await drained(relay);
    const [notice] = await aliceMailbox(relay);
    assert.match(notice!, /^Final-Recipient: rfc822; bob@relay\.test\nAction: delivered\nStatus: 2\.0\.0$/m);
    assert.match(notice!, /delivered to the mailboxes of the recipients below/);
  } finally {
    await stop();
  }
});

test('RET=FULL returns the whole message in a bounce; without it only the headers come back', async () => {
  const refuse = { rcptPolicy: (address: string) => (address.startsWith('gone') ? { code: 550, message: '5.1.1 no such user' } : undefined) };
  const { relay, stop } = await world(refuse);
  try {
    await send(relay, ' RET=FULL', ['<gone@dest.test>'], 'Subject: return me whole\r\n\r\nline one of the body\r\n..a dotted line\r\n');
    await relay.waitForLog((l) => l.event === 'bounced');
    await drained(relay);
    const [bounce] = await aliceMailbox(relay);
    assert.match(bounce!, /Content-Type: message\/rfc822\n/);
    assert.match(bounce!, /Subject: return me whole\n\nline one of the body\n\.a dotted line\n/);
    assert.match(bounce!, /Your message is attached\./);

    await send(relay, '', ['<gone-too@dest.test>'], 'Subject: headers only\r\n\r\nsecret body\r\n');
    await relay.waitForLog((l) => l.event === 'bounced' && (l.to as string[])[0] === 'gone-too@dest.test');
    await drained(relay);
    const second = (await aliceMailbox(relay)).find((m) => m.includes('Subject: headers only'));
    assert.ok(second);
    assert.match(second, /Content-Type: text\/rfc822-headers/);
    assert.doesNotMatch(second, /secret body/);
  } finally {
    await stop();
  }
});

test('delay warnings go only to recipients whose NOTIFY asks for DELAY (or who gave none)', async () => {
  let deferring = true;
  const { relay, destination, stop } = await world(
    { rcptPolicy: () => (deferring ? { code: 451, message: '4.3.0 try later' } : undefined) },
    { delivery: { allowedDestinations: ['127.0.0.0/8'], retry: { minBackoffMs: 100, maxBackoffMs: 200, delayWarningAfterMs: 300 } } },
  );
  try {
    await send(relay, '', ['<quiet@dest.test> NOTIFY=FAILURE']);
    await send(relay, '', ['<told@dest.test> NOTIFY=DELAY', '<untold@dest.test> NOTIFY=SUCCESS']);
    const warning = await relay.waitForLog((l) => l.event === 'delay-warning');
    assert.deepEqual(warning.to, ['told@dest.test']);
    // both messages past the warning age, with attempts after it
    await waitFor(async () => relay.logs.filter((l) => l.event === 'deferred').length >= 8 || undefined, 10_000, 'more attempts');
    const mailbox = await aliceMailbox(relay);
    assert.equal(mailbox.length, 1, 'one warning, for told@ only');
    assert.match(mailbox[0]!, /Final-Recipient: rfc822; told@dest\.test/);
    assert.doesNotMatch(mailbox[0]!, /untold@|quiet@/);
    deferring = false;
    await destination.waitForMessages(2);
  } finally {
    await stop();
  }
});

test('the DSN parameters survive a restart in the queue file', async () => {
  const { relay, destination, stop } = await world({ noDsn: true, rcptPolicy: () => ({ code: 451, message: '4.3.0 not now' }) });
  let restarted: TestRelay | undefined;
  try {
    await send(relay, ' ENVID=kept-1', ['<later@dest.test> NOTIFY=SUCCESS ORCPT=rfc822;orig@example.test']);
    await relay.waitForLog((l) => l.event === 'deferred');
    const dir = relay.dir;
    await relay.relay.stop();
    const ok = await startDestination({ noDsn: true });
    restarted = await startTestRelay(() => ({ dns: { servers: dns.servers }, relay: { networks: ['127.0.0.0/8'] } }), { mxPort: ok.port, dir });
    await ok.waitForMessages(1);
    await restarted.waitForLog((l) => l.event === 'success-notice');
    await drained(restarted);
    const dirNotices = join(dir, 'mail', 'relay.test', 'alice', 'new');
    const [notice] = await Promise.all((await filesIn(dirNotices)).map((n) => readFile(join(dirNotices, n), 'utf8')));
    assert.match(notice!, /^Original-Envelope-Id: kept-1$/m);
    assert.match(notice!, /^Original-Recipient: rfc822; orig@example\.test$/m);
    await ok.close();
  } finally {
    await restarted?.stop();
    await destination.close();
    await relay.stop().catch(() => undefined);
  }
});
