/**
 * No open relay: unauthenticated clients outside relay.networks may only send to
 * the domains we receive for, on every listener, whatever the address looks like.
 * Drives the relay with a raw SMTP client (so the exact address syntax reaches it)
 * and ends by checking that nothing was queued.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { hashPassword } from '../../server/stages/password';
import { SmtpDialog } from '../helpers/smtp-dialog';
import { spoolCounts } from '../helpers/spool-files';
import { startTestRelay, type TestRelay } from '../helpers/test-relay';

let relay: TestRelay;
let mxPort: number;
let submissionPort: number;
let implicitPort: number;

before(async () => {
  const passwordHash = await hashPassword('app-secret', 10);
  relay = await startTestRelay(() => ({
    domains: [
      { name: 'relay.test', delivery: 'maildir', mailboxes: ['alice'] },
      { name: 'forward.test', delivery: 'forward', forwardTo: { host: '127.0.0.1', port: 9, tls: 'none' } },
    ],
    users: [{ name: 'app', passwordHash, senders: ['@relay.test', 'billing@other.test'] }],
    relay: { networks: [] },
  }));
  [mxPort, submissionPort, implicitPort] = relay.ports as [number, number, number];
});

after(async () => relay.stop());

async function mailTransaction(dialog: SmtpDialog, from: string, to: string) {
  assert.equal((await dialog.command('EHLO client.test')).code, 250);
  const mail = await dialog.command(`MAIL FROM:<${from}>`);
  if (mail.code !== 250) return mail;
  return dialog.command(`RCPT TO:${to.startsWith('<') ? to : `<${to}>`}`);
}

const TRICKS: Array<[string, string, RegExp]> = [
  ['a plain foreign domain', 'victim@elsewhere.test', /^554 5\.7\.1 .*Relay access denied/],
  ['the percent hack', 'victim%elsewhere.test@relay.test', /^550 5\.1\.1 /],
  ['a bang path', 'elsewhere.test!victim@relay.test', /^550 5\.1\.1 /],
  ['a quoted local part with @', '"victim@elsewhere.test"@relay.test', /^5\d\d /],
  ['a source route through our domain', '<@relay.test:victim@elsewhere.test>', /^554 5\.7\.1 .*Relay access denied/],
  ['two @ signs', 'victim@elsewhere.test@relay.test', /^5\d\d /],
  ['an address literal', 'victim@[127.0.0.1]', /^550 5\.1\.2 /],
  ['a trailing-dot lookalike of our domain', 'alice@relay.test.', /^5\d\d /],
  ['a lookalike subdomain', 'alice@relay.test.elsewhere.test', /^554 5\.7\.1 /],
  ['routing syntax to a forward domain', 'victim%elsewhere.test@forward.test', /^553 5\.7\.1 /],
];

describe('the MX listener without AUTH', () => {
  for (const [name, to, expected] of TRICKS) {
    test(`refuses ${name}`, async () => {
      const dialog = await SmtpDialog.connect(mxPort);
      await dialog.read();
      const reply = await mailTransaction(dialog, 'sender@elsewhere.test', to);
      assert.match(reply.text, expected);
      dialog.close();
    });
  }

  test('accepts mail for a mailbox of our own domain', async () => {
    const dialog = await SmtpDialog.connect(mxPort);
    await dialog.read();
    const reply = await mailTransaction(dialog, 'sender@elsewhere.test', 'alice@relay.test');
    assert.equal(reply.code, 250);
    dialog.close();
  });

  test('refuses an unknown mailbox of our own domain with 550 5.1.1', async () => {
    const dialog = await SmtpDialog.connect(mxPort);
    await dialog.read();
    assert.match((await mailTransaction(dialog, 'sender@elsewhere.test', 'nobody@relay.test')).text, /^550 5\.1\.1 /);
    dialog.close();
  });

  test('does not offer AUTH at all', async () => {
    const dialog = await SmtpDialog.connect(mxPort);
    await dialog.read();
    const ehlo = await dialog.command('EHLO client.test');
    assert.doesNotMatch(ehlo.text, /AUTH/);
    assert.ok((await dialog.command('AUTH PLAIN AGFwcABhcHAtc2VjcmV0')).code >= 500);
    dialog.close();
  });
});

describe('the submission listeners without AUTH', () => {
  for (const [label, connect] of [
    ['STARTTLS port', async () => SmtpDialog.connect(submissionPort)],
    ['implicit TLS port', async () => SmtpDialog.connect(implicitPort, { implicitTls: true })],
  ] as const) {
    test(`refuse to relay on the ${label}: authentication required`, async () => {
      const dialog = await connect();
      await dialog.read();
      assert.equal((await dialog.command('EHLO client.test')).code, 250);
      assert.match((await dialog.command('MAIL FROM:<alice@relay.test>')).text, /^530 5\.7\.0 /);
      dialog.close();
    });
  }

  test('refuse AUTH before STARTTLS, so passwords never cross in clear', async () => {
    const dialog = await SmtpDialog.connect(submissionPort);
    await dialog.read();
    await dialog.command('EHLO client.test');
    const reply = await dialog.command(`AUTH PLAIN ${Buffer.from('\0app\0app-secret').toString('base64')}`);
    assert.equal(reply.code, 538);
    dialog.close();
  });
});

describe('an authenticated user', () => {
  async function authenticated(): Promise<SmtpDialog> {
    const dialog = await SmtpDialog.connect(submissionPort);
    await dialog.read();
    await dialog.command('EHLO client.test');
    await dialog.startTls();
    await dialog.command('EHLO client.test');
    const auth = await dialog.command(`AUTH PLAIN ${Buffer.from('\0app\0app-secret').toString('base64')}`);
    assert.equal(auth.code, 235, auth.text);
    return dialog;
  }

  test('may relay to other domains from its own senders', async () => {
    const dialog = await authenticated();
    assert.equal((await dialog.command('MAIL FROM:<news@relay.test>')).code, 250);
    assert.equal((await dialog.command('RCPT TO:<someone@elsewhere.test>')).code, 250);
    assert.equal((await dialog.command('RSET')).code, 250);
    assert.equal((await dialog.command('MAIL FROM:<billing@other.test>')).code, 250);
    dialog.close();
  });

  test('may not use a sender address that is not configured for it', async () => {
    const dialog = await authenticated();
    assert.match((await dialog.command('MAIL FROM:<ceo@elsewhere.test>')).text, /^553 5\.7\.1 /);
    assert.match((await dialog.command('MAIL FROM:<>')).text, /^553 5\.7\.1 /);
    dialog.close();
  });

  test('with a wrong password gets 535 5.7.8 and cannot relay', async () => {
    const dialog = await SmtpDialog.connect(submissionPort);
    await dialog.read();
    await dialog.command('EHLO client.test');
    await dialog.startTls();
    await dialog.command('EHLO client.test');
    assert.match((await dialog.command(`AUTH PLAIN ${Buffer.from('\0app\0wrong').toString('base64')}`)).text, /^535 5\.7\.8 /);
    assert.match((await dialog.command(`AUTH PLAIN ${Buffer.from('app\0nobody\0app-secret').toString('base64')}`)).text, /^535 5\.7\.8 /);
    assert.match((await dialog.command('MAIL FROM:<news@relay.test>')).text, /^530 5\.7\.0 /);
    dialog.close();
  });
});

test('nothing was queued by any of the refused attempts', async () => {
  const counts = await spoolCounts(join(relay.dir, 'spool'));
  assert.deepEqual(counts, { tmp: 0, incoming: 0, active: 0, deferred: 0, hold: 0, corrupt: 0 });
});
