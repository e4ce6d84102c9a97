/**
 * Peer tests with Postfix, the most common MTA the relay sits between: a
 * private Postfix instance that relays all its mail to the relay (a customer's
 * existing mail server using the relay as its smarthost), and a private
 * Postfix instance as the destination the relay delivers to. Postfix's SMTP
 * client and server are strict, independent implementations (pipelining,
 * STARTTLS, enhanced status codes, 4xx handling), and its logs and Maildir show
 * what really crossed the wire. Mail is injected with Postfix's smtp-source.
 *
 * Needs the Debian packages postfix and openssl (installed by .ci/run). All
 * traffic stays on 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { postfixAvailable, runSmtpSource, startPostfix, waitUntil, type PostfixInstance, type PostfixOptions } from '../helpers/postfix';
import { removeDir, startRelayProcess, writeTempDir, type LogLine, type RelayProcess } from '../helpers/relay-process';
import { freePort } from '../helpers/ports';
import { SmtpDialog } from '../helpers/smtp-dialog';

const MESSAGES = 20;

function relayConfig(dir: string, destinationPort: number): string {
  return `
hostname: relay.test
listeners:
  - { role: mx, address: 127.0.0.1, port: 0 }
  - { role: submission, address: 127.0.0.1, port: 0, tls: starttls }
domains:
  - { name: localhost, delivery: maildir }
relay: { networks: [127.0.0.0/8] }
paths: { spool: ${dir}/spool, mail: ${dir}/mail, state: ${dir}/state }
delivery:
  allowedDestinations: [127.0.0.0/8]
  routes: { "dest.test": { host: 127.0.0.1, port: ${destinationPort}, tls: opportunistic } }
  retry: { minBackoffMs: 1000, maxBackoffMs: 2000 }
`;
}

function requirePostfix(): void {
  if (!postfixAvailable()) throw new Error('peer tests need the Debian packages postfix and openssl (see .ci/run)');
}

function events(relay: RelayProcess, name: string): LogLine[] {
  return relay.logLines().filter((l) => l.event === name);
}

/**
 * Hooks for a suite with the relay (config from `relayYaml`) in front of a private
 * Postfix destination; the returned fields are set once `before` has run.
 */
function relayBeforePostfix(name: string, destinationOptions: PostfixOptions, relayYaml: (dir: string, destinationPort: number) => string): { dir: string; relay: RelayProcess; destination: PostfixInstance } {
  const world = {} as { dir: string; relay: RelayProcess; destination: PostfixInstance };
  before(async () => {
    requirePostfix();
    world.dir = writeTempDir(name);
    for (const sub of ['spool', 'mail', 'state']) mkdirSync(join(world.dir, sub));
    world.destination = await startPostfix(destinationOptions);
    world.relay = await startRelayProcess(relayYaml(world.dir, world.destination.port));
  });
  after(async () => {
    await world.relay?.stop().catch((err: unknown) => console.error(err));
    await world.destination?.stop();
    if (world.dir) removeDir(world.dir);
  });
  return world;
}

