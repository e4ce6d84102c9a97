/**
 * Internationalized domains (RFC 6531 with IDNA): an address may carry a U-label
 * domain ("bücher.test") where the config, the DNS and the routes know its A-label
 * ("xn--bcher-kva.test"). Checked on loopback with a raw SMTP client, a real DNS
 * server publishing only A-labels, and a real smtp-server as the destination.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { domainOf } from '../../server/queue/envelope';
import { startDnsServer, type DnsServerHandle } from '../helpers/dns-server';
import { startDestination } from '../helpers/destination-server';
import { SmtpDialog } from '../helpers/smtp-dialog';
import { filesIn, waitFor } from '../helpers/spool-files';
import { startTestRelay } from '../helpers/test-relay';

let dns: DnsServerHandle;

before(async () => {
  dns = await startDnsServer({
    'xn--mller-kva.test': { MX: [{ exchange: 'mx.xn--mller-kva.test', priority: 10 }] },
    'mx.xn--mller-kva.test': { A: ['127.0.0.1'] },
  });
});

after(async () => dns.close());

async function send(port: number, from: string, to: string, subject: string): Promise<string> {
  const dialog = await SmtpDialog.connect(port);
  try {
    assert.equal((await dialog.read()).code, 220);
    assert.equal((await dialog.command('EHLO client.test')).code, 250);
    assert.equal((await dialog.command(`MAIL FROM:<${from}> SMTPUTF8`)).code, 250);
    const rcpt = await dialog.command(`RCPT TO:<${to}>`);
    if (rcpt.code !== 250) return rcpt.text;
    assert.equal((await dialog.command('DATA')).code, 354);
    dialog.write(`Subject: ${subject}\r\n\r\nhallo\r\n.\r\n`);
    return (await dialog.read()).text;
  } finally {
    dialog.close();
  }
}

test('domainOf gives the A-label of a U-label domain, in lower case', () => {
  assert.equal(domainOf('Jörg@Bücher.Test'), 'xn--bcher-kva.test');
  assert.equal(domainOf('a@EXAMPLE.test'), 'example.test');
  assert.equal(domainOf('no-domain'), '');
});

test('mail to a configured A-label domain, addressed with its U-label, is received into its mailbox; other U-label domains still need relaying rights', async () => {
  const relay = await startTestRelay(() => ({ domains: [{ name: 'xn--bcher-kva.test', delivery: 'maildir', mailboxes: ['info'] }] }));
  try {
    assert.match(await send(relay.ports[0]!, 'someone@elsewhere.test', 'info@bücher.test', 'to the U-label'), /^250 /);
    const dir = join(relay.dir, 'mail', 'xn--bcher-kva.test', 'info', 'new');
    const [file] = await waitFor(async () => {
      const files = await filesIn(dir);
      return files.length > 0 ? files : undefined;
    });
    assert.match(await readFile(join(dir, file!), 'utf8'), /Subject: to the U-label/);
    // not ours: an unauthenticated client may not relay to it
    assert.match(await send(relay.ports[0]!, 'someone@elsewhere.test', 'info@müller.test', 'relay attempt'), /^5\d\d /);
  } finally {
    await relay.stop();
  }
});

test('mail for a U-label domain is delivered to the MX its A-label publishes, to a server that offers SMTPUTF8', async () => {
  const destination = await startDestination();
  const relay = await startTestRelay(() => ({ dns: { servers: dns.servers }, relay: { networks: ['127.0.0.0/8'] } }), { mxPort: destination.port });
  try {
    assert.match(await send(relay.ports[0]!, 'app@relay.test', 'anna@müller.test', 'to an IDN'), /^250 /);
    const [message] = await destination.waitForMessages(1);
    assert.deepEqual(message!.to, ['anna@müller.test'], 'the address itself is passed on as given');
    assert.match(message!.raw.toString('utf8'), /Subject: to an IDN/);
  } finally {
    await relay.stop();
    await destination.close();
  }
});
