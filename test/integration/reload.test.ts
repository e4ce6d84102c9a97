/**
 * Reloading the config of a running relay (child process) while clients send
 * continuously: no connection is refused or dropped, sessions opened before the
 * reload finish on the settings they started with, new sessions get the new
 * ones, a moved listener is replaced gracefully, and an invalid file is refused
 * with the running config kept. Reloads come from `ownrelay reload` (admin
 * socket) and from SIGHUP.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { runCli } from '../helpers/ownrelay-cli';
import { freePort } from '../helpers/ports';
import { removeDir, startRelayProcess, writeTempDir, type RelayProcess } from '../helpers/relay-process';
import { SmtpDialog } from '../helpers/smtp-dialog';
import { filesIn, waitFor } from '../helpers/spool-files';

function configFor(dir: string, submissionPort: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    hostname: 'relay.test',
    listeners: [
      { role: 'mx', address: '127.0.0.1', port: 0, earlyTalkerCheck: false },
      { role: 'submission', address: '127.0.0.1', port: submissionPort },
    ],
    domains: [{ name: 'relay.test', delivery: 'maildir', mailboxes: ['alice', 'bob'] }],
    paths: { spool: join(dir, 'spool'), mail: join(dir, 'mail'), state: join(dir, 'state') },
    metrics: { enabled: false },
    ...extra,
  };
}

/** One whole SMTP session delivering one message; throws on anything but the expected replies. */
async function sendOne(port: number, to = 'alice@relay.test'): Promise<void> {
  const dialog = await SmtpDialog.connect(port);
  try {
    const expect = async (line: string | undefined, code: number) => {
      const reply = line === undefined ? await dialog.read() : await dialog.command(line);
      if (reply.code !== code) throw new Error(`${line ?? 'greeting'}: ${reply.text}`);
    };
    await expect(undefined, 220);
    await expect('EHLO client.test', 250);
    await expect('MAIL FROM:<loop@client.test>', 250);
    await expect(`RCPT TO:<${to}>`, 250);
    await expect('DATA', 354);
    dialog.write('Subject: under load\r\n\r\nhello\r\n.\r\n');
    await expect(undefined, 250);
    await expect('QUIT', 221);
  } finally {
    dialog.close();
  }
}

function reloads(relay: RelayProcess, event: string): number {
  return relay.logLines().filter((l) => l.event === event).length;
}

