/**
 * The admin socket of an in-process relay, spoken to directly: its file mode is
 * the access control, it answers line-delimited JSON in order, refuses what it
 * does not understand, guards the spool against a second relay, and is removed
 * on stop.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { parseConfig } from '../../server/config/load';
import { silentLogger } from '../../server/log/logger';
import { Relay } from '../../server/relay';
import { adminRequest, AdminRequestFailed, RelayNotRunning } from '../../server/admin/admin-client';
import type { RelayStatus } from '../../server/admin/admin-api';
import { baseConfig, startTestRelay } from '../helpers/test-relay';
import { spoolCounts } from '../helpers/spool-files';
import { SmtpDialog } from '../helpers/smtp-dialog';

function exchange(path: string, lines: string[]): Promise<Array<Record<string, unknown>>> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(path);
    let buffered = '';
    socket.setEncoding('utf8');
    socket.on('data', (data: string) => {
      buffered += data;
      const answers = buffered.split('\n').filter(Boolean);
      if (answers.length === lines.length && buffered.endsWith('\n')) {
        socket.destroy();
        resolve(answers.map((a) => JSON.parse(a) as Record<string, unknown>));
      }
    });
    socket.once('error', reject);
    socket.write(lines.map((l) => `${l}\n`).join(''));
  });
}

test('the admin socket is mode 0660, answers in order, refuses bad requests, and is removed on stop', { timeout: 30_000 }, async () => {
  const relay = await startTestRelay(() => ({ metrics: { enabled: false } }));
  const path = join(relay.dir, 'state', 'admin.sock');
  try {
    const stat = statSync(path);
    assert.ok(stat.isSocket());
    assert.equal(stat.mode & 0o777, 0o660);

    const answers = await exchange(path, [
      '{"op":"queue.summary"}',
      'not json',
      '{"op":"format-disk"}',
      '{"op":"queue.hold","args":{"ids":["../../etc/passwd"]}}',
      '{"op":"queue.list","args":{"state":"nowhere"}}',
      '{"op":"status"}',
    ]);
    assert.equal(answers[0]!.ok, true);
    assert.deepEqual(answers[1], { ok: false, error: 'the request is not JSON' });
    assert.deepEqual(answers[2], { ok: false, error: 'unknown operation "format-disk"' });
    assert.deepEqual(answers[3], { ok: true, result: [{ id: '../../etc/passwd', ok: false, error: 'not a queue id (19 characters, 0-9 and A-Z)' }] });
    assert.equal(answers[4]!.ok, false);
    assert.match(String(answers[4]!.error), /unknown state "nowhere"/);
    const status = answers[5]!.result as RelayStatus;
    assert.equal(status.hostname, 'relay.test');
    assert.deepEqual(status.listeners.map((l) => l.port), relay.ports);
    assert.equal(status.certificate.subject, 'CN=relay.test');
    assert.ok(status.certificate.daysLeft > 700);

    // reload without a config file is refused with a reason
    await assert.rejects(adminRequest(path, 'reload'), (err: Error) => err instanceof AdminRequestFailed && /embedded default config|no file to reload/.test(err.message));
  } finally {
    await relay.stop();
  }
  assert.equal(existsSync(path), false);
  await assert.rejects(adminRequest(path, 'status'), RelayNotRunning);
});

test('a second relay on the same state directory refuses to start and leaves the spool alone', { timeout: 30_000 }, async () => {
  const first = await startTestRelay(() => ({ metrics: { enabled: false } }));
  try {
    const config = parseConfig(stringify({ ...baseConfig(first.dir), metrics: { enabled: false } }), 'second relay');
    await assert.rejects(Relay.start(config, silentLogger()), /another relay is already running with the admin socket/);
    assert.deepEqual(await spoolCounts(join(first.dir, 'spool')), { tmp: 0, incoming: 0, active: 0, deferred: 0, hold: 0, corrupt: 0 });
    // the first one still answers
    const status = await adminRequest<RelayStatus>(join(first.dir, 'state', 'admin.sock'), 'status');
    assert.equal(status.pid, process.pid);
  } finally {
    await first.stop();
  }
});

test('status keeps the last delivery error per domain across a restart', { timeout: 30_000 }, async () => {
  // a destination that refuses connections: the message is deferred with a connection error
  const closed = net.createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = (closed.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  const overrides = () => ({
    metrics: { enabled: false },
    relay: { networks: ['127.0.0.0/8'] },
    delivery: { allowedDestinations: ['127.0.0.0/8'], routes: { 'down.test': { host: '127.0.0.1', port, tls: 'none' } } },
  });
  const first = await startTestRelay(overrides);
  const dir = first.dir;
  const path = join(dir, 'state', 'admin.sock');
  let second: Awaited<ReturnType<typeof startTestRelay>> | undefined;
  let firstStopped = false;
  try {
    const dialog = await SmtpDialog.connect(first.ports[0]!);
    await dialog.read();
    for (const command of ['EHLO client.test', 'MAIL FROM:<app@relay.test>', 'RCPT TO:<someone@down.test>', 'DATA']) await dialog.command(command);
    dialog.write('Subject: to a closed port\r\n\r\nx\r\n.\r\n');
    assert.match((await dialog.read()).text, /^250 /);
    dialog.close();
    await first.waitForLog((l) => l.event === 'deferred');
    const before = (await adminRequest<RelayStatus>(path, 'status')).lastErrors;
    assert.equal(before[0]?.domain, 'down.test');
    await first.relay.stop();
    firstStopped = true;

    second = await startTestRelay(overrides, { dir });
    const after = (await adminRequest<RelayStatus>(path, 'status')).lastErrors;
    assert.deepEqual(after, before);
  } finally {
    await second?.stop();
    if (firstStopped) rmSync(dir, { recursive: true, force: true });
    else await first.stop();
  }
});
