/**
 * A full disk, for real: the relay runs as a child process whose spool (and, in
 * one test, Maildir root) is a small tmpfs of its own (a private mount namespace,
 * see `smallDisk`), and the test fills that file system with a filler file.
 *
 * - below `limits.spoolMinFreeBytes` (plus the declared SIZE) MAIL FROM gets
 *   452 4.3.1, and the free space is a metric;
 * - a message that runs out of space while it is written gets 452 4.3.1 after
 *   its final dot and leaves no file behind, on both write paths;
 * - a DSN that cannot be queued keeps its message queued, and goes out once
 *   there is room again; a Maildir delivery onto a full disk is deferred;
 * - in every case the relay goes on, and takes and delivers mail once the
 *   filler is gone.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { startGatedDestination } from '../helpers/gated-destination';
import { runCli } from '../helpers/ownrelay-cli';
import { removeDir, startRelayProcess, viewOf, writeTempDir, type RelayProcess } from '../helpers/relay-process';
import { SmtpDialog } from '../helpers/smtp-dialog';
import { spoolCounts, waitFor, waitForDrainedSpool } from '../helpers/spool-files';

const MiB = 1024 * 1024;

interface SmallDiskRelay {
  relay: RelayProcess;
  /** the relay's small file system, as this process sees it */
  disk: string;
  /** the relay's state directory (with its admin socket), on the ordinary disk */
  stateDir: string;
  /** Writes a filler file so that about `leaveBytes` stay free (0: none at all). */
  fill(leaveBytes: number): void;
  /** Removes the filler. */
  unfill(): void;
  /** Remounts the small disk read-only or read-write, as ext4 turns read-only after an I/O error. */
  remount(mode: 'ro' | 'rw'): void;
  /** Files of a Maildir's new/ (on the small disk or not). */
  mailbox(mailbox: string): string[];
  stop(): Promise<void>;
}

/**
 * A relay on loopback receiving for relay.test (Maildir) and relaying for
 * 127.0.0.0/8, with its spool on a tmpfs of `diskBytes`; `mailOnDisk` puts
 * the Maildir root there too.
 */
async function startOnSmallDisk(options: { diskBytes: number; minFreeBytes: number; mailOnDisk?: boolean; extra?: Record<string, unknown> }): Promise<SmallDiskRelay> {
  const dir = writeTempDir('ownrelay-small-disk');
  const diskDir = join(dir, 'disk');
  mkdirSync(diskDir);
  const mailDir = options.mailOnDisk ? join(diskDir, 'mail') : join(dir, 'mail');
  const config = {
    hostname: 'relay.test',
    listeners: [{ role: 'submission', address: '127.0.0.1', port: 0 }],
    domains: [{ name: 'relay.test', delivery: 'maildir', mailboxes: ['alice'] }],
    relay: { networks: ['127.0.0.0/8'] },
    paths: { spool: join(diskDir, 'spool'), mail: mailDir, state: join(dir, 'state') },
    limits: { spoolMinFreeBytes: options.minFreeBytes },
    delivery: { allowedDestinations: ['127.0.0.0/8'], retry: { minBackoffMs: 300, maxBackoffMs: 600 } },
    inbound: { authentication: false },
    metrics: { address: '127.0.0.1', port: 0 },
    ...options.extra,
  };
  let relay: RelayProcess;
  try {
    relay = await startRelayProcess(stringify(config), { smallDisk: { dir: diskDir, bytes: options.diskBytes } });
  } catch (err) {
    removeDir(dir);
    throw err;
  }
  const disk = viewOf(relay.pid, diskDir);
  const filler = join(disk, 'filler');
  return {
    relay,
    disk,
    stateDir: join(dir, 'state'),
    fill(leaveBytes) {
      rmSync(filler, { force: true });
      const stats = statfsSync(disk);
      const size = Math.max(0, stats.bavail * stats.bsize - leaveBytes);
      try {
        // more than fits when nothing is to be left: the write stops at a full disk
        writeFileSync(filler, Buffer.alloc(leaveBytes === 0 ? size + MiB : size, 0x61));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC' || leaveBytes !== 0) throw err;
      }
    },
    unfill() {
      rmSync(filler, { force: true });
    },
    remount(mode) {
      // into the relay's mount namespace (and, outside root, its user namespace)
      const enter = process.getuid?.() === 0 ? ['-m'] : ['-U', '-m', '--preserve-credentials'];
      // a bind remount changes only this mount's flag, which a user namespace may do too
      execFileSync('nsenter', ['-t', String(relay.pid), ...enter, 'mount', '-o', `remount,bind,${mode}`, diskDir]);
    },
    mailbox(mailbox) {
      const newDir = join(options.mailOnDisk ? viewOf(relay.pid, mailDir) : mailDir, 'relay.test', mailbox, 'new');
      try {
        return readdirSync(newDir).map((name) => join(newDir, name));
      } catch {
        return [];
      }
    },
    async stop() {
      try {
        await relay.stop();
      } finally {
        removeDir(dir);
      }
    },
  };
}

