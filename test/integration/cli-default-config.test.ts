/**
 * `ownrelay status` and `ownrelay queue ...` without --config, where no config is
 * installed: they take the embedded default config (the one `npm start` runs),
 * whose admin socket and spool are under ./var/ of the current directory. The
 * relay runs as a child process in a temporary directory with the default's
 * relative paths (on a free port instead of 2525), with a real spool on disk.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { INSTALLED_CONFIG_PATH } from '../../server/cli/admin-commands';
import type { RelayStatus } from '../../server/admin/admin-api';
import type { QueueItem } from '../../server/admin/queue-view';
import { runCli } from '../helpers/ownrelay-cli';
import { closedPort } from '../helpers/ports';
import { removeDir, startRelayProcess, writeTempDir } from '../helpers/relay-process';
import { sendMessage } from '../helpers/smtp-dialog';
import { spoolCounts, waitFor } from '../helpers/spool-files';

test('without --config or an installed config, status and queue find the relay of the embedded default config under ./var/ here, and read its spool when it is stopped', { timeout: 120_000 }, async () => {
  assert.equal(existsSync(INSTALLED_CONFIG_PATH), false, `${INSTALLED_CONFIG_PATH} exists on this machine: the commands would use it`);
  const here = writeTempDir('ownrelay-default-here');
  const elsewhere = writeTempDir('ownrelay-default-elsewhere');
  const relay = await startRelayProcess(
    stringify({
      hostname: 'localhost',
      listeners: [{ role: 'mx', address: '127.0.0.1', port: 0, earlyTalkerCheck: false }],
      domains: [{ name: 'localhost', delivery: 'maildir' }],
      relay: { networks: ['127.0.0.0/8'] },
      // the embedded default's paths, relative to the relay's working directory
      paths: { spool: './var/spool', mail: './var/mail', state: './var/state' },
      metrics: { enabled: false },
      delivery: {
        allowedDestinations: ['127.0.0.0/8'],
        retry: { minBackoffMs: 3_600_000, maxBackoffMs: 3_600_000 },
        routes: { 'stuck.test': { host: '127.0.0.1', port: await closedPort(), tls: 'none' } },
      },
    }),
    { cwd: here },
  );
  try {
    const queued = await sendMessage(relay.ports[0]!, { from: 'app@localhost', to: 'someone@stuck.test', subject: 'waits' });
    const spool = join(here, 'var', 'spool');
    await waitFor(async () => (await spoolCounts(spool)).deferred === 1, 20_000, 'the message deferred');

    const status = await runCli(['status', '--json'], { cwd: here });
    assert.equal(status.code, 0, status.stderr);
    const reported = JSON.parse(status.stdout) as RelayStatus;
    assert.equal(reported.pid, relay.pid);
    assert.equal(reported.queue.counts.deferred, 1);

    const online = await runCli(['queue', 'list', '--json'], { cwd: here });
    assert.equal(online.code, 0, online.stderr);
    assert.deepEqual((JSON.parse(online.stdout) as QueueItem[]).map((m) => m.id), [queued]);

    const none = await runCli(['queue', 'list', '--domain', 'other.test'], { cwd: here });
    assert.equal(none.stdout, 'No queued message matches the filter\n', none.stderr);

    await relay.stop();
    const offline = await runCli(['queue', 'list', '--json'], { cwd: here });
    assert.equal(offline.code, 0, offline.stderr);
    assert.deepEqual((JSON.parse(offline.stdout) as QueueItem[]).map((m) => m.id), [queued]);
    assert.match(offline.stderr, /the relay is not running; reading the spool \.\/var\/spool directly \(read-only\)/);
    const hold = await runCli(['queue', 'hold', queued], { cwd: here });
    assert.equal(hold.code, 3, `a change needs the running relay: ${hold.stderr}`);
    assert.equal((await spoolCounts(spool)).deferred, 1, 'the message is where it was');

    // where no relay ever ran: "not running", naming the socket it looked for
    const nothing = await runCli(['status'], { cwd: elsewhere });
    assert.equal(nothing.code, 3);
    assert.ok(nothing.stderr.includes(`the relay is not running (no answer on ${join(elsewhere, 'var', 'state', 'admin.sock')}`), nothing.stderr);
    const listed = await runCli(['queue', 'list'], { cwd: elsewhere });
    assert.equal(listed.code, 3, listed.stderr);
    // a command that edits the config file still needs one
    const users = await runCli(['users', 'list'], { cwd: here });
    assert.equal(users.code, 1);
    assert.match(users.stderr, /no config file: give --config FILE/);
  } finally {
    await relay.stop().catch(() => undefined);
    removeDir(here);
    removeDir(elsewhere);
  }
});
