/**
 * Bad input gets the right SMTP code with an enhanced status, loses nothing and
 * never takes the process down. A raw SMTP client sends exactly the bytes under
 * test; every case ends by checking that the relay still accepts a normal message.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { SmtpDialog } from '../helpers/smtp-dialog';
import { filesIn, spoolCounts, waitFor } from '../helpers/spool-files';
import { startTestRelay, type TestRelay } from '../helpers/test-relay';

let relay: TestRelay;
let strict: TestRelay;
const MAX_BYTES = 64 * 1024;

before(async () => {
  const limits = { maxMessageBytes: MAX_BYTES, maxRecipients: 3, maxErrors: 4 };
  relay = await startTestRelay(() => ({
    listeners: [{ role: 'mx', address: '127.0.0.1', port: 0 }], // early-talker check on, as on a real MX
    limits: { ...limits, bareLineEndings: 'normalize' },
  }));
  strict = await startTestRelay(() => ({
    listeners: [{ role: 'mx', address: '127.0.0.1', port: 0, earlyTalkerCheck: false }],
    limits: { ...limits, bareLineEndings: 'reject' },
  }));
});

after(async () => {
  await relay.stop();
  await strict.stop();
});

async function greeted(port: number): Promise<SmtpDialog> {
  const dialog = await SmtpDialog.connect(port);
  assert.equal((await dialog.read()).code, 220);
  assert.equal((await dialog.command('EHLO client.test')).code, 250);
  return dialog;
}

async function startData(dialog: SmtpDialog, to = 'alice@relay.test'): Promise<void> {
  assert.equal((await dialog.command('MAIL FROM:<sender@elsewhere.test>')).code, 250);
  assert.equal((await dialog.command(`RCPT TO:<${to}>`)).code, 250);
  assert.equal((await dialog.command('DATA')).code, 354);
}

async function stillAcceptsMail(port: number): Promise<void> {
  const dialog = await greeted(port);
  await startData(dialog);
  dialog.write('Subject: still alive\r\n\r\nhello\r\n.\r\n');
  assert.equal((await dialog.read()).code, 250);
  dialog.close();
}

test('the greeting names the host once, and EHLO offers only extensions the relay implements', async () => {
  const dialog = await SmtpDialog.connect(strict.ports[0]!);
  try {
    assert.equal((await dialog.read()).text, '220 relay.test ESMTP ownrelay');
    const ehlo = await dialog.command('EHLO client.test');
    const keywords = ehlo.text.split(/\r?\n/).slice(1).map((line) => line.slice(4).split(' ')[0]);
    assert.deepEqual(keywords.sort(), ['8BITMIME', 'DSN', 'ENHANCEDSTATUSCODES', 'PIPELINING', 'SIZE', 'SMTPUTF8', 'STARTTLS']);
    assert.match(ehlo.text, /^250 SIZE 65536$/m);
  } finally {
    dialog.close();
  }
});

test('one address gets limits.maxConnectionsPerIp connections at a time, then 421 4.7.0; other addresses and relay.networks are not held back', async () => {
  const limited = await startTestRelay(() => ({ listeners: [{ role: 'mx', address: '127.0.0.1', port: 0, earlyTalkerCheck: false }], limits: { maxConnectionsPerIp: 3 } }));
  const trusted = await startTestRelay(() => ({ listeners: [{ role: 'mx', address: '127.0.0.1', port: 0, earlyTalkerCheck: false }], limits: { maxConnectionsPerIp: 1 }, relay: { networks: ['127.0.0.1/32'] } }));
  const open: SmtpDialog[] = [];
  const connect = async (port: number, localAddress = '127.0.0.1') => {
    const dialog = await SmtpDialog.connect(port, { localAddress });
    open.push(dialog);
    return { dialog, greeting: await dialog.read() };
  };
  try {
    const port = limited.ports[0]!;
    for (let i = 0; i < 3; i++) assert.equal((await connect(port)).greeting.code, 220);
    const over = await connect(port);
    assert.match(over.greeting.text, /^421 4\.7\.0 Too many connections from your address/);
    assert.ok(await over.dialog.waitClosed());
    const logged = await limited.waitForLog((l) => l.event === 'connection-limit');
    assert.equal(logged.client, '127.0.0.1');
    // another address has its own count
    assert.equal((await connect(port, '127.0.0.2')).greeting.code, 220);
    // once one of the three is gone, 127.0.0.1 gets a connection again
    await open[0]!.command('QUIT');
    assert.ok(await open[0]!.waitClosed());
    await waitFor(async () => {
      const { dialog, greeting } = await connect(port);
      if (greeting.code === 220) return true;
      await dialog.waitClosed();
      return false;
    }, 5000, 'a fourth connection from 127.0.0.1 after one closed');
    // the customer's own networks are not counted
    for (let i = 0; i < 3; i++) assert.equal((await connect(trusted.ports[0]!)).greeting.code, 220);
  } finally {
    for (const dialog of open) dialog.close();
    await limited.stop();
    await trusted.stop();
  }
});

test('a command line over 2048 bytes gets 500 5.5.2 and the session goes on', async () => {
  const dialog = await greeted(relay.ports[0]!);
  assert.match((await dialog.command(`MAIL FROM:<${'a'.repeat(3000)}@elsewhere.test>`)).text, /^500 5\.5\.2 Line too long/);
  assert.equal((await dialog.command('NOOP')).code, 250);
  dialog.close();
  await stillAcceptsMail(relay.ports[0]!);
});

test('a recipient beyond limits.maxRecipients gets 452 4.5.3', async () => {
  const dialog = await greeted(relay.ports[0]!);
  assert.equal((await dialog.command('MAIL FROM:<sender@elsewhere.test>')).code, 250);
  for (const name of ['alice', 'bob', 'root']) assert.equal((await dialog.command(`RCPT TO:<${name}@relay.test>`)).code, 250);
  assert.match((await dialog.command('RCPT TO:<postmaster@relay.test>')).text, /^452 4\.5\.3 /);
  dialog.close();
});

test('a SIZE= declaration over the limit is refused at MAIL FROM with 552', async () => {
  const dialog = await greeted(relay.ports[0]!);
  const reply = await dialog.command(`MAIL FROM:<sender@elsewhere.test> SIZE=${MAX_BYTES * 2}`);
  assert.equal(reply.code, 552);
  assert.match(reply.text, /^552 5\.3\.4 /);
  dialog.close();
});

test('an oversized message is refused with 552 5.3.4 while streaming and leaves no file behind', async () => {
  const dialog = await greeted(relay.ports[0]!);
  await startData(dialog);
  const line = `${'x'.repeat(998)}\r\n`;
  for (let i = 0; i < (MAX_BYTES * 3) / line.length; i++) dialog.write(line);
  dialog.write('.\r\n');
  assert.match((await dialog.read()).text, /^552 5\.3\.4 /);
  dialog.close();
  const counts = await spoolCounts(join(relay.dir, 'spool'));
  assert.equal(counts.tmp, 0);
  assert.equal(counts.incoming + counts.active + counts.deferred, 0);
  await stillAcceptsMail(relay.ports[0]!);
});

test('bare LF and bare CR in DATA are normalized to CRLF, never passed on', async () => {
  const dialog = await greeted(relay.ports[0]!);
  await startData(dialog, 'bob@relay.test');
  dialog.write('Subject: bare\r\n\r\nline one\nline two\rline three\n.\r\nsmuggled\r\n.\r\n');
  const reply = await dialog.read();
  assert.equal(reply.code, 250);
  dialog.close();
  const mailbox = join(relay.dir, 'mail', 'relay.test', 'bob', 'new');
  const [file] = await waitFor(async () => {
    const files = await filesIn(mailbox);
    return files.length > 0 ? files : undefined;
  });
  // Maildir files use LF; what matters is that every line break became a real one
  const stored = await readFile(join(mailbox, file!), 'utf8');
  assert.match(stored, /line one\nline two\nline three\n\.\nsmuggled\n/);
  assert.doesNotMatch(stored, /\r/);
});

test('with bareLineEndings: reject, a bare LF gets 554 5.6.0 and nothing is queued', async () => {
  const dialog = await greeted(strict.ports[0]!);
  await startData(dialog);
  dialog.write('Subject: bare\r\n\r\nline one\n.\r\nMAIL FROM:<x@elsewhere.test>\r\n.\r\n');
  assert.match((await dialog.read()).text, /^554 5\.6\.0 /);
  dialog.close();
  const counts = await spoolCounts(join(strict.dir, 'spool'));
  assert.equal(counts.tmp + counts.incoming + counts.active + counts.deferred, 0);
  await stillAcceptsMail(strict.ports[0]!);
});

test('a client that talks before the greeting on the MX port gets 421', async () => {
  const dialog = await SmtpDialog.connect(relay.ports[0]!);
  dialog.write('EHLO eager.test\r\n');
  assert.match((await dialog.read()).text, /^421 /);
  dialog.close();
});

test('too many rejected commands end the session with 421 4.7.0', async () => {
  const dialog = await greeted(strict.ports[0]!);
  assert.equal((await dialog.command('MAIL FROM:<sender@elsewhere.test>')).code, 250);
  for (let i = 0; i < 3; i++) assert.equal((await dialog.command(`RCPT TO:<victim${i}@elsewhere.test>`)).code, 554);
  assert.match((await dialog.command('RCPT TO:<victim9@elsewhere.test>')).text, /^421 4\.7\.0 /);
  assert.ok(await dialog.waitClosed(), 'the server closes the connection');
  await stillAcceptsMail(strict.ports[0]!);
});

test('ten unknown commands end the session with 421', async () => {
  const dialog = await greeted(relay.ports[0]!);
  let last = { code: 0, text: '' };
  for (let i = 0; i < 10; i++) last = await dialog.command(`XYZZY${i}`);
  assert.equal(last.code, 421);
  assert.ok(await dialog.waitClosed());
});

test('DATA before MAIL and RCPT before MAIL get 503 5.5.1', async () => {
  const dialog = await greeted(relay.ports[0]!);
  assert.match((await dialog.command('DATA')).text, /^503 5\.5\.1 /);
  assert.match((await dialog.command('RCPT TO:<alice@relay.test>')).text, /^503 5\.5\.1 /);
  dialog.close();
});

test('a non-ASCII address without SMTPUTF8 on MAIL FROM gets 553 5.6.7; with it, it is accepted', async () => {
  const dialog = await greeted(strict.ports[0]!);
  try {
    assert.match((await dialog.command('MAIL FROM:<jörg@elsewhere.test>')).text, /^553 5\.6\.7 /);
    assert.equal((await dialog.command('MAIL FROM:<sender@elsewhere.test>')).code, 250);
    assert.match((await dialog.command('RCPT TO:<ålice@relay.test>')).text, /^553 5\.6\.7 /);
    assert.equal((await dialog.command('RSET')).code, 250);
    assert.equal((await dialog.command('MAIL FROM:<jörg@elsewhere.test> SMTPUTF8')).code, 250);
    assert.equal((await dialog.command('RCPT TO:<alice@relay.test>')).code, 250);
    assert.equal((await dialog.command('DATA')).code, 354);
    dialog.write('Subject: från Jörg\r\n\r\nhej\r\n.\r\n');
    assert.equal((await dialog.read()).code, 250);
  } finally {
    dialog.close();
  }
});

test('a malformed MAIL FROM gets 501', async () => {
  const dialog = await greeted(relay.ports[0]!);
  assert.match((await dialog.command('MAIL FROM: sender@elsewhere.test')).text, /^501 5\.1\.7 /);
  dialog.close();
});

test('a message that already passed 50 hops is refused as a mail loop with 554 5.4.6', async () => {
  const received = (n: number) => Array.from({ length: n }, (_, i) => `Received: from hop${i}.test by hop${i + 1}.test; Sun, 29 Nov 2026 00:00:00 +0000\r\n`).join('');
  const looping = await greeted(relay.ports[0]!);
  await startData(looping);
  looping.write(`${received(50)}Subject: looping\r\n\r\nbody\r\n.\r\n`);
  assert.match((await looping.read()).text, /^554 5\.4\.6 /);
  looping.close();
  const fine = await greeted(relay.ports[0]!);
  await startData(fine);
  fine.write(`${received(48)}Subject: long route\r\n\r\nbody\r\n.\r\n`);
  assert.equal((await fine.read()).code, 250);
  fine.close();
});

test('plain text on the implicit-TLS port is logged at info with the client and OpenSSL\'s reason, and the port goes on serving', async () => {
  const tlsRelay = await startTestRelay();
  try {
    const socket = net.connect(tlsRelay.ports[2]!, '127.0.0.1');
    socket.on('error', () => undefined);
    socket.write('EHLO client.test\r\n');
    const line = await tlsRelay.waitForLog((l) => l.event === 'tls-error');
    socket.destroy();
    assert.equal(line.level, 30);
    assert.equal(line.client, '127.0.0.1');
    assert.equal(line.err, 'wrong version number');
    assert.equal(line.msg, 'TLS handshake with 127.0.0.1 failed: wrong version number');
    const secure = tls.connect({ port: tlsRelay.ports[2]!, host: '127.0.0.1', rejectUnauthorized: false });
    const greeting = await new Promise<string>((resolve, reject) => secure.once('data', (d: Buffer) => resolve(d.toString())).once('error', reject));
    secure.destroy();
    assert.match(greeting, /^220 /);
  } finally {
    await tlsRelay.stop();
  }
});

test('two hundred sessions of random commands, parameters and bytes, cut at random points, leave the relay serving, with nothing half-written', { timeout: 120_000 }, async () => {
  const fuzzed = await startTestRelay(() => ({ relay: { networks: ['192.0.2.0/24'] }, limits: { maxErrors: 1000 } }));
  let seed = 20261129;
  const random = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const commands = ['EHLO x', 'HELO x', 'MAIL FROM:<a@b.test>', 'MAIL FROM:<>', 'RCPT TO:<alice@relay.test>', 'RCPT TO:<x@elsewhere.test>', 'DATA', '.', 'RSET', 'NOOP', 'QUIT', 'STARTTLS', 'AUTH PLAIN', 'AUTH LOGIN', 'AUTH PLAIN AGFsaWNlAHg=', 'VRFY alice', 'EXPN x', 'HELP', 'BDAT 10 LAST', 'MAIL FROM:<a@b.test> SIZE=99999999999', 'MAIL FROM:<a@b.test> BODY=8BITMIME SMTPUTF8', 'RCPT TO:<alice@relay.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x+40y', 'MAIL FROM:<a@b.test> RET=HDRS ENVID=abc+2B', 'RCPT TO:<"a@b"@relay.test>', 'RCPT TO:<@x.test:alice@relay.test>', 'RCPT TO:<alice%x.test@relay.test>', 'RCPT TO:<postmaster>', 'XCLIENT ADDR=1.2.3.4', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2'];
  const junk = (): string => Array.from({ length: random(40) }, () => String.fromCharCode(random(256))).join('');
  const line = (): string => {
    const kind = random(10);
    return kind < 6 ? commands[random(commands.length)]! : kind < 8 ? commands[random(commands.length)]! + junk() : junk();
  };
  const session = (port: number): Promise<void> =>
    new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.on('error', () => resolve());
      socket.on('data', () => undefined);
      socket.on('close', () => resolve());
      let text = '';
      for (let i = 1 + random(30); i > 0; i--) {
        text += line() + (random(10) === 0 ? '\n' : random(20) === 0 ? '\r' : '\r\n');
        if (random(15) === 0) text += `Subject: x\r\n\r\nbody\r\n${random(2) ? '.\r\n' : ''}`;
      }
      const bytes = Buffer.from(text, 'latin1');
      let sent = 0;
      const writeSome = (): void => {
        if (sent >= bytes.length || socket.destroyed) return void setTimeout(() => socket.end(), random(50));
        const size = 1 + random(64);
        socket.write(bytes.subarray(sent, sent + size));
        sent += size;
        setTimeout(writeSome, random(3));
      };
      writeSome();
      setTimeout(() => socket.destroy(), 5_000);
    });
  try {
    for (let round = 0; round < 10; round++) await Promise.all(Array.from({ length: 20 }, (_, i) => session(fuzzed.ports[i % 2]!)));
    assert.deepEqual(fuzzed.logs.filter((l) => (l.level as number) >= 50), [], 'no error-level log line');
    await stillAcceptsMail(fuzzed.ports[0]!);
    // every message that got a 250 is queued whole or delivered; nothing is left half-written
    await waitFor(async () => (await spoolCounts(join(fuzzed.dir, 'spool'))).tmp === 0, 10_000, 'no partial file in tmp/');
    const counts = await spoolCounts(join(fuzzed.dir, 'spool'));
    assert.equal(counts.corrupt, 0);
  } finally {
    await fuzzed.stop();
  }
});
