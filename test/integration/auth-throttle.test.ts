/**
 * AUTH brute force against a relay on loopback: the connection is closed after
 * a few failures, an IP with too many failures gets 454 even with the right
 * password (while other IPs still get in), answers slow down after failures,
 * and a success clears the count. Clients come from distinct loopback addresses.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { hashPassword } from '../../server/stages/password';
import { SmtpDialog } from '../helpers/smtp-dialog';
import { startTestRelay, type TestRelay } from '../helpers/test-relay';

let passwordHash: string;
before(async () => {
  passwordHash = await hashPassword('app-secret', 10);
});

function relayWith(auth: Record<string, number>): Promise<TestRelay> {
  return startTestRelay(() => ({ users: [{ name: 'app', passwordHash, senders: ['@relay.test'] }], limits: { auth } }));
}

function plain(user: string, password: string): string {
  return `AUTH PLAIN ${Buffer.from(`\0${user}\0${password}`).toString('base64')}`;
}

/** An implicit-TLS session from `localAddress`, greeted and EHLO'd. */
async function session(relay: TestRelay, localAddress: string): Promise<SmtpDialog> {
  const dialog = await SmtpDialog.connect(relay.ports[2]!, { implicitTls: true, localAddress });
  await dialog.read();
  await dialog.command('EHLO client.test');
  return dialog;
}

test('three failures on one connection end it with 421 4.7.0', async () => {
  const relay = await relayWith({ baseDelayMs: 0, maxFailuresPerIp: 100 });
  try {
    const dialog = await session(relay, '127.0.0.11');
    assert.match((await dialog.command(plain('app', 'guess1'))).text, /^535 5\.7\.8 /);
    assert.match((await dialog.command(plain('app', 'guess2'))).text, /^535 5\.7\.8 /);
    assert.match((await dialog.command(plain('app', 'guess3'))).text, /^421 4\.7\.0 Too many authentication failures/);
    assert.equal(await dialog.waitClosed(), true);
  } finally {
    await relay.stop();
  }
});

test('an IP over its failure limit gets 454 even with the right password; other IPs still get in', async () => {
  const relay = await relayWith({ baseDelayMs: 0, maxFailuresPerIp: 4, maxFailuresPerConnection: 2 });
  try {
    for (let i = 0; i < 2; i++) {
      const dialog = await session(relay, '127.0.0.12');
      await dialog.command(plain('nobody', 'x'));
      await dialog.command(plain('nobody', 'y'));
      await dialog.waitClosed();
    }
    const blocked = await session(relay, '127.0.0.12');
    assert.match((await blocked.command(plain('app', 'app-secret'))).text, /^454 4\.7\.0 Too many authentication failures, try again later/);
    blocked.close();
    await relay.waitForLog((l) => l.event === 'auth' && l.result === 'blocked' && l.client === '127.0.0.12');

    const other = await session(relay, '127.0.0.13');
    assert.equal((await other.command(plain('app', 'app-secret'))).code, 235);
    other.close();
  } finally {
    await relay.stop();
  }
});

test('after failures for a user, its next answer waits (from any IP); a success clears the count', async () => {
  const relay = await relayWith({ baseDelayMs: 400, maxDelayMs: 400, maxFailuresPerIp: 100 });
  try {
    const first = await session(relay, '127.0.0.14');
    assert.equal((await first.command(plain('app', 'wrong'))).code, 535);
    first.close();

    const second = await session(relay, '127.0.0.15');
    const started = Date.now();
    assert.equal((await second.command(plain('app', 'app-secret'))).code, 235);
    assert.ok(Date.now() - started >= 390, `answered after ${Date.now() - started} ms, expected the 400 ms back-off`);
    second.close();

    const third = await session(relay, '127.0.0.15');
    const again = Date.now();
    assert.equal((await third.command(plain('app', 'app-secret'))).code, 235);
    assert.ok(Date.now() - again < 390, 'no back-off after a success');
    third.close();
  } finally {
    await relay.stop();
  }
});

