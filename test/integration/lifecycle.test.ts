/**
 * The relay as operators run it: the shipped single-file bundle with plain `node`
 * and nothing beside it, and a graceful stop on SIGTERM that lets a session in
 * the middle of DATA finish and leaves the spool consistent.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import net from 'node:net';
import { stringify } from 'yaml';
import { SmtpDialog } from '../helpers/smtp-dialog';
import { PROJECT_ROOT, removeDir, startRelayProcess, writeTempDir } from '../helpers/relay-process';
import { filesIn, spoolCounts, waitFor } from '../helpers/spool-files';

const run = promisify(execFile);

function configFor(dir: string, extra: Record<string, unknown> = {}): string {
  return stringify({
    hostname: 'relay.test',
    listeners: [{ role: 'mx', address: '127.0.0.1', port: 0, earlyTalkerCheck: false }],
    domains: [{ name: 'relay.test', delivery: 'maildir' }],
    paths: { spool: join(dir, 'spool'), mail: join(dir, 'mail'), state: join(dir, 'state') },
    // SPF/DKIM/DMARC checks have their own tests; no DNS lookups here
    inbound: { authentication: false },
    ...extra,
  });
}

async function sendTo(port: number, to: string): Promise<string> {
  const dialog = await SmtpDialog.connect(port);
  await dialog.read();
  await dialog.command('EHLO client.test');
  await dialog.command('MAIL FROM:<sender@elsewhere.test>');
  await dialog.command(`RCPT TO:<${to}>`);
  await dialog.command('DATA');
  dialog.write('Subject: bundled\r\n\r\nhello\r\n.\r\n');
  const reply = await dialog.read();
  dialog.close();
  return reply.text;
}

test('the bundle runs with plain node from an empty directory and delivers to a Maildir', { timeout: 120_000 }, async () => {
  await run('npm', ['run', '--silent', 'bundle'], { cwd: PROJECT_ROOT });
  const dir = writeTempDir('ownrelay-bundle');
  try {
    // no node_modules anywhere above the bundle's own directory
    await copyFile(join(PROJECT_ROOT, 'dist', 'ownrelay.js'), join(dir, 'ownrelay.js'));
    const { stdout } = await run(process.execPath, [join(dir, 'ownrelay.js'), '--help'], { cwd: dir });
    assert.match(stdout, /Usage: ownrelay/);
    const relay = await startRelayProcess(configFor(dir), { cwd: dir, bundleFile: join(dir, 'ownrelay.js') });
    try {
      assert.match(await sendTo(relay.ports[0]!, 'postmaster@relay.test'), /^250 /);
      const mailbox = join(dir, 'mail', 'relay.test', 'postmaster', 'new');
      const [file] = await waitFor(async () => ((await filesIn(mailbox)).length > 0 ? filesIn(mailbox) : undefined));
      assert.match(await readFile(join(mailbox, file!), 'utf8'), /Subject: bundled/);
    } finally {
      await relay.stop();
    }
  } finally {
    removeDir(dir);
  }
});

test('SIGTERM lets a session in the middle of DATA finish with 250, refuses new connections, and exits 0', { timeout: 60_000 }, async () => {
  const dir = writeTempDir('ownrelay-stop');
  try {
    // the destination is down, so the message stays queued and can be checked on disk
    const relay = await startRelayProcess(
      configFor(dir, {
        relay: { networks: ['127.0.0.0/8'] },
        delivery: { allowedDestinations: ['127.0.0.0/8'], routes: { 'down.test': { host: '127.0.0.1', port: 9, tls: 'none' } } },
      }),
    );
    const port = relay.ports[0]!;
    const dialog = await SmtpDialog.connect(port);
    await dialog.read();
    await dialog.command('EHLO client.test');
    await dialog.command('MAIL FROM:<sender@elsewhere.test>');
    await dialog.command('RCPT TO:<someone@down.test>');
    assert.equal((await dialog.command('DATA')).code, 354);
    dialog.write('Subject: in flight during shutdown\r\n\r\nfirst half\r\n');
    const exited = relay.kill('SIGTERM');
    await relay.waitForLog((l) => l.event === 'stopping', 5000);
    const refused = await new Promise<boolean>((resolve) => {
      const probe = net.connect({ port, host: '127.0.0.1' });
      probe.once('connect', () => {
        probe.destroy();
        resolve(false);
      });
      probe.once('error', () => resolve(true));
    });
    assert.ok(refused, 'no new connections once stopping');
    dialog.write('second half\r\n.\r\n');
    assert.match((await dialog.read()).text, /^250 2\.0\.0 Ok: queued as /);
    dialog.close();
    assert.equal(await exited, 0);
    const counts = await spoolCounts(join(dir, 'spool'));
    assert.equal(counts.tmp, 0);
    assert.equal(counts.incoming + counts.deferred + counts.active, 1, JSON.stringify(counts));
  } finally {
    removeDir(dir);
  }
});

test('a SIGTERM while the relay is still starting stops it gracefully once started (exit 0, nothing left behind)', { timeout: 60_000 }, async () => {
  const dir = writeTempDir('ownrelay-early-stop');
  try {
    // two listeners and a metrics endpoint: the start goes on after the first "listening" line
    const relay = await startRelayProcess(
      configFor(dir, {
        listeners: [
          { role: 'mx', address: '127.0.0.1', port: 0, earlyTalkerCheck: false },
          { role: 'mx', address: '127.0.0.1', port: 0, earlyTalkerCheck: false },
        ],
        metrics: { enabled: true, address: '127.0.0.1', port: 0 },
      }),
      { readyAt: 'listening' },
    );
    assert.equal(await relay.kill('SIGTERM'), 0, relay.output());
    assert.ok(relay.logLines().some((l) => l.event === 'stopped'), relay.output());
    const counts = await spoolCounts(join(dir, 'spool'));
    assert.equal(counts.tmp, 0);
  } finally {
    removeDir(dir);
  }
});