/** Sends one message in one session; returns the replies to MAIL FROM and to the final dot (undefined when MAIL FROM was refused). */
async function send(port: number, message: { from: string; to: string; body: string; mailArgs?: string }): Promise<{ mail: number; data?: string }> {
  const dialog = await SmtpDialog.connect(port);
  try {
    await dialog.read();
    await dialog.command('EHLO client.test');
    const mail = await dialog.command(`MAIL FROM:<${message.from}>${message.mailArgs ? ` ${message.mailArgs}` : ''}`);
    if (mail.code !== 250) return { mail: mail.code };
    assert.equal((await dialog.command(`RCPT TO:<${message.to}>`)).code, 250);
    assert.equal((await dialog.command('DATA')).code, 354);
    dialog.write(`${message.body}\r\n.\r\n`);
    const data = await dialog.read(20_000);
    await dialog.command('QUIT');
    return { mail: mail.code, data: data.text };
  } finally {
    dialog.close();
  }
}

/** A message body of about `bytes`, in 76-character lines. */
function bodyOf(bytes: number, subject: string): string {
  const line = 'x'.repeat(76);
  return `Subject: ${subject}\r\n\r\n${Array.from({ length: Math.ceil(bytes / 78) }, () => line).join('\r\n')}`;
}

async function scrapeSpoolFree(relay: RelayProcess): Promise<number> {
  const port = (await relay.waitForLog((l) => l.event === 'metrics-listening', 5000)).port as number;
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const match = /^ownrelay_spool_free_bytes (\d+)$/m.exec(text);
  assert.ok(match, `no ownrelay_spool_free_bytes in:\n${text}`);
  return Number(match[1]);
}

test('below limits.spoolMinFreeBytes plus the declared SIZE, MAIL FROM gets 452 4.3.1; with room again mail flows', { timeout: 60_000 }, async () => {
  const small = await startOnSmallDisk({ diskBytes: 8 * MiB, minFreeBytes: 2 * MiB });
  try {
    const port = small.relay.ports[0]!;
    const to = 'alice@relay.test';
    assert.match((await send(port, { from: 'app@client.test', to, body: bodyOf(1024, 'before') })).data!, /^250 2\.0\.0 /);

    small.fill(1 * MiB);
    const free = statfsSync(small.disk).bavail * statfsSync(small.disk).bsize;
    const scraped = await scrapeSpoolFree(small.relay);
    assert.ok(Math.abs(scraped - free) <= 64 * 1024, `metric says ${scraped} bytes free, statfs ${free}`);
    const refused = await SmtpDialog.connect(port);
    try {
      await refused.read();
      await refused.command('EHLO client.test');
      const reply = await refused.command('MAIL FROM:<app@client.test>');
      assert.equal(reply.code, 452);
      assert.match(reply.text, /^452 4\.3\.1 Insufficient system storage/);
    } finally {
      refused.close();
    }
    const status = await runCli(['--socket', join(small.stateDir, 'admin.sock'), 'status']);
    assert.match(status.stdout, /^Spool: .*, [\d.]+ [KM]iB free \(new mail refused below 2\.0 MiB\)  <-- full: new mail gets 452$/m);
    const logged = await small.relay.waitForLog((l) => l.event === 'spool-full', 5000);
    assert.equal(logged.neededBytes, 2 * MiB);
    assert.ok((logged.freeBytes as number) < 2 * MiB);

    // 3 MiB free: enough for a message of unknown size, and for one declared
    // 512 KiB, but not for one declared 1.5 MiB
    small.fill(3 * MiB);
    assert.equal((await send(port, { from: 'app@client.test', to, body: 'x', mailArgs: `SIZE=${1.5 * MiB}` })).mail, 452);
    assert.match((await send(port, { from: 'app@client.test', to, body: bodyOf(1024, 'declared'), mailArgs: `SIZE=${512 * 1024}` })).data!, /^250 /);
    assert.match((await send(port, { from: 'app@client.test', to, body: bodyOf(1024, 'undeclared') })).data!, /^250 /);

    small.unfill();
    assert.match((await send(port, { from: 'app@client.test', to, body: bodyOf(1024, 'after') })).data!, /^250 /);
    await waitFor(async () => small.mailbox('alice').length === 4, 10_000, 'four messages in the Maildir');
    assert.deepEqual(await spoolCounts(join(small.disk, 'spool')), { tmp: 0, incoming: 0, active: 0, deferred: 0, hold: 0, corrupt: 0 });
  } finally {
    await small.stop();
  }
});

