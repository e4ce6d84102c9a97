/**
 * The adaptation of smtp-server (server/listener/smtp-server-adapter.ts) relies on
 * upstream internals of the exact pinned version. These tests fail loudly if an
 * upgrade changes them, and check the two behaviours the adaptation adds.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SMTPConnection } from '../../node_modules/smtp-server/dist/cjs/smtp-connection.js';
import { SMTPServer } from '../../node_modules/smtp-server/dist/cjs/smtp-server.js';
import { SMTPStream } from '../../node_modules/smtp-server/dist/cjs/smtp-stream.js';
import type net from 'node:net';
import { AdaptedSmtpServer } from '../../server/listener/smtp-server-adapter';
import { SmtpDialog } from '../helpers/smtp-dialog';
import { startTestRelay, type TestRelay } from '../helpers/test-relay';

const ROOT = join(__dirname, '..', '..');
let relay: TestRelay;

before(async () => {
  relay = await startTestRelay(() => ({
    listeners: [
      { role: 'mx', address: '127.0.0.1', port: 0 },
      { role: 'submission', address: '127.0.0.1', port: 0 },
    ],
  }));
});

after(async () => relay.stop());

test('smtp-server is the exact version the adaptation was written for', () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'node_modules', 'smtp-server', 'package.json'), 'utf8')) as { version: string };
  const declared = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }).dependencies['smtp-server'];
  assert.equal(pkg.version, '3.21.6');
  assert.equal(declared, '3.21.6', 'package.json pins the exact version');
});

test('upstream still has the internals the adaptation replaces or calls', () => {
  const init = SMTPConnection.prototype.init.toString();
  assert.match(init, /setTimeout\(\(\) => this\.connectionReady\(\), 100\)/, 'init() still waits 100 ms before connectionReady()');
  assert.match(init, /this\._setListeners\(/);
  assert.match(init, /maxClients/);
  const handleProxy = SMTPServer.prototype._handleProxy.toString();
  assert.match(handleProxy, /randomBytes\(10\)/, '_handleProxy() still draws the id');
  assert.match(handleProxy, /if \(!this\._expectsProxyHeader\(socket\)\) \{\s*socketOptions\.ignore = this\.options\.ignoredHosts && this\.options\.ignoredHosts\.includes\(socket\.remoteAddress\);\s*setImmediate\(\(\) => callback\(null, socketOptions\)\);/, 'without a PROXY header it only sets ignore');
  const createParser = SMTPConnection.prototype._createParser.toString();
  assert.match(createParser, /new smtp_stream_js_1\.SMTPStream\(/, '_createParser() makes the SMTPStream');
  const feed = SMTPStream.prototype._feedDataStream.toString();
  for (const field of ['_lastBytes', '_atDataStart', '_countDataBytes', '_dataStream']) assert.match(feed, new RegExp(`this\\.${field}`), `_feedDataStream uses ${field}`);
  assert.match(feed, /this\._lastBytes = chunk\.subarray\(chunk\.length - 4\)/, 'it keeps four bytes back');
  const resume = SMTPStream.prototype.continue.toString();
  assert.match(resume, /this\._continueCallback\(\);\s*this\._continueCallback = false;/, 'continue() still clears the callback after calling it (the order the adaptation fixes)');
  assert.match(SMTPStream.prototype._endDataMode.toString(), /this\._continueCallback = \(\) => this\._write\(remainder/, 'the remainder after a message waits in _continueCallback');
  for (const method of ['_setListeners', 'connectionReady', '_onCommand', 'send'] as const) {
    assert.equal(typeof SMTPConnection.prototype[method], 'function', `${method} exists`);
  }
});

test('a submission listener has no early-talker window: a client that speaks 20 ms in is served', async () => {
  const dialog = await SmtpDialog.connect(relay.ports[1]!);
  // within upstream's 100 ms wait, but after the connection's own setup
  await new Promise((resolve) => setTimeout(resolve, 20));
  dialog.write('EHLO eager.test\r\n');
  assert.equal((await dialog.read()).code, 220);
  assert.equal((await dialog.read()).code, 250);
  dialog.close();
});

test('the MX listener keeps the early-talker check', async () => {
  const dialog = await SmtpDialog.connect(relay.ports[0]!);
  dialog.write('EHLO eager.test\r\n');
  assert.match((await dialog.read()).text, /^421 .*talk too soon/);
  dialog.close();
});

test('our enhanced status codes are sent once, not doubled by smtp-server\'s own', async () => {
  const dialog = await SmtpDialog.connect(relay.ports[0]!);
  await dialog.read();
  await dialog.command('EHLO client.test');
  await dialog.command('MAIL FROM:<a@elsewhere.test>');
  assert.equal((await dialog.command('RCPT TO:<b@elsewhere.test>')).text, '554 5.7.1 <b@elsewhere.test>: Relay access denied');
  // replies smtp-server makes itself still get a derived code
  assert.match((await dialog.command('DATA')).text, /^503 5\.5\.1 /);
  dialog.close();
});

test('connections without a PROXY header get counter ids, and ignoredHosts still applies', async () => {
  const server = new AdaptedSmtpServer({ greetingDelay: false, maxLineBytes: 2048, ignoredHosts: ['192.0.2.7'] });
  const handle = (remoteAddress: string) =>
    new Promise<{ id: string; ignore?: boolean }>((resolve, reject) =>
      server._handleProxy({ remoteAddress } as net.Socket, (err, options) => (err || !options ? reject(err) : resolve(options))),
    );
  const first = await handle('127.0.0.1');
  const second = await handle('192.0.2.7');
  assert.match(first.id, /^[0-9a-z]+-[0-9a-z]+$/);
  const counter = (id: string) => parseInt(id.split('-')[1]!, 36);
  assert.equal(counter(second.id), counter(first.id) + 1);
  assert.ok(!first.ignore);
  assert.equal(second.ignore, true);
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

test('a client that sends a second whole message without waiting for 354 is answered for both and then for QUIT, without a stall', async () => {
  const dialog = await SmtpDialog.connect(relay.ports[0]!);
  try {
    assert.equal((await dialog.read()).code, 220);
    assert.equal((await dialog.command('EHLO client.test')).code, 250);
    // RFC 2920 wants the client to wait for 354; some do not. Upstream's continue() dropped
    // the callback of the second message's remainder, and the session hung until its timeout.
    const message = (n: number) => `MAIL FROM:<app@client.test>\r\nRCPT TO:<alice@relay.test>\r\nDATA\r\nSubject: ${n}\r\n\r\nbody ${n}\r\n.\r\n`;
    dialog.write(`${message(1)}${message(2)}QUIT\r\n`);
    const codes: number[] = [];
    for (let i = 0; i < 9; i++) codes.push((await dialog.read(3000)).code);
    assert.deepEqual(codes, [250, 250, 354, 250, 250, 250, 354, 250, 221]);
  } finally {
    dialog.close();
  }
});