describe('a Postfix sender relaying through the relay to a Postfix destination', () => {
  let dir: string;
  let relay: RelayProcess;
  let sender: PostfixInstance;
  let destination: PostfixInstance;

  before(async () => {
    requirePostfix();
    dir = writeTempDir('ownrelay-postfix');
    for (const sub of ['spool', 'mail', 'state']) mkdirSync(join(dir, sub));
    destination = await startPostfix({ hostname: 'dest.test', destinationDomains: ['dest.test'], serverTls: true });
    relay = await startRelayProcess(relayConfig(dir, destination.port));
    sender = await startPostfix({
      hostname: 'sender.test',
      relayhost: { host: '127.0.0.1', port: relay.ports[1]! },
      clientTls: 'may',
      main: { smtp_tls_loglevel: '1' },
    });
  });

  after(async () => {
    await relay?.stop().catch((err: unknown) => console.error(err));
    await sender?.stop();
    await destination?.stop();
    if (dir) removeDir(dir);
  });

  test(`${MESSAGES} messages injected into the sender all arrive in the destination mailbox, passed on by the relay over STARTTLS`, { timeout: 120_000 }, async () => {
    const injected = await runSmtpSource({ port: sender.port, messages: MESSAGES, sessions: 4, size: 2048, from: 'app@sender.test', to: 'user@dest.test' });
    assert.equal(injected.code, 0, `smtp-source into the sender failed: ${injected.stdout}${injected.stderr}`);

    await destination.waitForDelivered(MESSAGES, 90_000);
    assert.equal(destination.deliveredCount(), MESSAGES, 'no message is lost or duplicated');
    for (const message of destination.deliveredMessages()) {
      // Newest Received first: the destination got it from the relay over TLS, the relay got it from the sender.
      assert.match(message, /^Received: from relay\.test \([^)]*\[127\.0\.0\.1\]\)\s+by dest\.test \(Postfix\) with ESMTPS/m);
      assert.match(message, /^Received: from client\.test [\s\S]*?by sender\.test \(Postfix\)/m);
    }
    // The sender handed every message to the relay over TLS and has nothing left in its queue
    // (Postfix writes its log lines on its own time: wait for the last ones).
    const sentLines = () => (sender.log().match(/relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+, .*status=sent/g) ?? []).length;
    await waitUntil(() => sentLines() >= MESSAGES, 10_000, () => `the sender logged ${sentLines()} of ${MESSAGES} as sent`);
    assert.match(sender.log(), /TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:\d+/);
    assert.equal(sentLines(), MESSAGES);
    await waitUntil(() => sender.queuedCount() === 0, 10_000, () => `sender still queues ${sender.queuedCount()} messages`);
    assert.ok(events(relay, 'accepted').length >= MESSAGES, 'the relay logged each message it accepted');
  });
});

describe('the relay delivering to a Postfix destination that first answers 450 for a recipient', () => {
  const world = relayBeforePostfix('ownrelay-postfix-retry', { hostname: 'dest.test', destinationDomains: ['dest.test'], recipientAccess: { 'later@dest.test': '450 4.2.1 Mailbox busy, try again later' } }, relayConfig);

  test('the message is deferred, kept, and delivered by a later retry once Postfix accepts the recipient', { timeout: 120_000 }, async () => {
    const { relay, destination } = world;
    const sent = await runSmtpSource({ port: relay.ports[1]!, messages: 1, from: 'app@client.test', to: 'later@dest.test' });
    assert.equal(sent.code, 0, `the relay must accept the message: ${sent.stdout}${sent.stderr}`);

    const deferred = await relay.waitForLog((l) => l.event === 'deferred', 30_000);
    assert.match(String(deferred.reply), /^450 4\.2\.1 /);
    // Postfix writes its log line on its own time, maybe after the relay has logged the deferral
    await waitUntil(() => countRejects(destination) >= 1, 10_000, () => `no reject in the Postfix log:\n${destination.log()}`);
    assert.match(destination.log(), /NOQUEUE: reject: RCPT from [^:]*: 450 4\.2\.1 <later@dest\.test>: Recipient address rejected: Mailbox busy/);
    assert.equal(destination.deliveredCount(), 0, 'nothing is delivered while Postfix answers 450');
    assert.equal(events(relay, 'bounced').length, 0, 'a 4xx reply is never a bounce');

    // Let at least one retry meet the 450 too, then make Postfix accept the recipient.
    await waitUntil(() => countRejects(destination) >= 2, 30_000, () => `only ${countRejects(destination)} attempt(s) reached Postfix; relay output:\n${relay.output()}`);
    await destination.setRecipientAccess({});

    const queueId = deferred.queueId;
    const delivered = await relay.waitForLog((l) => l.event === 'delivered' && (queueId === undefined || l.queueId === queueId), 30_000);
    assert.ok(delivered);
    await destination.waitForDelivered(1, 15_000);
    const [message] = destination.deliveredMessages();
    assert.match(message!, /^Delivered-To: later@dest\.test$/m);
    assert.equal(events(relay, 'bounced').length, 0);
  });
});

