/**
 * IPv6 end to end on ::1: a client connects to a listener on ::1, the relay looks
 * up an MX that has only an AAAA record in a real DNS server on loopback, and
 * delivers over IPv6 to a real smtp-server listening on ::1.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDestination } from '../helpers/destination-server';
import { startDnsServer } from '../helpers/dns-server';
import { SmtpDialog } from '../helpers/smtp-dialog';
import { startTestRelay } from '../helpers/test-relay';
import { receivedHeader } from '../../server/stages/received-header';

test('mail from a client on ::1 is relayed to an MX that has only an AAAA record, over IPv6, with an IPv6 address literal in Received', async () => {
  const destination = await startDestination({ host: '::1' });
  const dns = await startDnsServer({ 'v6.test': { MX: [{ exchange: 'mx.v6.test', priority: 10 }] }, 'mx.v6.test': { AAAA: ['::1'] } });
  const relay = await startTestRelay(
    () => ({
      listeners: [{ role: 'mx', address: '::1', port: 0, earlyTalkerCheck: false }],
      relay: { networks: ['::1/128'] },
      dns: { servers: dns.servers },
      delivery: { allowedDestinations: ['::1/128'], retry: { minBackoffMs: 200, maxBackoffMs: 400 } },
    }),
    { mxPort: destination.port },
  );
  try {
    const dialog = await SmtpDialog.connect(relay.ports[0]!, { host: '::1' });
    await dialog.read();
    await dialog.command('EHLO client.test');
    assert.equal((await dialog.command('MAIL FROM:<app@relay.test>')).code, 250);
    assert.equal((await dialog.command('RCPT TO:<user@v6.test>')).code, 250);
    assert.equal((await dialog.command('DATA')).code, 354);
    dialog.write('Subject: over IPv6\r\n\r\nhello\r\n.\r\n');
    assert.equal((await dialog.read()).code, 250);
    dialog.close();

    const [message] = await destination.waitForMessages(1);
    assert.deepEqual(message!.to, ['user@v6.test']);
    assert.match(message!.raw.toString(), /^Received: from client\.test \(\[IPv6:::1\]\)\r\n\tby relay\.test \(ownrelay\)/m);
    const delivered = await relay.waitForLog((l) => l.event === 'delivered');
    assert.equal(delivered.remoteHost, 'mx.v6.test');
    const accepted = relay.logs.find((l) => l.event === 'accepted');
    assert.equal(accepted?.client, '::1');
  } finally {
    await relay.stop();
    await dns.close();
    await destination.close();
  }
});

test('Received names an IPv4 client as [a.b.c.d] and an IPv6 one as [IPv6:...] (RFC 5321 4.1.3)', () => {
  const base = { helo: 'c.test', hostname: 'relay.test', queueId: 'Q', protocol: 'ESMTP', date: new Date(0) };
  assert.match(receivedHeader({ ...base, remoteAddress: '192.0.2.1' }).toString(), /^Received: from c\.test \(\[192\.0\.2\.1\]\)/);
  assert.match(receivedHeader({ ...base, remoteAddress: '2001:db8::1' }).toString(), /^Received: from c\.test \(\[IPv6:2001:db8::1\]\)/);
});
