/**
 * The deploy step the server runs (infra/render/deploy-script.ts), executed for
 * real by /bin/sh on a scratch root directory with the real bundle judging the
 * config. The restart command is a stand-in (it records each restart, and fails
 * on demand), since there is no systemd to restart here. The reload is real in
 * the last tests: the script's own `ownrelay reload` talks to a relay the test
 * runs from the deployed release, config and DKIM keys.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, readdirSync, rmSync, statSync, writeFileSync, copyFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { renderDeployScript } from '../../infra/render/deploy-script';
import { PROJECT_ROOT, writeTempDir } from '../helpers/relay-process';

const run = promisify(execFile);
let root: string;
let script: string;

const VALID = (hostname: string) => `hostname: ${hostname}\nlisteners: [{ role: mx, port: 25 }]\n`;

before(async () => {
  await run('npm', ['run', '--silent', 'bundle'], { cwd: PROJECT_ROOT });
  root = writeTempDir('ownrelay-deploy');
  script = join(root, 'ownrelay-deploy');
  writeFileSync(
    script,
    renderDeployScript({
      root,
      restartCommand: `echo restart >> '${root}/restarts.log' && [ ! -f '${root}/fail-restart' ]`,
      // stand-ins for dpkg and apt: the packages named in missing-packages are "missing", and each install is recorded
      missingPackagesCommand: `cat '${root}/missing-packages' 2>/dev/null || true`,
      installPackagesCommand: `echo "$@" >> '${root}/package-installs.log' && [ ! -f '${root}/fail-install' ]`,
    }),
    { mode: 0o755 },
  );
});

after(() => rmSync(root, { recursive: true, force: true }));

const rsaKey = (bits: number): string => generateKeyPairSync('rsa', { modulusLength: bits }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const KEY_A = rsaKey(2048);
const KEY_B = rsaKey(2048);

function stage(version: string, config: string, keys: Record<string, string> = {}, under = root): string {
  const dir = join(under, 'staging', `${version}-${Math.random().toString(36).slice(2)}`);
  mkdirSync(join(dir, 'dkim'), { recursive: true });
  copyFileSync(join(PROJECT_ROOT, 'dist', 'ownrelay.js'), join(dir, 'ownrelay.js'));
  writeFileSync(join(dir, 'ownrelay.yaml'), config);
  for (const [name, pem] of Object.entries(keys)) writeFileSync(join(dir, 'dkim', name), pem);
  return dir;
}

function deploy(...args: string[]) {
  return spawnSync('/bin/sh', [script, ...args], { encoding: 'utf8' });
}

const mode = (path: string): string => (statSync(path).mode & 0o777).toString(8);

const current = () => readlinkSync(join(root, 'opt', 'ownrelay', 'current'));
const config = () => readFileSync(join(root, 'etc', 'ownrelay', 'ownrelay.yaml'), 'utf8');
const restarts = () => (existsSync(join(root, 'restarts.log')) ? readFileSync(join(root, 'restarts.log'), 'utf8').trim().split('\n').length : 0);

test('a first deploy installs the release and the config, switches current and restarts the relay', () => {
  const result = deploy('deploy', stage('v1', VALID('mail.one.test')), 'v1');
  assert.equal(result.status, 0, result.stderr);
  assert.equal(current(), join(root, 'opt', 'ownrelay', 'releases', 'v1'));
  assert.equal(config(), VALID('mail.one.test'));
  assert.equal(restarts(), 1);
});

test('a config the new release refuses changes nothing and restarts nothing', () => {
  const result = deploy('deploy', stage('v2', 'listeners: [{ role: mx, port: "twenty-five" }]\n'), 'v2');
  assert.notEqual(result.status, 0);
  assert.match(result.stderr, /listeners\.0\.port: expected number/);
  assert.match(result.stderr, /nothing was changed/);
  assert.equal(current(), join(root, 'opt', 'ownrelay', 'releases', 'v1'));
  assert.equal(config(), VALID('mail.one.test'));
  assert.equal(restarts(), 1);
});

test('a second deploy switches to the new release and keeps the previous one for rollback', () => {
  const result = deploy('deploy', stage('v3', VALID('mail.three.test')), 'v3');
  assert.equal(result.status, 0, result.stderr);
  assert.equal(current(), join(root, 'opt', 'ownrelay', 'releases', 'v3'));
  assert.equal(config(), VALID('mail.three.test'));
  assert.equal(readFileSync(join(root, 'opt', 'ownrelay', 'previous'), 'utf8').trim(), join(root, 'opt', 'ownrelay', 'releases', 'v1'));
  assert.equal(restarts(), 2);
});

test('rollback goes back to the previous release and its config', () => {
  const result = deploy('rollback');
  assert.equal(result.status, 0, result.stderr);
  assert.equal(current(), join(root, 'opt', 'ownrelay', 'releases', 'v1'));
  assert.equal(config(), VALID('mail.one.test'));
  assert.equal(restarts(), 3);
});

test('a release on which the relay does not start is switched back automatically', () => {
  writeFileSync(join(root, 'fail-restart'), '');
  const result = deploy('deploy', stage('v4', VALID('mail.four.test')), 'v4');
  rmSync(join(root, 'fail-restart'));
  assert.notEqual(result.status, 0);
  assert.match(result.stderr, /did not start on release v4; switching back/);
  assert.equal(current(), join(root, 'opt', 'ownrelay', 'releases', 'v1'));
  assert.equal(config(), VALID('mail.one.test'));
});

test('the DKIM keys are installed 0640 beside the config, and the ownrelay command follows the current release', () => {
  const result = deploy('deploy', stage('v6', VALID('mail.six.test'), { 'one.test.s1.pem': KEY_A }), 'v6');
  assert.equal(result.status, 0, result.stderr);
  const keys = join(root, 'etc', 'ownrelay', 'dkim');
  assert.equal(readFileSync(join(keys, 'one.test.s1.pem'), 'utf8'), KEY_A);
  assert.equal(mode(join(keys, 'one.test.s1.pem')), '640');
  assert.equal(mode(keys), '750');
  assert.equal(mode(join(root, 'etc', 'ownrelay', 'ownrelay.yaml')), '640');
  // the relay's user must reach the bundle, and admins the command
  for (const dir of [join(root, 'opt', 'ownrelay'), join(root, 'opt', 'ownrelay', 'releases'), join(root, 'opt', 'ownrelay', 'releases', 'v6')]) assert.equal(mode(dir), '755', dir);
  const cli = join(root, 'usr', 'local', 'bin', 'ownrelay');
  assert.ok(lstatSync(cli).isSymbolicLink());
  assert.equal(readlinkSync(cli), join(root, 'opt', 'ownrelay', 'current', 'ownrelay.js'));
  const help = spawnSync(cli, ['--help'], { encoding: 'utf8' });
  assert.equal(help.status, 0, help.stderr);
  assert.match(help.stdout, /Usage: ownrelay/);
});

test('an unusable DKIM key changes nothing', () => {
  const before = { current: current(), config: config(), restarts: restarts() };
  for (const bad of ['not a key\n', rsaKey(1024)]) {
    const result = deploy('deploy', stage('v7', VALID('mail.seven.test'), { 'one.test.s1.pem': bad }), 'v7');
    assert.notEqual(result.status, 0);
    assert.match(result.stderr, /DKIM key one\.test\.s1\.pem is unusable; nothing was changed/);
  }
  assert.deepEqual({ current: current(), config: config(), restarts: restarts() }, before);
  assert.equal(readFileSync(join(root, 'etc', 'ownrelay', 'dkim', 'one.test.s1.pem'), 'utf8'), KEY_A);
});

test('a version with path characters is refused', () => {
  const result = deploy('deploy', stage('v5', VALID('mail.five.test')), '../../etc');
  assert.notEqual(result.status, 0);
  assert.match(result.stderr, /bad version/);
  assert.ok(!readdirSync(join(root, 'opt', 'ownrelay', 'releases')).includes('etc'));
});

// ---- the reload path, against a real relay running the deployed release ----

interface RunningRelay { child: ChildProcess; lines: Record<string, unknown>[]; waitFor(event: string, after: number): Promise<void> }

function runRelay(relayRoot: string): Promise<RunningRelay> {
  const child = spawn(join(relayRoot, 'opt', 'ownrelay', 'current', 'ownrelay.js'), ['run', '--config', join(relayRoot, 'etc', 'ownrelay', 'ownrelay.yaml')], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Record<string, unknown>[] = [];
  const waiters = new Set<() => void>();
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  createInterface({ input: child.stdout! }).on('line', (text) => {
    try {
      lines.push(JSON.parse(text) as Record<string, unknown>);
    } catch {
      return;
    }
    for (const waiter of [...waiters]) waiter();
  });
  const relay: RunningRelay = {
    child,
    lines,
    waitFor: (event, after) => new Promise((resolve, reject) => {
      const check = (): void => {
        if (!lines.slice(after).some((l) => l.event === event)) return;
        clearTimeout(timer);
        waiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`no ${event} log line; stderr: ${stderr}`));
      }, 20_000);
      waiters.add(check);
      check();
    }),
  };
  return relay.waitFor('admin-listening', 0).then(() => relay);
}

test('with the same release, a new config and key are reloaded by the running relay, not restarted', async () => {
  const relayRoot = writeTempDir('ownrelay-deploy-reload');
  const relayScript = join(relayRoot, 'ownrelay-deploy');
  // the real reload (the script's default), a stand-in restart
  writeFileSync(
    relayScript,
    renderDeployScript({ root: relayRoot, restartCommand: `echo restart >> '${relayRoot}/restarts.log'`, missingPackagesCommand: 'true', installPackagesCommand: 'false' }),
    { mode: 0o755 },
  );
  const run = (...args: string[]) => spawnSync('/bin/sh', [relayScript, ...args], { encoding: 'utf8' });
  const keyFile = join(relayRoot, 'etc', 'ownrelay', 'dkim', 'one.test.s1.pem');
  const relayConfig = (extra: string, keyPath = keyFile) => [
    'hostname: mail.one.test',
    'listeners: [{ role: mx, address: 127.0.0.1, port: 0 }]',
    `paths: { spool: ${relayRoot}/var/spool, mail: ${relayRoot}/var/mail, state: ${relayRoot}/var/state }`,
    'metrics: { enabled: false }',
    `dkim: { keys: [{ domain: one.test, selector: s1, privateKeyFile: ${keyPath} }] }`,
    extra,
  ].join('\n');
  const restartCount = () => (existsSync(join(relayRoot, 'restarts.log')) ? readFileSync(join(relayRoot, 'restarts.log'), 'utf8').trim().split('\n').length : 0);
  const installed = () => readFileSync(join(relayRoot, 'etc', 'ownrelay', 'ownrelay.yaml'), 'utf8');

  const first = run('deploy', stage('r1', relayConfig('log: { level: info }'), { 'one.test.s1.pem': KEY_A }, relayRoot), 'r1');
  assert.equal(first.status, 0, first.stderr);
  assert.equal(restartCount(), 1, 'a new release restarts');
  const relay = await runRelay(relayRoot);
  try {
    // same release, new config and new key: reloaded
    let mark = relay.lines.length;
    const reloaded = run('deploy', stage('r1', relayConfig('log: { level: debug }'), { 'one.test.s1.pem': KEY_B }, relayRoot), 'r1');
    assert.equal(reloaded.status, 0, reloaded.stderr);
    assert.match(reloaded.stdout, /the relay reloaded its config/);
    await relay.waitFor('reloaded', mark);
    assert.equal(restartCount(), 1, 'no restart');
    assert.equal(readFileSync(keyFile, 'utf8'), KEY_B);

    // a config the relay refuses (its key file is missing) is put back, with the keys
    const good = installed();
    mark = relay.lines.length;
    const refused = run('deploy', stage('r1', relayConfig('log: { level: info }', join(relayRoot, 'etc', 'ownrelay', 'dkim', 'missing.pem')), {}, relayRoot), 'r1');
    assert.notEqual(refused.status, 0);
    assert.match(refused.stderr, /missing\.pem/);
    assert.match(refused.stderr, /the relay refused the new config and keeps running the previous one/);
    await relay.waitFor('reload-refused', mark);
    assert.equal(installed(), good);
    assert.equal(readFileSync(keyFile, 'utf8'), KEY_B);
    assert.equal(restartCount(), 1);
    assert.equal(relay.child.exitCode, null, 'the relay still runs');

    // a change that applies only after a restart (the certificate settings) restarts
    const tls = run('deploy', stage('r1', relayConfig('log: { level: debug }\ntls: { minVersion: TLSv1.3 }'), { 'one.test.s1.pem': KEY_B }, relayRoot), 'r1');
    assert.equal(tls.status, 0, tls.stderr);
    assert.match(tls.stdout, /applies only after a restart/);
    assert.equal(restartCount(), 2);
  } finally {
    relay.child.kill('SIGTERM');
    await new Promise((resolve) => (relay.child.exitCode === null ? relay.child.once('exit', resolve) : resolve(undefined)));
  }

  // no relay running: the deploy starts it
  const notRunning = run('deploy', stage('r1', relayConfig('log: { level: warn }'), { 'one.test.s1.pem': KEY_B }, relayRoot), 'r1');
  assert.equal(notRunning.status, 0, notRunning.stderr);
  assert.match(notRunning.stdout, /the relay is not running; starting it/);
  assert.equal(restartCount(), 3);
  rmSync(relayRoot, { recursive: true, force: true });
});

test('rollback restores the DKIM keys of the previous config', () => {
  // v6 installed KEY_A; a new release with KEY_B, then back
  const result = deploy('deploy', stage('v8', VALID('mail.eight.test'), { 'one.test.s1.pem': KEY_B }), 'v8');
  assert.equal(result.status, 0, result.stderr);
  const keyFile = join(root, 'etc', 'ownrelay', 'dkim', 'one.test.s1.pem');
  assert.equal(readFileSync(keyFile, 'utf8'), KEY_B);
  const back = deploy('rollback');
  assert.equal(back.status, 0, back.stderr);
  assert.equal(readFileSync(keyFile, 'utf8'), KEY_A);
  assert.equal(config(), VALID('mail.six.test'));
  assert.equal(readlinkSync(join(root, 'usr', 'local', 'bin', 'ownrelay')), join(root, 'opt', 'ownrelay', 'current', 'ownrelay.js'));
});

test('host packages a host lacks are installed before the switch; a host that cannot install them is deployed with a warning', () => {
  rmSync(join(root, 'fail-restart'), { force: true });
  const installs = () => (existsSync(join(root, 'package-installs.log')) ? readFileSync(join(root, 'package-installs.log'), 'utf8').trim().split('\n') : []);
  // nothing missing: apt is not run
  const none = deploy('deploy', stage('p0', VALID('mail.pkg.test')), 'p0');
  assert.equal(none.status, 0, none.stderr);
  assert.deepEqual(installs(), []);
  assert.doesNotMatch(none.stdout, /installing host packages/);

  writeFileSync(join(root, 'missing-packages'), 'unbound\nchrony\n');
  const installed = deploy('deploy', stage('p1', VALID('mail.pkg.test')), 'p1');
  assert.equal(installed.status, 0, installed.stderr);
  assert.deepEqual(installs(), ['unbound chrony']);
  assert.match(installed.stdout, /installing host packages this host lacks: unbound chrony/);
  assert.equal(current(), join(root, 'opt', 'ownrelay', 'releases', 'p1'));

  // apt fails (no mirror, a lock held too long): the deploy goes on and says what to install
  writeFileSync(join(root, 'fail-install'), '');
  const failed = deploy('deploy', stage('p2', VALID('mail.pkg.test')), 'p2');
  rmSync(join(root, 'fail-install'));
  rmSync(join(root, 'missing-packages'));
  assert.equal(failed.status, 0, failed.stderr);
  assert.match(failed.stderr, /warning: could not install unbound chrony; the relay runs without them \(install them with: apt-get install unbound chrony\)/);
  assert.equal(current(), join(root, 'opt', 'ownrelay', 'releases', 'p2'));
  assert.deepEqual(installs(), ['unbound chrony', 'unbound chrony']);
});