describe('the relay delivering to a Postfix destination that takes two recipients per transaction', () => {
  const world = relayBeforePostfix('ownrelay-postfix-rcpt-limit', { hostname: 'dest.test', destinationDomains: ['dest.test'], main: { smtpd_recipient_limit: '2' } }, relayConfig);

  test('a message to five recipients reaches all five at once, in three transactions, with no deferral', { timeout: 60_000 }, async () => {
    const { relay, destination } = world;
    const sent = await runSmtpSource({ port: relay.ports[1]!, messages: 1, recipients: 5, from: 'app@client.test', to: 'user@dest.test' });
    assert.equal(sent.code, 0, `the relay must accept the message: ${sent.stdout}${sent.stderr}`);

    const five = ['2user@dest.test', '3user@dest.test', '4user@dest.test', '5user@dest.test', 'user@dest.test'];
    await destination.waitForDelivered(5, 30_000);
    const deliveredTo = destination.deliveredMessages().map((message) => /^Delivered-To: (.*)$/m.exec(message)?.[1]);
    assert.deepEqual(deliveredTo.sort(), five);
    const delivered = events(relay, 'delivered').flatMap((l) => l.to as string[]);
    assert.deepEqual(delivered.sort(), five);
    assert.equal(events(relay, 'deferred').length, 0, `nothing waits for a retry: ${JSON.stringify(events(relay, 'deferred'))}`);
    // Postfix refused the third recipient of each full transaction as too many; its cleanup logs each transaction's message
    const transactions = () => (destination.log().match(/: message-id=/g) ?? []).length;
    await waitUntil(() => transactions() >= 3, 10_000, () => destination.log());
    assert.equal(transactions(), 3, `three transactions: ${destination.log()}`);
  });
});

describe('a forward domain whose next hop is Postfix, with verifyRecipients', () => {
  const world = relayBeforePostfix('ownrelay-postfix-verify', { hostname: 'store.test', destinationDomains: ['fwd.test'], recipientAccess: { 'ghost@fwd.test': '550 5.1.1 User unknown' } }, (dir, port) => `
hostname: relay.test
listeners:
  - { role: mx, address: 127.0.0.1, port: 0, earlyTalkerCheck: false }
domains:
  - { name: fwd.test, delivery: forward, forwardTo: { host: 127.0.0.1, port: ${port}, tls: none }, verifyRecipients: true }
relay: { networks: [192.0.2.0/24] }
paths: { spool: ${dir}/spool, mail: ${dir}/mail, state: ${dir}/state }
delivery:
  allowedDestinations: [127.0.0.0/8]
`);

  test('Postfix\'s answer to a probe decides the RCPT: a user it refuses gets 550 5.1.1, the message goes to the others', { timeout: 60_000 }, async () => {
    const { relay, destination } = world;
    const dialog = await SmtpDialog.connect(relay.ports[0]!);
    try {
      await dialog.read();
      await dialog.command('EHLO client.test');
      assert.equal((await dialog.command('MAIL FROM:<someone@elsewhere.test>')).code, 250);
      assert.equal((await dialog.command('RCPT TO:<ghost@fwd.test>')).text, '550 5.1.1 <ghost@fwd.test>: Recipient address rejected: undeliverable address');
      assert.equal((await dialog.command('RCPT TO:<user@fwd.test>')).code, 250);
      assert.equal((await dialog.command('DATA')).code, 354);
      dialog.write('Subject: verified\r\n\r\nhello\r\n.\r\n');
      assert.equal((await dialog.read()).code, 250);
      await dialog.command('QUIT');
    } finally {
      dialog.close();
    }
    await destination.waitForDelivered(1, 30_000);
    assert.match(destination.deliveredMessages()[0]!, /^Delivered-To: user@fwd\.test$/m);
    // the probes: the null sender, refused or accepted at RCPT, no message
    await waitUntil(() => /reject: RCPT from [^:]*: 550 5\.1\.1 <ghost@fwd\.test>: Recipient address rejected: User unknown; from=<> to=<ghost@fwd\.test>/.test(destination.log()), 10_000, () => destination.log());
    await relay.waitForLog((l) => l.event === 'delivered', 30_000);
    assert.equal(destination.deliveredCount(), 1);
    const rejected = relay.logLines().find((l) => l.event === 'rejected' && l.to === 'ghost@fwd.test');
    assert.match(String(rejected?.reason), /^127\.0\.0\.1 refused <ghost@fwd\.test>: 550 5\.1\.1 <ghost@fwd\.test>: Recipient address rejected: User unknown$/);
  });
});

