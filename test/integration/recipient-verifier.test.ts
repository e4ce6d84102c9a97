/**
 * Recipient verification for forward domains: a stranger's RCPT TO is checked
 * with the domain's next hop (a real smtp-server on loopback that knows its
 * users) before it is accepted; the relay runs in-process with a real spool.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { parseConfig } from '../../server/config/load';
import { openSession } from '../../server/delivery/connection-cache';
import type { CommandChannel } from '../../server/delivery/recipient-verifier';
import { silentLogger } from '../../server/log/logger';
import { startDestination, type DestinationServer } from '../helpers/destination-server';
import { SmtpDialog } from '../helpers/smtp-dialog';
import { spoolCounts } from '../helpers/spool-files';
import { startTestRelay, type TestRelay } from '../helpers/test-relay';
import { join } from 'node:path';

const KNOWN = ['known@fwd.test', 'other@fwd.test', 'postmaster@fwd.test'];

interface Probe {
  /** RCPT TO attempts by address at the next hop */
  rcpts: Map<string, number>;
}

async function nextHop(): Promise<{ destination: DestinationServer; probe: Probe }> {
  const probe: Probe = { rcpts: new Map() };
  const destination = await startDestination({
    rcptPolicy: (address) => {
      probe.rcpts.set(address, (probe.rcpts.get(address) ?? 0) + 1);
      return KNOWN.includes(address) ? undefined : { code: 550, message: `<${address}>: no such user here` };
    },
  });
  return { destination, probe };
}

function relayWith(port: number, networks: string[]): Promise<TestRelay> {
  return startTestRelay(() => ({
    relay: { networks },
    domains: [{ name: 'fwd.test', delivery: 'forward', forwardTo: { host: '127.0.0.1', port, tls: 'none' }, verifyRecipients: true }],
  }));
}

/** Opens a transaction and returns the RCPT replies, then ends it (with a message when `send`). */
async function rcpts(port: number, recipients: string[], send = false): Promise<string[]> {
  const dialog = await SmtpDialog.connect(port);
  try {
    await dialog.read();
    await dialog.command('EHLO client.test');
    assert.equal((await dialog.command('MAIL FROM:<someone@elsewhere.test>')).code, 250);
    const replies: string[] = [];
    for (const recipient of recipients) replies.push((await dialog.command(`RCPT TO:<${recipient}>`)).text);
    if (send) {
      assert.equal((await dialog.command('DATA')).code, 354);
      dialog.write('Subject: hello\r\n\r\nhi\r\n.\r\n');
      assert.equal((await dialog.read()).code, 250);
    }
    await dialog.command('QUIT');
    return replies;
  } finally {
    dialog.close();
  }
}

