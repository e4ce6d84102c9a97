/**
 * Delivery end to end on loopback: nodemailer submits with AUTH over STARTTLS,
 * the relay finds the destination's MX through a real DNS server (in-process, on
 * 127.0.0.1) and delivers to a real smtp-server acting as that MX. Retries,
 * per-recipient results and DSNs are checked on what arrives and what is left
 * in the spool.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { hashPassword } from '../../server/stages/password';
import { startDnsServer, type DnsServerHandle } from '../helpers/dns-server';
import { startDestination, type DestinationServer } from '../helpers/destination-server';
import { startGatedDestination } from '../helpers/gated-destination';
import { runCli, runCliJson } from '../helpers/ownrelay-cli';
import type { RelayStatus } from '../../server/admin/admin-api';
import { filesIn, spoolCounts, waitFor, waitForDrainedSpool } from '../helpers/spool-files';
import { startTestRelay, type TestRelay } from '../helpers/test-relay';

let dns: DnsServerHandle;
let passwordHash: string;

before(async () => {
  passwordHash = await hashPassword('app-secret', 10);
  dns = await startDnsServer({
    'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] },
    'mx.dest.test': { A: ['127.0.0.1'] },
    'nomx.test': { A: ['127.0.0.1'] },
    'nullmx.test': { MX: [{ exchange: '.', priority: 0 }] },
  });
});

after(async () => dns.close());

async function relayTo(destination: Pick<DestinationServer, 'port'>, extra: Record<string, unknown> = {}): Promise<TestRelay> {
  return startTestRelay(
    () => ({
      dns: { servers: dns.servers },
      users: [{ name: 'app', passwordHash, senders: ['@relay.test'] }],
      ...extra,
    }),
    { mxPort: destination.port },
  );
}

function submitter(relay: TestRelay) {
  return nodemailer.createTransport({
    host: '127.0.0.1',
    port: relay.ports[1],
    secure: false,
    requireTLS: true,
    auth: { user: 'app', pass: 'app-secret' },
    tls: { rejectUnauthorized: false },
  });
}

async function scrapeMetrics(relay: TestRelay): Promise<string> {
  const port = (await relay.waitForLog((l) => l.event === 'metrics-listening')).port as number;
  return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
}

async function mailboxFiles(relay: TestRelay, mailbox: string): Promise<string[]> {
  const dir = join(relay.dir, 'mail', 'relay.test', mailbox, 'new');
  return (await filesIn(dir)).map((name) => join(dir, name));
}

/** The first message to arrive in `mailbox` (such as a DSN to the sender), once there is one. */
async function firstMailboxFile(relay: TestRelay, mailbox: string): Promise<string> {
  const [first] = await waitFor(async () => {
    const files = await mailboxFiles(relay, mailbox);
    return files.length > 0 ? files : undefined;
  });
  return first!;
}