test('a message that runs out of disk while it is written gets 452 4.3.1 and leaves nothing behind, on both write paths', { timeout: 60_000 }, async () => {
  // no reserve: only the disk's real end refuses mail
  const small = await startOnSmallDisk({ diskBytes: 4 * MiB, minFreeBytes: 0 });
  try {
    const port = small.relay.ports[0]!;
    const to = 'alice@relay.test';
    small.fill(128 * 1024);
    // 200 KiB is written whole by the spool's group-commit thread, 600 KiB in pieces as it arrives
    for (const size of [200 * 1024, 600 * 1024]) {
      const result = await send(port, { from: 'app@client.test', to, body: bodyOf(size, `${size} bytes`) });
      assert.equal(result.mail, 250);
      assert.match(result.data!, /^452 4\.3\.1 Insufficient system storage/, `${size} bytes`);
      assert.deepEqual(await spoolCounts(join(small.disk, 'spool')), { tmp: 0, incoming: 0, active: 0, deferred: 0, hold: 0, corrupt: 0 });
    }
    const refusal = small.relay.logLines().find((l) => l.event === 'refused' && l.code === 452);
    assert.ok(refusal, 'the refusal is logged with its code');
    assert.match(String(refusal.reason), /ENOSPC/);
    // what still fits is taken, and the relay is alive and well
    assert.match((await send(port, { from: 'app@client.test', to, body: bodyOf(1024, 'small') })).data!, /^250 /);

    small.unfill();
    assert.match((await send(port, { from: 'app@client.test', to, body: bodyOf(600 * 1024, 'large, with room') })).data!, /^250 /);
    await waitFor(async () => small.mailbox('alice').length === 2, 10_000, 'both accepted messages in the Maildir');
    const large = small.mailbox('alice').map((file) => readFileSync(file, 'latin1')).find((text) => text.includes('Subject: large, with room'));
    assert.ok(large, 'the large message is in the Maildir');
    // every line of the body arrived (a Maildir keeps lines with LF endings)
    assert.equal(large.split('\n').filter((line) => line === 'x'.repeat(76)).length, Math.ceil((600 * 1024) / 78));
  } finally {
    await small.stop();
  }
});

test('a DSN that cannot be queued on a full disk keeps its message queued, and is sent once there is room', { timeout: 60_000 }, async () => {
  const destination = await startGatedDestination({ code: 550, message: '5.1.1 no such user here' });
  const small = await startOnSmallDisk({ diskBytes: 4 * MiB, minFreeBytes: 0, extra: destination.route });
  try {
    const sent = await send(small.relay.ports[0]!, { from: 'alice@relay.test', to: 'nobody@remote.test', body: bodyOf(1024, 'will bounce') });
    assert.match(sent.data!, /^250 2\.0\.0 Ok: queued as (\S+)/);
    const queueId = /queued as (\S+)/.exec(sent.data!)![1]!;
    await destination.firstRcpt;
    small.fill(0);
    destination.release();

    const failed = await small.relay.waitForLog((l) => l.event === 'bounce-error' && l.queueId === queueId, 10_000);
    assert.match(String(failed.err), /ENOSPC/);
    // still queued, for another attempt; nothing in the sender's Maildir yet
    await waitFor(async () => (await spoolCounts(join(small.disk, 'spool'))).deferred === 1, 5000, 'the message in deferred/');
    assert.equal(small.relay.logLines().some((l) => l.event === 'bounced'), false);
    assert.deepEqual(small.mailbox('alice'), []);

    small.unfill();
    const bounced = await small.relay.waitForLog((l) => l.event === 'bounced' && l.queueId === queueId, 10_000);
    await waitFor(async () => small.mailbox('alice').length === 1, 10_000, 'the DSN in the sender\'s Maildir');
    const dsn = readFileSync(small.mailbox('alice')[0]!, 'utf8');
    assert.match(dsn, /multipart\/report; report-type=delivery-status/);
    assert.match(dsn, /Final-Recipient: rfc822; ?nobody@remote\.test/i);
    assert.match(dsn, /550 5\.1\.1 no such user here/);
    assert.equal(bounced.bounceId !== undefined, true);
    await waitForDrainedSpool(join(small.disk, 'spool'));
    // the recipient was tried again while the disk was full, never dropped
    assert.ok(destination.state.rcptCount >= 2, `the destination saw ${destination.state.rcptCount} RCPT`);
  } finally {
    await destination.close();
    await small.stop();
  }
});

