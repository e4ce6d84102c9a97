/**
 * `ownrelay queue ...` run as a child process against the relay running as a
 * child process, with a real spool, while mail flows to a real destination
 * server (test/helpers/destination-server.ts, smtp-server) that defers on demand.
 * Every step ends by checking the spool directories on disk.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { adminTestRelayConfig } from '../helpers/admin-relay-config';
import { startDestination } from '../helpers/destination-server';
import { runCli, runCliJson } from '../helpers/ownrelay-cli';
import { removeDir, startRelayProcess, writeTempDir, type RelayProcess } from '../helpers/relay-process';
import { SmtpDialog } from '../helpers/smtp-dialog';
import { spoolCounts, waitFor } from '../helpers/spool-files';
import type { QueueItem, QueueSummary } from '../../server/admin/queue-view';
import type { ActionResult } from '../../server/admin/queue-control';
import type { RelayStatus } from '../../server/admin/admin-api';
import { freeBytes } from '../../server/queue/spool-space';

function relayConfig(dir: string, destinationPort: number, hangPort: number): string {
  return adminTestRelayConfig(dir, { 'stuck.test': destinationPort, 'hang.test': hangPort }, { commandTimeoutMs: 120_000 });
}

async function send(port: number, to: string, subject: string, dsn = { mail: '', rcpt: '' }, from = 'app@sender.test'): Promise<string> {
  const dialog = await SmtpDialog.connect(port);
  try {
    await dialog.read();
    await dialog.command('EHLO client.test');
    assert.equal((await dialog.command(`MAIL FROM:<${from}>${dsn.mail}`)).code, 250);
    assert.equal((await dialog.command(`RCPT TO:<${to}>${dsn.rcpt}`)).code, 250);
    assert.equal((await dialog.command('DATA')).code, 354);
    dialog.write(`Subject: ${subject}\r\n\r\nhello\r\n.\r\n`);
    const reply = await dialog.read();
    assert.equal(reply.code, 250, reply.text);
    return /queued as ([0-9A-Z]+)/.exec(reply.text)![1]!;
  } finally {
    dialog.close();
  }
}

test('queue list/show/summary/hold/delete/flush/release steer deferred mail, and held mail stays held across a restart', { timeout: 180_000 }, async () => {
  const dir = writeTempDir('ownrelay-cli-queue');
  let deferring = true;
  const destination = await startDestination({ rcptPolicy: () => (deferring ? { code: 451, message: '4.4.1 mailbox busy, try later' } : undefined) });
  const hang = net.createServer(() => undefined);
  await new Promise<void>((r) => hang.listen(0, '127.0.0.1', () => r()));
  const yaml = relayConfig(dir, destination.port, (hang.address() as net.AddressInfo).port);
  const spool = join(dir, 'spool');
  // a sink has a message before the relay has its 250 and removes the file from active/
  const nothingInDelivery = async () => { const c = await spoolCounts(spool); return c.deferred === 0 && c.active === 0; };
  let relay: RelayProcess | undefined = await startRelayProcess(yaml);
  try {
    const config = relay.configPath;
    const ids: Record<string, string> = {};
    for (const name of ['b', 'c', 'd']) ids[name] = await send(relay.ports[0]!, `${name}@stuck.test`, `message ${name}`);
    ids.a = await send(relay.ports[0]!, 'a@stuck.test', 'message a', { mail: ' RET=FULL ENVID=env-a', rcpt: ' NOTIFY=SUCCESS,DELAY ORCPT=rfc822;list@sender.test' });
    await waitFor(async () => (await spoolCounts(spool)).deferred === 4, 15_000, 'four deferred messages');

    const listed = await runCliJson<QueueItem[]>(['--config', config, 'queue', 'list']);
    assert.deepEqual(listed.map((i) => i.id).sort(), Object.values(ids).sort());
    for (const item of listed) {
      assert.equal(item.state, 'deferred');
      assert.equal(item.attempts, 1);
      assert.equal(item.recipients[0]!.status, 'pending');
      assert.match(item.recipients[0]!.reply ?? '', /451/);
    }
    assert.equal((await runCliJson<QueueItem[]>(['--config', config, 'queue', 'list', '--domain', 'elsewhere.test'])).length, 0);
    assert.equal((await runCliJson<QueueItem[]>(['--config', config, 'queue', 'list', '--sender', '@sender.test', '--domain', 'stuck.test'])).length, 4);
    assert.equal((await runCliJson<QueueItem[]>(['--config', config, 'queue', 'list', '--min-age', '1d'])).length, 0);

    const human = await runCli(['--config', config, 'queue', 'list']);
    assert.equal(human.code, 0);
    assert.match(human.stdout, /^QUEUE ID +STATE +SIZE +AGE +TRIES +SENDER \/ RECIPIENTS$/m);
    assert.match(human.stdout, /-- .* in 4 messages/);

    const shown = await runCli(['--config', config, 'queue', 'show', ids.a!]);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /Subject: message a/);
    // the headers as they will be passed on: with the Message-ID the relay adds, below its Received
    assert.match(shown.stdout, new RegExp(`\\n {2}Received: from client\\.test [^]*?\\n {2}Date: .*\\n {2}Message-ID: <${ids.a}@relay\\.test>\\n {2}Subject: message a\\n`));
    assert.match(shown.stdout, /last reply: .*451/);
    assert.match(shown.stdout, /^DSN: +RET=FULL ENVID=env-a$/m);
    assert.match(shown.stdout, /^ +pending +<a@stuck\.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;list@sender\.test$/m);

    const summary = await runCliJson<QueueSummary>(['--config', config, 'queue', 'summary']);
    assert.equal(summary.rows[0]!.domain, 'TOTAL');
    assert.equal(summary.rows[0]!.total, 4);
    assert.deepEqual(summary.rows.find((r) => r.domain === 'stuck.test')?.counts[0], 4);

    // hold a, delete b
    const held = await runCliJson<ActionResult[]>(['--config', config, 'queue', 'hold', ids.a!]);
    assert.deepEqual(held, [{ id: ids.a, ok: true, state: 'hold' }]);
    const deleted = await runCliJson<ActionResult[]>(['--config', config, 'queue', 'delete', ids.b!]);
    assert.deepEqual(deleted, [{ id: ids.b, ok: true }]);
    assert.deepEqual(await spoolCounts(spool), { tmp: 0, incoming: 0, active: 0, deferred: 2, hold: 1, corrupt: 0 });
    await relay.waitForLog((l) => l.event === 'queue-delete' && l.queueId === ids.b, 5_000);

    // status, over the socket named directly: queue counts from the spool, the last error per domain
    const socket = join(dir, 'state', 'admin.sock');
    const status = await runCliJson<RelayStatus>(['--socket', socket, 'status']);
    assert.equal(status.pid, relay.pid);
    assert.deepEqual(status.queue.counts, { incoming: 0, active: 0, deferred: 2, hold: 1, corrupt: 0 });
    assert.ok(status.queue.oldestAgeSeconds >= 0);
    assert.equal(status.lastErrors[0]?.domain, 'stuck.test');
    assert.match(status.lastErrors[0]?.reply ?? '', /^451 .*mailbox busy, try later$/);
    const statusText = await runCli(['--socket', socket, 'status']);
    assert.match(statusText.stdout, /^Queue: +incoming 0, active 0, deferred 2, hold 1, corrupt 0; 0 in delivery now$/m);
    assert.match(statusText.stdout, /^Certificate: CN=relay\.test, expires .* \(in \d+ days\)$/m);
    // the spool's free space, as statfs sees it, against the floor for new mail
    assert.equal(status.spool.path, spool);
    assert.ok(status.spool.freeBytes! > 0 && Math.abs(status.spool.freeBytes! - freeBytes(spool)!) < 64 * 1024 * 1024, `free ${status.spool.freeBytes}`);
    assert.equal(status.spool.minFreeBytes, 100 * 1024 * 1024);
    assert.ok(statusText.stdout.includes(`\nSpool:       ${spool}, `), statusText.stdout);
    assert.match(statusText.stdout, /^Spool: .*, [\d.]+ [KMG]iB free \(new mail refused below 100\.0 MiB\)$/m);
    assert.match(statusText.stdout, /^ {2}stuck\.test +\S+ +4 +deferred: .*451/m);

    // a held message cannot be retried; an unknown id is reported, and the exit code says so
    const refused = await runCli(['--config', config, 'queue', 'retry', ids.a!, '0000000000000000000']);
    assert.equal(refused.code, 1);
    assert.match(refused.stdout, new RegExp(`${ids.a}: not changed: is hold`));
    assert.match(refused.stdout, /0000000000000000000: not changed: not in the queue/);

    // the destination accepts now: flush delivers c and d, never the held a
    deferring = false;
    const flushed = await runCliJson<{ count: number }>(['--config', config, 'queue', 'flush']);
    assert.equal(flushed.count, 2);
    await destination.waitForMessages(2);
    await waitFor(nothingInDelivery, 10_000, 'deferred and active empty');
    assert.deepEqual(await spoolCounts(spool), { tmp: 0, incoming: 0, active: 0, deferred: 0, hold: 1, corrupt: 0 });

    // a restart leaves it in hold/: a new message is delivered, the held one is not
    await relay.stop();
    relay = undefined;
    relay = await startRelayProcess(yaml);
    const restarted = relay.configPath;
    await send(relay.ports[0]!, 'e@stuck.test', 'message e');
    await destination.waitForMessages(3);
    assert.deepEqual(destination.messages.map((m) => m.to[0]).sort(), ['c@stuck.test', 'd@stuck.test', 'e@stuck.test']);
    assert.equal((await spoolCounts(spool)).hold, 1);

    // release: delivered at once
    const released = await runCliJson<ActionResult[]>(['--config', restarted, 'queue', 'release', ids.a!]);
    assert.deepEqual(released, [{ id: ids.a, ok: true, state: 'deferred' }]);
    await destination.waitForMessages(4);
    assert.match(destination.messages[3]!.raw.toString(), /Subject: message a/);
    await waitFor(nothingInDelivery, 10_000, 'queue empty');
    assert.deepEqual(await spoolCounts(spool), { tmp: 0, incoming: 0, active: 0, deferred: 0, hold: 0, corrupt: 0 });
  } finally {
    await relay?.stop();
    await destination.close();
    hang.close();
    removeDir(dir);
  }
});

test('hold, retry and delete take a filter, --all, or ids on standard input, and refuse a command that names no message', { timeout: 120_000 }, async () => {
  const dir = writeTempDir('ownrelay-cli-select');
  let goodAttempts = 0;
  const destination = await startDestination({
    rcptPolicy: (address, attempt) => {
      if (address === 'z@stuck.test') goodAttempts = attempt;
      return { code: 451, message: '4.4.1 mailbox busy, try later' };
    },
  });
  const relay = await startRelayProcess(relayConfig(dir, destination.port, destination.port));
  const spool = join(dir, 'spool');
  const config = relay.configPath;
  const none = { mail: '', rcpt: '' };
  try {
    const spam = [await send(relay.ports[0]!, 'x@stuck.test', 'spam 1', none, 'hacked@sender.test'), await send(relay.ports[0]!, 'y@stuck.test', 'spam 2', none, 'hacked@sender.test')];
    const good = await send(relay.ports[0]!, 'z@stuck.test', 'good', none, 'app@sender.test');
    await waitFor(async () => (await spoolCounts(spool)).deferred === 3, 15_000, 'three deferred messages');

    // a command that names no message, or ids and a filter at once, changes nothing
    for (const args of [['queue', 'delete'], ['queue', 'delete', good, '--all'], ['queue', 'hold', good, '--sender', 'app@sender.test']]) {
      const refused = await runCli(['--config', config, ...args]);
      assert.equal(refused.code, 1, args.join(' '));
      assert.match(refused.stderr, /name the messages|not both/);
    }
    const wrongState = await runCli(['--config', config, 'queue', 'retry', '--state', 'hold']);
    assert.equal(wrongState.code, 1);
    assert.match(wrongState.stderr, /retry applies to deferred messages, not hold ones/);
    assert.deepEqual(await spoolCounts(spool), { tmp: 0, incoming: 0, active: 0, deferred: 3, hold: 0, corrupt: 0 });

    // the compromised sender's mail is held at one stroke; the good message is untouched
    const held = await runCliJson<ActionResult[]>(['--config', config, 'queue', 'hold', '--sender', 'hacked@sender.test']);
    assert.deepEqual(held.map((r) => r.id).sort(), [...spam].sort());
    assert.ok(held.every((r) => r.ok && r.state === 'hold'));
    assert.deepEqual(await spoolCounts(spool), { tmp: 0, incoming: 0, active: 0, deferred: 1, hold: 2, corrupt: 0 });
    const nothing = await runCli(['--config', config, 'queue', 'delete', '--sender', 'nobody@sender.test']);
    assert.equal(nothing.code, 0);
    assert.equal(nothing.stdout, 'no queued message matches\n');

    // ids piped in, as from `queue list --json | jq`
    const listed = await runCliJson<QueueItem[]>(['--config', config, 'queue', 'list', '--state', 'hold']);
    const piped = await runCli(['--config', config, 'queue', 'delete', '-'], { input: listed.map((item) => item.id).join('\n') + '\n' });
    assert.equal(piped.code, 0, piped.stderr);
    assert.equal(piped.stdout.trim().split('\n').sort().join('\n'), spam.map((id) => `${id}: deleted`).sort().join('\n'));
    for (const id of spam) await relay.waitForLog((l) => l.event === 'queue-delete' && l.queueId === id, 5_000);
    assert.deepEqual(await spoolCounts(spool), { tmp: 0, incoming: 0, active: 0, deferred: 1, hold: 0, corrupt: 0 });

    // --all: every message the action applies to
    const retried = await runCliJson<ActionResult[]>(['--config', config, 'queue', 'retry', '--all']);
    assert.deepEqual(retried.map((r) => r.id), [good]);
    await waitFor(async () => (await spoolCounts(spool)).active === 0 && goodAttempts >= 2, 15_000, 'the retry attempted');
    const deleted = await runCliJson<ActionResult[]>(['--config', config, 'queue', 'delete', '--all']);
    assert.deepEqual(deleted, [{ id: good, ok: true }]);
    assert.deepEqual(await spoolCounts(spool), { tmp: 0, incoming: 0, active: 0, deferred: 0, hold: 0, corrupt: 0 });
  } finally {
    await relay.stop();
    await destination.close();
    removeDir(dir);
  }
});

test('a message in the middle of its delivery is never deleted or held; once deferred it can be', { timeout: 120_000 }, async () => {
  const dir = writeTempDir('ownrelay-cli-busy');
  // accepts TCP and never greets: the delivery stays in progress until the test closes it
  const sockets: net.Socket[] = [];
  const hang = net.createServer((socket) => sockets.push(socket));
  await new Promise<void>((r) => hang.listen(0, '127.0.0.1', () => r()));
  const destination = await startDestination();
  const relay = await startRelayProcess(relayConfig(dir, destination.port, (hang.address() as net.AddressInfo).port));
  const spool = join(dir, 'spool');
  try {
    const id = await send(relay.ports[0]!, 'x@hang.test', 'stuck in delivery');
    await waitFor(async () => sockets.length > 0, 10_000, 'the delivery connecting');
    for (const action of ['delete', 'hold']) {
      const result = await runCli(['--config', relay.configPath, 'queue', action, id, '--json']);
      assert.equal(result.code, 1);
      const [outcome] = JSON.parse(result.stdout) as ActionResult[];
      assert.equal(outcome!.ok, false);
      assert.match(outcome!.error ?? '', /being delivered/);
    }
    const counts = await spoolCounts(spool);
    assert.equal(counts.incoming + counts.active, 1, 'the message is still on disk');

    for (const socket of sockets) socket.destroy();
    await waitFor(async () => (await spoolCounts(spool)).deferred === 1, 15_000, 'the message deferred');
    const deleted = await runCliJson<ActionResult[]>(['--config', relay.configPath, 'queue', 'delete', id]);
    assert.deepEqual(deleted, [{ id, ok: true }]);
    assert.deepEqual(await spoolCounts(spool), { tmp: 0, incoming: 0, active: 0, deferred: 0, hold: 0, corrupt: 0 });

    // the relay stopped: read-only commands read the spool and say so; changes need the relay
    await new Promise<void>((r) => hang.close(() => r()));
    await send(relay.ports[0]!, 'y@hang.test', 'left queued');
    await waitFor(async () => (await spoolCounts(spool)).deferred === 1, 15_000, 'the second message deferred');
    const configCopy = join(dir, 'config.yaml');
    copyFileSync(relay.configPath, configCopy);
    await relay.stop();
    const list = await runCli(['--config', configCopy, 'queue', 'list', '--json']);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stderr, /not running; reading the spool .* directly \(read-only\)/);
    assert.equal((JSON.parse(list.stdout) as QueueItem[]).length, 1);
    const hold = await runCli(['--config', configCopy, 'queue', 'hold', (JSON.parse(list.stdout) as QueueItem[])[0]!.id]);
    assert.equal(hold.code, 3);
    assert.match(hold.stderr, /the relay is not running/);
  } finally {
    if (!relay.exited()) await relay.stop();
    for (const socket of sockets) socket.destroy();
    hang.close();
    await destination.close();
    removeDir(dir);
  }
});