test('a message submitted with AUTH over STARTTLS is delivered to the MX found in DNS, over TLS, unchanged', async () => {
  const destination = await startDestination();
  const relay = await relayTo(destination);
  try {
    const info = await submitter(relay).sendMail({
      from: 'app@relay.test',
      to: 'carol@dest.test',
      subject: 'hello',
      text: 'line one\n.line with a leading dot\n',
      messageId: '<m1@relay.test>',
    });
    assert.match(info.response, /^250 2\.0\.0 Ok: queued as /);
    const [message] = await destination.waitForMessages(1);
    assert.equal(message!.from, 'app@relay.test');
    assert.deepEqual(message!.to, ['carol@dest.test']);
    assert.equal(message!.secure, true, 'delivered over STARTTLS');
    const text = message!.raw.toString();
    assert.match(text, /^Received: from \S+ \(\[127\.0\.0\.1\]\)\r\n\tby relay\.test \(ownrelay\) with ESMTPSA id /);
    assert.match(text, /Message-ID: <m1@relay\.test>/);
    assert.match(text, /\r\n\.line with a leading dot\r\n/);
    await relay.waitForLog((l) => l.event === 'delivered');
    await waitForDrainedSpool(join(relay.dir, 'spool'));
    assert.deepEqual(await spoolCounts(join(relay.dir, 'spool')), { tmp: 0, incoming: 0, active: 0, deferred: 0, hold: 0, corrupt: 0 });
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('submitted mail without Date or Message-ID gets them (RFC 6409); mail that has them, or comes from outside, is left as it is', async () => {
  const destination = await startDestination();
  const relay = await relayTo(destination);
  try {
    const sent = await submitter(relay).sendMail({ envelope: { from: 'app@relay.test', to: ['carol@dest.test'] }, raw: 'Subject: bare\r\nFrom: app@relay.test\r\n\r\nno date, no id\r\n' });
    const queueId = /queued as (\S+)/.exec(sent.response)![1]!;
    await submitter(relay).sendMail({ from: 'app@relay.test', to: 'carol@dest.test', subject: 'complete', text: 'x', messageId: '<mine@relay.test>', date: new Date('2026-01-02T03:04:05Z') });
    const [bare, complete] = await destination.waitForMessages(2);
    const bareText = bare!.raw.toString('latin1');
    assert.equal(bareText.match(/^Message-ID: /gim)?.length, 1);
    assert.match(bareText, new RegExp(`^Message-ID: <${queueId}@relay\\.test>\r$`, 'm'));
    assert.match(bareText, /^Date: \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000\r$/m);
    // the trace fields stay one block at the top: the relay's Received first, the added fields below it
    const belowReceived = /^Received: from [^\r]*\r\n(?:\t[^\r]*\r\n)*(?:Date|Message-ID): [^\r]*\r\n(?:Date|Message-ID): [^\r]*\r\nSubject: bare\r\n/;
    assert.match(bareText, belowReceived);
    const completeText = complete!.raw.toString('latin1');
    assert.deepEqual(completeText.match(/^Message-ID: .*$/gim), ['Message-ID: <mine@relay.test>']);
    assert.equal(completeText.match(/^Date: /gim)?.length, 1);
    assert.match(completeText, /^Date: Fri, 02 Jan 2026 03:04:05 \+0000\r$/m);

    // a message too large to keep in memory gets them too (the envelope is updated in the file)
    const bigBody = `${'z'.repeat(76)}\r\n`.repeat(20_000);
    const sentBig = await submitter(relay).sendMail({ envelope: { from: 'app@relay.test', to: ['carol@dest.test'] }, raw: `Subject: big\r\n\r\n${bigBody}` });
    const bigId = /queued as (\S+)/.exec(sentBig.response)![1]!;
    const [, , bigMessage] = await destination.waitForMessages(3);
    assert.match(bigMessage!.raw.toString('latin1'), new RegExp(`^Message-ID: <${bigId}@relay\\.test>\r$`, 'm'));
    assert.match(bigMessage!.raw.toString('latin1'), /^Received: from [^\r]*\r\n(?:\t[^\r]*\r\n)*(?:Date|Message-ID): [^\r]*\r\n(?:Date|Message-ID): [^\r]*\r\nSubject: big\r\n/);

    // from outside (not allowed to relay) to a local mailbox: nothing is added
    const outside = nodemailer.createTransport({ host: '127.0.0.1', port: relay.ports[0], secure: false, ignoreTLS: true });
    await outside.sendMail({ envelope: { from: 'someone@elsewhere.test', to: 'alice@relay.test' }, raw: 'Subject: from outside\r\n\r\nx\r\n' });
    const stored = await readFile(await firstMailboxFile(relay, 'alice'), 'utf8');
    assert.match(stored, /Subject: from outside/);
    assert.doesNotMatch(stored, /^(Message-ID|Date):/im);
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('a domain without MX records is delivered to its A record', async () => {
  const destination = await startDestination();
  const relay = await relayTo(destination);
  try {
    await submitter(relay).sendMail({ from: 'app@relay.test', to: 'dave@nomx.test', subject: 'a fallback', text: 'x' });
    const [message] = await destination.waitForMessages(1);
    assert.deepEqual(message!.to, ['dave@nomx.test']);
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('4xx for one recipient defers only that one; the retry delivers it alone, once', async () => {
  const destination = await startDestination({
    rcptPolicy: (address, attempt) => (address === 'later@dest.test' && attempt === 1 ? { code: 450, message: 'mailbox busy, try later' } : undefined),
  });
  const relay = await relayTo(destination);
  try {
    await submitter(relay).sendMail({ from: 'app@relay.test', to: ['now@dest.test', 'later@dest.test'], subject: 'partial', text: 'x' });
    const messages = await destination.waitForMessages(2);
    assert.deepEqual(messages[0]!.to, ['now@dest.test']);
    assert.deepEqual(messages[1]!.to, ['later@dest.test'], 'the retry carries only the deferred recipient');
    const deferred = relay.logs.find((l) => l.event === 'deferred');
    assert.deepEqual(deferred?.to, ['later@dest.test']);
    assert.match(String(deferred?.reply), /^450 /);
    await waitForDrainedSpool(join(relay.dir, 'spool'));
    assert.equal(destination.messages.length, 2);
    assert.deepEqual(await spoolCounts(join(relay.dir, 'spool')), { tmp: 0, incoming: 0, active: 0, deferred: 0, hold: 0, corrupt: 0 });
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('5xx for a recipient sends an RFC 3464 DSN to the sender and delivers the others', async () => {
  const destination = await startDestination({
    rcptPolicy: (address) => (address === 'gone@dest.test' ? { code: 550, message: 'no such user here' } : undefined),
  });
  const relay = await relayTo(destination, {
    listeners: [{ role: 'mx', address: '127.0.0.1', port: 0, earlyTalkerCheck: false }, { role: 'submission', address: '127.0.0.1', port: 0 }],
  });
  try {
    await submitter(relay).sendMail({ from: 'alice@relay.test', to: ['gone@dest.test', 'fine@dest.test'], subject: 'will bounce', text: 'x' });
    await destination.waitForMessages(1);
    const dsnPath = await firstMailboxFile(relay, 'alice');
    const dsn = await readFile(dsnPath, 'utf8');
    assert.match(dsn, /^Return-Path: <>\n/);
    assert.match(dsn, /Content-Type: multipart\/report; report-type=delivery-status;/);
    assert.match(dsn, /Final-Recipient: rfc822; ?gone@dest\.test/);
    assert.match(dsn, /Action: failed/);
    assert.match(dsn, /Status: 5\.1\.1/);
    assert.match(dsn, /Diagnostic-Code: smtp; ?550 5\.1\.1 no such user here/);
    assert.doesNotMatch(dsn, /Final-Recipient: rfc822; ?fine@dest\.test/);
    assert.match(dsn, /Subject: will bounce/, 'the original headers are returned');
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('a null MX domain fails at once with a DSN; mail from the null sender is never bounced', async () => {
  const destination = await startDestination();
  const relay = await relayTo(destination, { relay: { networks: ['127.0.0.0/8'] } });
  try {
    await submitter(relay).sendMail({ from: 'alice@relay.test', to: 'x@nullmx.test', subject: 'to null mx', text: 'x' });
    const dsnPath = await firstMailboxFile(relay, 'alice');
    assert.match(await readFile(dsnPath, 'utf8'), /null MX/i);

    const plain = nodemailer.createTransport({ host: '127.0.0.1', port: relay.ports[0], secure: false, ignoreTLS: true });
    await plain.sendMail({ envelope: { from: '', to: 'y@nullmx.test' }, raw: 'Subject: bounce of a bounce\r\n\r\nx\r\n' });
    const bounced = await relay.waitForLog((l) => l.event === 'bounced' && (l.to as string[])[0] === 'y@nullmx.test');
    assert.equal(bounced.bounceId, undefined);
    await waitForDrainedSpool(join(relay.dir, 'spool'));
    assert.equal((await mailboxFiles(relay, 'alice')).length, 1, 'only the first message bounced');
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('a message still deferred when its queue lifetime ends is bounced as expired', async () => {
  const destination = await startDestination({ rcptPolicy: () => ({ code: 451, message: 'try again later' }) });
  const relay = await relayTo(destination, { delivery: { allowedDestinations: ['127.0.0.0/8'], retry: { minBackoffMs: 100, maxBackoffMs: 200, maxQueueLifetimeMs: 800 } } });
  try {
    await submitter(relay).sendMail({ from: 'alice@relay.test', to: 'slow@dest.test', subject: 'expiring', text: 'x' });
    const dsnPath = await firstMailboxFile(relay, 'alice');
    const dsn = await readFile(dsnPath, 'utf8');
    assert.match(dsn, /expired/);
    assert.match(dsn, /451 4\.3\.0 try again later/);
    const attempts = relay.logs.filter((l) => l.event === 'deferred').length;
    assert.ok(attempts >= 2, `retried before giving up (${attempts} attempts)`);
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('a message still undelivered after delayWarningAfterMs gets one delay warning; it stays queued and is delivered later', async () => {
  let deferring = true;
  const destination = await startDestination({ rcptPolicy: () => (deferring ? { code: 451, message: 'mailbox busy, try later' } : undefined) });
  const relay = await relayTo(destination, { delivery: { allowedDestinations: ['127.0.0.0/8'], retry: { minBackoffMs: 100, maxBackoffMs: 200, delayWarningAfterMs: 400 } } });
  try {
    await submitter(relay).sendMail({ from: 'alice@relay.test', to: 'slow@dest.test', subject: 'taking its time', text: 'x' });
    const warningPath = await firstMailboxFile(relay, 'alice');
    const warning = await readFile(warningPath, 'utf8');
    assert.match(warning, /^Return-Path: <>\n/);
    assert.match(warning, /^Subject: Delayed Mail \(still being retried\)$/m);
    assert.match(warning, /Final-Recipient: rfc822; ?slow@dest\.test/);
    assert.match(warning, /^Action: delayed$/m);
    assert.match(warning, /^Status: 4\.3\.0$/m);
    assert.match(warning, /Diagnostic-Code: smtp; ?451 4\.3\.0 mailbox busy, try later/);
    assert.match(warning, /you do not need to send it again/);
    assert.match(warning, /Subject: taking its time/, 'the original headers are attached');
    const logged = await relay.waitForLog((l) => l.event === 'delay-warning');
    assert.deepEqual(logged.to, ['slow@dest.test']);

    // more attempts, still deferred: no second warning
    const attemptsAtWarning = relay.logs.filter((l) => l.event === 'deferred').length;
    await waitFor(async () => relay.logs.filter((l) => l.event === 'deferred').length >= attemptsAtWarning + 3 || undefined, 10_000, 'three more attempts');
    assert.equal((await mailboxFiles(relay, 'alice')).length, 1, 'one warning per message');
    // between attempts in deferred/, during one in active/ (a move can fall between two directory reads: look again)
    await waitFor(async () => {
      const counts = await spoolCounts(join(relay.dir, 'spool'));
      return counts.deferred + counts.active === 1 || undefined;
    }, 5_000, 'the message still queued');

    deferring = false;
    const [delivered] = await destination.waitForMessages(1);
    assert.match(delivered!.raw.toString(), /Subject: taking its time/);
    assert.equal((await mailboxFiles(relay, 'alice')).length, 1);
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('with delayWarningAfterMs 0, a deferred message never warns its sender', async () => {
  const destination = await startDestination({ rcptPolicy: () => ({ code: 451, message: 'try again later' }) });
  const relay = await relayTo(destination, { delivery: { allowedDestinations: ['127.0.0.0/8'], retry: { minBackoffMs: 100, maxBackoffMs: 100, delayWarningAfterMs: 0 } } });
  try {
    await submitter(relay).sendMail({ from: 'alice@relay.test', to: 'slow@dest.test', subject: 'no warning', text: 'x' });
    await waitFor(async () => relay.logs.filter((l) => l.event === 'deferred').length >= 4 || undefined, 10_000, 'four attempts');
    assert.equal(relay.logs.filter((l) => l.event === 'delay-warning').length, 0);
    assert.equal((await mailboxFiles(relay, 'alice')).length, 0);
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('delivery to a loopback address is refused unless delivery.allowedDestinations allows it', async () => {
  const destination = await startDestination();
  const relay = await relayTo(destination, { delivery: { allowedDestinations: [] } });
  try {
    await submitter(relay).sendMail({ from: 'app@relay.test', to: 'carol@dest.test', subject: 'guarded', text: 'x' });
    const deferred = await relay.waitForLog((l) => l.event === 'deferred');
    assert.match(String(deferred.reply), /allowedDestinations/);
    assert.equal(destination.messages.length, 0);
    assert.equal(destination.connections, 0, 'no connection was even attempted');
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('a smarthost with AUTH over STARTTLS carries all non-local mail', async () => {
  const smarthost = await startDestination({ auth: { user: 'relay-user', pass: 'relay-pass' } });
  const relay = await relayTo(smarthost, {
    delivery: {
      allowedDestinations: ['127.0.0.0/8'],
      smarthost: { host: '127.0.0.1', port: smarthost.port, tls: 'required', verifyCertificate: false, auth: { user: 'relay-user', pass: 'relay-pass' } },
    },
  });
  try {
    await submitter(relay).sendMail({ from: 'app@relay.test', to: 'someone@anywhere.test', subject: 'via smarthost', text: 'x' });
    const [message] = await smarthost.waitForMessages(1);
    assert.equal(message!.user, 'relay-user');
    assert.equal(message!.secure, true);
  } finally {
    await relay.stop();
    await smarthost.close();
  }
});

test('mail for a forward domain is accepted on the MX port and passed to its next hop', async () => {
  const nextHop = await startDestination();
  const relay = await relayTo(nextHop, {
    domains: [{ name: 'corp.test', delivery: 'forward', forwardTo: { host: '127.0.0.1', port: nextHop.port, tls: 'opportunistic' } }],
    relay: { networks: [] },
  });
  try {
    const outsider = nodemailer.createTransport({ host: '127.0.0.1', port: relay.ports[0], secure: false, tls: { rejectUnauthorized: false } });
    await outsider.sendMail({ from: 'someone@elsewhere.test', to: 'staff@corp.test', subject: 'inbound', text: 'x' });
    const [message] = await nextHop.waitForMessages(1);
    assert.deepEqual(message!.to, ['staff@corp.test']);
    assert.equal(message!.from, 'someone@elsewhere.test');
    assert.match(message!.raw.toString(), /^Received: from [^\r]*\r\n\tby relay\.test \(ownrelay\) with ESMTPS id \w+\r\n\t\(using TLSv1\.[23] /);
  } finally {
    await relay.stop();
    await nextHop.close();
  }
});

test('a destination where nothing answers is suspended: the mail behind it is deferred without new attempts, other mail flows, and a flush tries it again', async () => {
  // a host that takes the connection and hangs up before any greeting
  let connections = 0;
  const silent = net.createServer((socket) => {
    connections++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const silentPort = (silent.address() as net.AddressInfo).port;
  const alive = await startDestination();
  const relay = await relayTo(alive, {
    delivery: {
      allowedDestinations: ['127.0.0.0/8'],
      maxPerDestination: 1,
      retry: { minBackoffMs: 60_000, maxBackoffMs: 60_000 },
      routes: {
        'down.test': { host: '127.0.0.1', port: silentPort, tls: 'none' },
        'alive.test': { host: '127.0.0.1', port: alive.port, tls: 'none' },
      },
    },
  });
  try {
    const transport = submitter(relay);
    await Promise.all(Array.from({ length: 6 }, (_, i) => transport.sendMail({ from: 'app@relay.test', to: `user${i}@down.test`, subject: `down ${i}`, text: 'x' })));
    await transport.sendMail({ from: 'app@relay.test', to: 'someone@alive.test', subject: 'alive', text: 'x' });
    await alive.waitForMessages(1);
    const deferredToDown = () => relay.logs.filter((l) => l.event === 'deferred' && String(l.to).includes('@down.test'));
    await waitFor(async () => deferredToDown().length === 6, 10_000, 'six deferrals for down.test');
    assert.equal(connections, 1, 'one attempt found the destination down; the others waited without connecting');
    const suspended = relay.logs.filter((l) => l.event === 'destination-suspended');
    assert.equal(suspended.length, 1);
    assert.equal(suspended[0]!.destination, `127.0.0.1:${silentPort}`);
    assert.equal(deferredToDown().filter((l) => /suspended until \S+ after: /.test(String(l.reply))).length, 5);
    assert.equal((await spoolCounts(join(relay.dir, 'spool'))).deferred, 6);

    // the administrator sees it in the status and the metrics
    const socket = join(relay.dir, 'state', 'admin.sock');
    const status = await runCliJson<RelayStatus>(['--socket', socket, 'status']);
    assert.equal(status.suspendedDestinations.length, 1);
    assert.equal(status.suspendedDestinations[0]!.destination, `127.0.0.1:${silentPort}`);
    assert.ok(Date.parse(status.suspendedDestinations[0]!.until) > Date.now());
    const statusText = await runCli(['--socket', socket, 'status']);
    assert.match(statusText.stdout, new RegExp(`^Suspended: +127\\.0\\.0\\.1:${silentPort} until \\S+ \\(nothing answered: `, 'm'));
    assert.match(await scrapeMetrics(relay), /^ownrelay_destinations_suspended 1$/m);

    // the administrator's flush lifts the suspension: the mail is tried again (and the destination is still down)
    const flushed = await runCli(['--socket', socket, 'queue', 'flush']);
    assert.equal(flushed.code, 0, flushed.stderr);
    await waitFor(async () => relay.logs.filter((l) => l.event === 'destination-suspended').length === 2, 10_000, 'a second suspension after the flush');
    assert.equal(connections, 2);
  } finally {
    await relay.stop();
    await alive.close();
    await new Promise<void>((resolve) => silent.close(() => resolve()));
  }
});

test('mail for a destination whose slots are all taken waits outside the active set: mail for others goes at once, and the waiting mail can still be held', async () => {
  const slow = await startGatedDestination();
  const fast = await startDestination();
  const relay = await relayTo(fast, {
    delivery: {
      allowedDestinations: ['127.0.0.0/8'],
      maxActive: 2,
      maxPerDestination: 1,
      routes: {
        'slow.test': { host: '127.0.0.1', port: slow.port, tls: 'none' },
        'fast.test': { host: '127.0.0.1', port: fast.port, tls: 'none' },
      },
    },
  });
  try {
    const transport = submitter(relay);
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const info = await transport.sendMail({ from: 'app@relay.test', to: `user${i}@slow.test`, subject: `slow ${i}`, text: 'x' });
      ids.push(/queued as (\S+)/.exec(info.response)![1]!);
    }
    await slow.firstRcpt;
    // slow.test's one slot is taken and three messages wait for it; the active set (2) must still have room
    await transport.sendMail({ from: 'app@relay.test', to: 'someone@fast.test', subject: 'fast', text: 'x' });
    await fast.waitForMessages(1);

    // a waiting message is not "being delivered": the administrator can hold it, even the first in line
    const socket = join(relay.dir, 'state', 'admin.sock');
    const held = await runCli(['--socket', socket, 'queue', 'hold', ids[1]!]);
    assert.equal(held.code, 0, held.stdout + held.stderr);
    assert.match(held.stdout, new RegExp(`${ids[1]}: hold`));
    // the two still waiting show in the status and the metrics
    const status = await runCliJson<RelayStatus>(['--socket', socket, 'status']);
    assert.equal(status.queue.waiting, 2);
    assert.match((await runCli(['--socket', socket, 'status'])).stdout, /^Queue: .*; 1 in delivery now, 2 waiting for a busy destination$/m);
    assert.match(await scrapeMetrics(relay), /^ownrelay_messages_waiting_for_slot 2$/m);

    slow.release();
    await waitFor(async () => slow.state.delivered.length === 3, 10_000, 'three messages at slow.test');
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.deepEqual([...slow.state.delivered].sort(), ['user0@slow.test', 'user2@slow.test', 'user3@slow.test'], 'each once, the held one not');
    await waitFor(async () => {
      const counts = await spoolCounts(join(relay.dir, 'spool'));
      return counts.incoming + counts.active + counts.deferred === 0 && counts.hold === 1;
    }, 5000, 'only the held message left');
    assert.equal(relay.relay.spool.io.slabs.counts.lent, 0, 'the memory of every message is back, the held one included');
  } finally {
    await relay.stop();
    await fast.close();
    await slow.close();
  }
});

test('at most ten messages per place in the active set wait for a busy destination; the others stay in line, and every one is delivered once', async () => {
  const slow = await startGatedDestination();
  const relay = await relayTo(slow, {
    delivery: { allowedDestinations: ['127.0.0.0/8'], maxActive: 2, maxPerDestination: 1, routes: { 'slow.test': { host: '127.0.0.1', port: slow.port, tls: 'none' } } },
  });
  try {
    const transport = submitter(relay);
    for (let i = 0; i < 25; i++) await transport.sendMail({ from: 'app@relay.test', to: `user${i}@slow.test`, subject: `slow ${i}`, text: 'x' });
    await slow.firstRcpt;
    const socket = join(relay.dir, 'state', 'admin.sock');
    const status = await waitFor(async () => {
      const s = await runCliJson<RelayStatus>(['--socket', socket, 'status']);
      return s.queue.waiting === 20 ? s : undefined;
    }, 10_000, 'twenty messages waiting');
    assert.equal(status.queue.delivering, 1, 'one delivering; the 25th waits in line, not in the active set');
    assert.equal(status.queue.counts.incoming, 25, 'all still queued');

    slow.release();
    await waitFor(async () => slow.state.delivered.length === 25, 20_000, 'all 25 at the destination');
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(new Set(slow.state.delivered).size, 25, 'each once');
    assert.equal(slow.state.delivered.length, 25);
    assert.equal(relay.relay.spool.io.slabs.counts.lent, 0, 'the memory of every message is back once its attempt ended');
  } finally {
    await relay.stop();
    await slow.close();
  }
});
