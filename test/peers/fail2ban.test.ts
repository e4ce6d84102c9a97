/**
 * The fail2ban filter the infra installs, checked by fail2ban itself: the relay
 * runs as a real process, clients fail AUTH from 127.0.0.21 (an IPv4 listener)
 * and from 127.0.0.22 through a dual-stack listener (the filter also takes
 * the ::ffff: form of such addresses), one client succeeds, and `fail2ban-regex` over the
 * relay's JSON log must find exactly the failures, with the right hosts.
 *
 * Needs the Debian package fail2ban (installed by .ci/run).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderFail2banFilter } from '../../infra/render/fail2ban';
import { hashPassword } from '../../server/stages/password';
import { runCommand } from '../helpers/postfix';
import { removeDir, startRelayProcess, writeTempDir, type RelayProcess } from '../helpers/relay-process';
import { SmtpDialog } from '../helpers/smtp-dialog';

let dir: string;
let relay: RelayProcess;

before(async () => {
  if (!existsSync('/usr/bin/fail2ban-regex')) throw new Error('this test needs the Debian package fail2ban (see .ci/run)');
  dir = writeTempDir('ownrelay-fail2ban');
  const hash = await hashPassword('app-secret', 10);
  relay = await startRelayProcess(`
hostname: relay.test
listeners:
  - { role: submission, address: 127.0.0.1, port: 0, tls: implicit }
  - { role: submission, address: "::", port: 0, tls: implicit }
users:
  - { name: app, passwordHash: '${hash}', senders: ['@relay.test'] }
limits: { auth: { baseDelayMs: 0 } }
paths: { spool: ${dir}/spool, mail: ${dir}/mail, state: ${dir}/state }
`);
});

after(async () => {
  await relay?.stop();
  if (dir) removeDir(dir);
});

async function tryAuth(port: number, localAddress: string, password: string): Promise<number> {
  const dialog = await SmtpDialog.connect(port, { implicitTls: true, localAddress });
  await dialog.read();
  await dialog.command('EHLO client.test');
  const reply = await dialog.command(`AUTH PLAIN ${Buffer.from(`\0app\0${password}`).toString('base64')}`);
  dialog.close();
  return reply.code;
}

test('fail2ban-regex finds every failed AUTH in the relay log, with its IP, and nothing else', async () => {
  assert.equal(await tryAuth(relay.ports[0]!, '127.0.0.21', 'wrong-1'), 535);
  assert.equal(await tryAuth(relay.ports[0]!, '127.0.0.21', 'wrong-2'), 535);
  assert.equal(await tryAuth(relay.ports[1]!, '127.0.0.22', 'wrong-3'), 535);
  assert.equal(await tryAuth(relay.ports[0]!, '127.0.0.23', 'app-secret'), 235);
  await relay.waitForLog((l) => l.event === 'auth' && l.result === 'ok', 10_000);
  const mapped = relay.logLines().find((l) => l.event === 'auth' && String(l.client).endsWith('127.0.0.22'));
  assert.ok(mapped, 'the failure through the dual-stack listener is logged');

  const logFile = join(dir, 'relay.log');
  writeFileSync(logFile, relay.logLines().map((l) => JSON.stringify(l)).join('\n') + '\n');
  const filterFile = join(dir, 'ownrelay-auth.conf');
  writeFileSync(filterFile, renderFail2banFilter());
  const result = await runCommand('/usr/bin/fail2ban-regex', ['-v', '--print-no-missed', logFile, filterFile], { timeoutMs: 60_000 });
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /Failregex: 3 total/, result.stdout);
  const hosts = [...result.stdout.matchAll(/^\|\s+(127\.0\.0\.\d+)\s{2}/gm)].map((m) => m[1]);
  assert.deepEqual(hosts.sort(), ['127.0.0.21', '127.0.0.21', '127.0.0.22'], result.stdout);
});