describe('DSN parameters passed on to a Postfix destination that offers DSN', () => {
  let dir: string;
  let relay: RelayProcess;
  let destination: PostfixInstance;

  before(async () => {
    requirePostfix();
    dir = writeTempDir('ownrelay-postfix-dsn');
    for (const sub of ['spool', 'mail', 'state']) mkdirSync(join(dir, sub));
    // Postfix sends the notices it writes (for mail of other domains) back through the relay
    const relayPort = await freePort();
    destination = await startPostfix({ hostname: 'dest.test', destinationDomains: ['dest.test'], relayhost: { host: '127.0.0.1', port: relayPort } });
    relay = await startRelayProcess(`
hostname: relay.test
listeners:
  - { role: mx, address: 127.0.0.1, port: ${relayPort}, earlyTalkerCheck: false }
domains:
  - { name: sender.test, delivery: maildir, mailboxes: [alice] }
relay: { networks: [127.0.0.0/8] }
paths: { spool: ${dir}/spool, mail: ${dir}/mail, state: ${dir}/state }
delivery:
  allowedDestinations: [127.0.0.0/8]
  routes: { "dest.test": { host: 127.0.0.1, port: ${destination.port}, tls: none } }
`);
  });

  after(async () => {
    await relay?.stop().catch((err: unknown) => console.error(err));
    await destination?.stop();
    if (dir) removeDir(dir);
  });

  test("NOTIFY=SUCCESS, ORCPT and ENVID reach Postfix, whose own success notice comes back through the relay to the sender's mailbox", { timeout: 120_000 }, async () => {
    const dialog = await SmtpDialog.connect(relay.ports[0]!);
    try {
      assert.equal((await dialog.read()).code, 220);
      await dialog.command('EHLO client.test');
      assert.equal((await dialog.command('MAIL FROM:<alice@sender.test> ENVID=order+2B99')).code, 250);
      assert.equal((await dialog.command('RCPT TO:<user@dest.test> NOTIFY=SUCCESS ORCPT=rfc822;list@sender.test')).code, 250);
      assert.equal((await dialog.command('DATA')).code, 354);
      dialog.write('Subject: tell me when it arrives\r\n\r\nhello\r\n.\r\n');
      assert.equal((await dialog.read()).code, 250);
    } finally {
      dialog.close();
    }
    await destination.waitForDelivered(1, 30_000);
    const mailbox = join(dir, 'mail', 'sender.test', 'alice', 'new');
    const notices = () => {
      try {
        return readdirSync(mailbox).map((name) => readFileSync(join(mailbox, name), 'utf8'));
      } catch {
        return [];
      }
    };
    await waitUntil(() => notices().length > 0, 60_000, () => `no notice in the sender's mailbox; Postfix log:\n${destination.log()}`);
    const [notice] = notices();
    // written by Postfix, which got the parameters from the relay: the relay itself owes no notice
    assert.match(notice!, /^Reporting-MTA: dns; ?dest\.test$/m);
    assert.match(notice!, /^Original-Envelope-Id: order\+99$/m);
    assert.match(notice!, /^Original-Recipient: rfc822; ?list@sender\.test$/m);
    assert.match(notice!, /^Final-Recipient: rfc822; ?user@dest\.test$/m);
    assert.match(notice!, /^Action: delivered$/m);
    assert.equal(events(relay, 'success-notice').length, 0);
  });
});

function countRejects(destination: PostfixInstance): number {
  return (destination.log().match(/NOQUEUE: reject: RCPT .*<later@dest\.test>/g) ?? []).length;
}