test('reloads under continuous load refuse or drop no connection; an invalid config is refused and the running one kept', { timeout: 180_000 }, async () => {
  const dir = writeTempDir('ownrelay-reload');
  const firstPort = await freePort();
  const relay = await startRelayProcess(stringify(configFor(dir, firstPort)));
  const configPath = relay.configPath;
  const write = (config: Record<string, unknown>) => writeFileSync(configPath, `# edited by the administrator\n${stringify(config)}`);
  let accepted = 0;
  const failures: string[] = [];
  let running = true;
  const opened: SmtpDialog[] = [];
  const open = async (port: number) => {
    const dialog = await SmtpDialog.connect(port);
    opened.push(dialog);
    return dialog;
  };
  const loops = Array.from({ length: 4 }, async () => {
    while (running) {
      try {
        await sendOne(relay.ports[0]!);
        accepted++;
      } catch (err) {
        failures.push(String(err));
      }
    }
  });
  try {
    await waitFor(async () => accepted >= 20, 20_000, 'mail flowing');
    // a session opened before the reloads, finished after them
    const early = await open(relay.ports[0]!);
    await early.read();
    await early.command('EHLO early.test');
    assert.equal((await early.command('MAIL FROM:<early@client.test>')).code, 250);
    assert.equal((await early.command('RCPT TO:<alice@relay.test>')).code, 250);
    assert.equal((await early.command('RCPT TO:<bob@relay.test>')).code, 250);
    // and one on the submission listener that is about to move
    const onOldPort = await open(firstPort);
    await onOldPort.read();
    await onOldPort.command('EHLO moving.test');

    for (let round = 1; round <= 6; round++) {
      const before = reloads(relay, 'reloaded');
      write(configFor(dir, firstPort, { limits: { maxRecipients: round === 6 ? 1 : 10 + round } }));
      if (round % 2 === 0) {
        process.kill(relay.pid, 'SIGHUP');
      } else {
        const result = await runCli(['--config', configPath, 'reload']);
        assert.equal(result.code, 0, result.stderr);
        assert.match(result.stdout, /^reloaded$/m);
      }
      await waitFor(async () => reloads(relay, 'reloaded') > before, 10_000, `reload ${round}`);
      const at = accepted;
      await waitFor(async () => accepted > at + 5, 10_000, 'mail flowing after the reload');
    }

    // new sessions have the last limit (one recipient), the early one keeps its two
    const fresh = await open(relay.ports[0]!);
    await fresh.read();
    await fresh.command('EHLO fresh.test');
    await fresh.command('MAIL FROM:<fresh@client.test>');
    assert.equal((await fresh.command('RCPT TO:<alice@relay.test>')).code, 250);
    assert.equal((await fresh.command('RCPT TO:<bob@relay.test>')).code, 452);
    fresh.close();
    assert.equal((await early.command('DATA')).code, 354);
    early.write('Subject: started before the reloads\r\n\r\nhello\r\n.\r\n');
    assert.equal((await early.read()).code, 250);
    early.close();

    // an invalid file: refused over the socket and on SIGHUP, the running config stays
    writeFileSync(configPath, `${stringify(configFor(dir, firstPort))}retry: soon\n`);
    const refused = await runCli(['--config', configPath, 'reload']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /refused by the relay: invalid config .*\n.*unknown key "retry"/);
    const refusalsBefore = reloads(relay, 'reload-refused');
    process.kill(relay.pid, 'SIGHUP');
    await waitFor(async () => reloads(relay, 'reload-refused') > refusalsBefore, 10_000, 'SIGHUP refusal logged');
    const at = accepted;
    await waitFor(async () => accepted > at + 5, 10_000, 'mail flowing with the kept config');
    const status = await runCli(['--config', configPath, 'status', '--json']);
    assert.equal(status.code, 0, status.stderr);

    // the submission listener moves: the new port listens, the old one takes no new
    // connections, and the session open on it still finishes its message
    const movedPort = await freePort();
    write(configFor(dir, movedPort, { relay: { networks: ['127.0.0.0/8'] } }));
    const moved = await runCli(['--config', configPath, 'reload']);
    assert.equal(moved.code, 0, moved.stderr);
    assert.match(moved.stdout, new RegExp(`replaced listener submission:127.0.0.1:${firstPort}`));
    await relay.waitForLog((l) => l.event === 'listening' && l.index === 1 && l.port === movedPort, 5_000);
    await sendOne(movedPort, 'bob@relay.test');
    await assert.rejects(SmtpDialog.connect(firstPort), /ECONNREFUSED/);
    // the session on the old port is served on (by the retired listener) until it quits
    assert.equal((await onOldPort.command('NOOP')).code, 250);
    assert.equal((await onOldPort.command('QUIT')).code, 221);

    // where the mail is kept changes only with a restart: the reload says so, mail stays where it was
    const elsewhere = configFor(dir, movedPort, { relay: { networks: ['127.0.0.0/8'] } });
    write({ ...elsewhere, paths: { ...(elsewhere.paths as object), mail: join(dir, 'other-mail') } });
    const partial = await runCli(['--config', configPath, 'reload']);
    assert.equal(partial.code, 0, partial.stderr);
    assert.match(partial.stdout, /^changed but applied only after a restart: paths$/m);
    await sendOne(movedPort, 'bob@relay.test');
  } finally {
    for (const dialog of opened) dialog.close();
    running = false;
    await Promise.all(loops);
    await relay.stop();
  }
  try {
    assert.deepEqual(failures, [], `${failures.length} failed sessions of ${accepted + failures.length}`);
    assert.ok(accepted > 50, `only ${accepted} messages sent`);
    // every accepted message is on disk: the loops, the early session (two mailboxes) and two on the moved listener
    const alice = await filesIn(join(dir, 'mail', 'relay.test', 'alice', 'new'));
    const bob = await filesIn(join(dir, 'mail', 'relay.test', 'bob', 'new'));
    assert.equal(alice.length, accepted + 1);
    assert.equal(bob.length, 3);
    assert.deepEqual(await filesIn(join(dir, 'other-mail')), []);
  } finally {
    removeDir(dir);
  }
});