test('a stranger\'s recipient at a forward domain is accepted only if the next hop takes it; unknown users get 550 5.1.1 at once', async () => {
  const { destination, probe } = await nextHop();
  const relay = await relayWith(destination.port, ['192.0.2.0/24']);
  try {
    const replies = await rcpts(relay.ports[0]!, ['known@fwd.test', 'nobody@fwd.test', 'postmaster@fwd.test'], true);
    assert.match(replies[0]!, /^250 /);
    assert.equal(replies[1], '550 5.1.1 <nobody@fwd.test>: Recipient address rejected: undeliverable address');
    assert.match(replies[2]!, /^250 /);
    assert.equal(probe.rcpts.get('postmaster@fwd.test'), undefined, 'postmaster is not probed');

    // the probes sent no message: the one delivered is the client's, for the two accepted recipients
    const [message] = await destination.waitForMessages(1);
    assert.deepEqual(message!.to.sort(), ['known@fwd.test', 'postmaster@fwd.test']);
    assert.equal(message!.from, 'someone@elsewhere.test');
    await relay.waitForLog((l) => l.event === 'delivered');
    assert.equal(destination.messages.length, 1);
    // the log says why, with the next hop's own reply, which the client does not see
    const refusal = relay.logs.find((l) => l.event === 'rejected' && l.to === 'nobody@fwd.test');
    assert.equal(refusal?.reason, '127.0.0.1 refused <nobody@fwd.test>: 550 5.1.1 <nobody@fwd.test>: no such user here');
    assert.equal(refusal?.code, 550);
    assert.equal(refusal?.from, 'someone@elsewhere.test');

    // answers are cached: asking again does not probe again
    const known = probe.rcpts.get('known@fwd.test');
    assert.deepEqual(await rcpts(relay.ports[0]!, ['nobody@fwd.test', 'known@fwd.test']), ['550 5.1.1 <nobody@fwd.test>: Recipient address rejected: undeliverable address', replies[0]]);
    assert.equal(probe.rcpts.get('nobody@fwd.test'), 1);
    assert.equal(probe.rcpts.get('known@fwd.test'), known);
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('sessions that ask about the same address at once share one probe', async () => {
  const { destination, probe } = await nextHop();
  const relay = await relayWith(destination.port, ['192.0.2.0/24']);
  try {
    const replies = await Promise.all(Array.from({ length: 8 }, () => rcpts(relay.ports[0]!, ['fresh@fwd.test', 'other@fwd.test'])));
    for (const [unknown, known] of replies) {
      assert.match(unknown!, /^550 5\.1\.1 /);
      assert.match(known!, /^250 /);
    }
    assert.equal(probe.rcpts.get('fresh@fwd.test'), 1);
    assert.equal(probe.rcpts.get('other@fwd.test'), 1);
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('when the next hop cannot be asked, the recipient gets 450 4.1.1 and nothing is queued', async () => {
  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
  const port = (closed.address() as net.AddressInfo).port;
  await new Promise((r) => closed.close(r));
  const relay = await relayWith(port, ['192.0.2.0/24']);
  try {
    const [reply] = await rcpts(relay.ports[0]!, ['known@fwd.test']);
    assert.equal(reply, '450 4.1.1 <known@fwd.test>: Recipient address rejected: unverified address, try again later');
    const refusal = relay.logs.find((l) => l.event === 'rejected' && l.to === 'known@fwd.test');
    assert.match(String(refusal?.reason), /^could not verify <known@fwd\.test> at 127\.0\.0\.1: .*ECONNREFUSED/);
    assert.deepEqual(await spoolCounts(join(relay.dir, 'spool')), { tmp: 0, incoming: 0, active: 0, deferred: 0, hold: 0, corrupt: 0 });
  } finally {
    await relay.stop();
  }
});

test('clients that may relay (relay.networks, AUTH) are not verified: their mail for a forward domain is taken as before', async () => {
  const { destination, probe } = await nextHop();
  const relay = await relayWith(destination.port, ['127.0.0.0/8']);
  try {
    const [reply] = await rcpts(relay.ports[0]!, ['nobody@fwd.test']);
    assert.match(reply!, /^250 /);
    assert.equal(probe.rcpts.size, 0, 'no probe');
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('verifyRecipients is refused on a maildir domain, which knows its mailboxes', () => {
  assert.throws(
    () => parseConfig('domains: [{ name: a.test, delivery: maildir, verifyRecipients: true }]\n', 'test.yaml'),
    /domains\.0\.verifyRecipients.*applies only to delivery: forward/s,
  );
});

test('the nodemailer internals the probe sends commands with are still there', async () => {
  const { destination } = await nextHop();
  try {
    const session = await openSession({ host: '127.0.0.1', address: '127.0.0.1', port: destination.port, tls: 'none', verifyCertificate: false }, { hostname: 'relay.test', connectTimeoutMs: 2000, commandTimeoutMs: 2000, logger: silentLogger() });
    const channel = session.connection as unknown as CommandChannel;
    assert.ok(Array.isArray(channel._responseActions));
    assert.equal(typeof channel._sendCommand, 'function');
    const reply = await new Promise<string>((resolve) => {
      channel._responseActions.push(resolve);
      channel._sendCommand('NOOP');
    });
    assert.match(reply, /^250 /);
    session.end();
  } finally {
    await destination.close();
  }
});
