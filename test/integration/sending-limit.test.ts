/**
 * Messages per hour per authenticated user: over the limit, MAIL FROM is
 * deferred with 450 4.7.1, or (action hold) the message is accepted into hold/
 * and not delivered, with an alert in the log. Other users are not affected.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { hashPassword } from '../../server/stages/password';
import { startDnsServer, type DnsServerHandle } from '../helpers/dns-server';
import { startDestination } from '../helpers/destination-server';
import { filesIn, spoolCounts } from '../helpers/spool-files';
import { startTestRelay } from '../helpers/test-relay';

let passwordHash: string;
let dns: DnsServerHandle;

before(async () => {
  passwordHash = await hashPassword('secret', 10);
  dns = await startDnsServer({ 'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] }, 'mx.dest.test': { A: ['127.0.0.1'] } });
});

after(async () => dns.close());

function send(port: number, user: string, n: number) {
  return nodemailer
    // short timeouts: a session that stalls fails here, naming its step, instead of waiting out the suite
    .createTransport({ host: '127.0.0.1', port, secure: false, requireTLS: true, auth: { user, pass: 'secret' }, tls: { rejectUnauthorized: false }, connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 20_000 })
    .sendMail({ from: `${user}@relay.test`, to: 'carol@dest.test', subject: `message ${n}`, text: 'hello\n' });
}

test('over its limit, a user is deferred at MAIL FROM; another user still sends', async () => {
  const destination = await startDestination();
  const relay = await startTestRelay(
    () => ({
      dns: { servers: dns.servers },
      users: [
        { name: 'app', passwordHash, senders: ['@relay.test'] },
        { name: 'other', passwordHash, senders: ['@relay.test'] },
      ],
      limits: { sending: { messagesPerHour: 2, action: 'defer' } },
    }),
    { mxPort: destination.port },
  );
  try {
    await send(relay.ports[1]!, 'app', 1);
    await send(relay.ports[1]!, 'app', 2);
    await assert.rejects(send(relay.ports[1]!, 'app', 3), (err: Error & { responseCode?: number; response?: string }) => {
      assert.equal(err.responseCode, 450);
      assert.match(err.response ?? '', /^450 4\.7\.1 Sending limit of 2 messages per hour reached, try again later/);
      return true;
    });
    await send(relay.ports[1]!, 'other', 1);
    assert.equal((await destination.waitForMessages(3)).length, 3);
    const log = await relay.waitForLog((l) => l.event === 'sending-limit');
    assert.equal(log.user, 'app');
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('with action hold, the message over the limit is accepted into hold/ and not delivered, with an alert', async () => {
  const destination = await startDestination();
  const relay = await startTestRelay(
    () => ({
      dns: { servers: dns.servers },
      users: [{ name: 'app', passwordHash, senders: ['@relay.test'], sendingLimit: { messagesPerHour: 1, action: 'hold' } }],
    }),
    { mxPort: destination.port },
  );
  try {
    await send(relay.ports[1]!, 'app', 1);
    const info = await send(relay.ports[1]!, 'app', 2);
    assert.match(info.response, /^250 2\.0\.0 Ok: queued as /);
    const held = await relay.waitForLog((l) => l.event === 'held');
    assert.equal(held.alert, 'sending-limit');
    assert.equal(held.level, 50, 'logged at error level');
    const [delivered] = await destination.waitForMessages(1);
    assert.match(delivered!.raw.toString(), /Subject: message 1/);
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(destination.messages.length, 1, 'the held message is not delivered');
    const spool = join(relay.dir, 'spool');
    assert.deepEqual(await filesIn(join(spool, 'hold')), [String(held.queueId)]);
    assert.equal((await spoolCounts(spool)).hold, 1);
  } finally {
    await relay.stop();
    await destination.close();
  }
});