test('a Maildir delivery onto a full disk is deferred with 452 4.3.1 and delivered once there is room', { timeout: 60_000 }, async () => {
  // spool and Maildirs on one small disk: room for the queued copy, not for the delivered one
  const small = await startOnSmallDisk({ diskBytes: 4 * MiB, minFreeBytes: 0, mailOnDisk: true });
  try {
    small.fill(450 * 1024);
    const sent = await send(small.relay.ports[0]!, { from: 'app@client.test', to: 'alice@relay.test', body: bodyOf(300 * 1024, 'no room in the mailbox') });
    assert.match(sent.data!, /^250 /);
    const deferred = await small.relay.waitForLog((l) => l.event === 'deferred', 10_000);
    assert.match(String(deferred.reply), /^452 4\.3\.1 local delivery failed/);
    assert.deepEqual(small.mailbox('alice'), []);

    small.unfill();
    await waitFor(async () => small.mailbox('alice').length === 1, 10_000, 'the message in the Maildir');
    assert.ok(readFileSync(small.mailbox('alice')[0]!, 'latin1').includes('Subject: no room in the mailbox'));
    await waitForDrainedSpool(join(small.disk, 'spool'));
  } finally {
    await small.stop();
  }
});

test('a spool that turns read-only: new mail gets 451 4.3.0, a delivered message that cannot be removed is kept, and the relay goes on', { timeout: 60_000 }, async () => {
  const destination = await startGatedDestination();
  const small = await startOnSmallDisk({ diskBytes: 4 * MiB, minFreeBytes: 0, extra: destination.route });
  try {
    const port = small.relay.ports[0]!;
    const sent = await send(port, { from: 'app@client.test', to: 'someone@remote.test', body: bodyOf(1024, 'delivered onto a read-only spool') });
    const queueId = /queued as (\S+)/.exec(sent.data!)![1]!;
    await destination.firstRcpt;
    small.remount('ro');
    destination.release();

    // delivered, but its queue file cannot be removed nor moved: it stays, and the error is logged
    await small.relay.waitForLog((l) => l.event === 'delivered' && l.queueId === queueId, 10_000);
    const stuck = await small.relay.waitForLog((l) => l.event === 'scheduler-error' && l.queueId === queueId, 10_000);
    assert.match(String(stuck.err), /EROFS/);
    assert.equal(stuck.stranded, true, 'the log says the message waits for the next start');
    const counts = await spoolCounts(join(small.disk, 'spool'));
    assert.equal(counts.incoming + counts.active + counts.deferred, 1, 'the queue file is still there');
    assert.deepEqual(destination.state.delivered, ['someone@remote.test']);

    const refused = await send(port, { from: 'app@client.test', to: 'someone@remote.test', body: bodyOf(1024, 'refused') });
    assert.match(refused.data!, /^451 4\.3\.0 /);

    small.remount('rw');
    const after = await send(port, { from: 'app@client.test', to: 'someone@remote.test', body: bodyOf(1024, 'after') });
    assert.match(after.data!, /^250 /);
    await waitFor(async () => destination.state.delivered.length === 2, 10_000, 'the message sent after the remount at the destination');
  } finally {
    await destination.close();
    await small.stop();
  }
});
