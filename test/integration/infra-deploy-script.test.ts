/**
 * The deploy step the server runs (infra/render/deploy-script.ts), executed for
 * real by /bin/sh on a scratch root directory with the real bundle judging the
 * config. Only the restart command is a stand-in (it records each restart, and
 * fails on demand), since there is no systemd to restart here.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readlinkSync, readdirSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
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
    renderDeployScript({ root, restartCommand: `echo restart >> '${root}/restarts.log' && [ ! -f '${root}/fail-restart' ]` }),
    { mode: 0o755 },
  );
});

after(() => rmSync(root, { recursive: true, force: true }));

function stage(version: string, config: string): string {
  const dir = join(root, 'staging', version);
  mkdirSync(dir, { recursive: true });
  copyFileSync(join(PROJECT_ROOT, 'dist', 'ownrelay.js'), join(dir, 'ownrelay.js'));
  writeFileSync(join(dir, 'ownrelay.yaml'), config);
  return dir;
}

function deploy(...args: string[]) {
  return spawnSync('/bin/sh', [script, ...args], { encoding: 'utf8' });
}

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

test('a version with path characters is refused', () => {
  const result = deploy('deploy', stage('v5', VALID('mail.five.test')), '../../etc');
  assert.notEqual(result.status, 0);
  assert.match(result.stderr, /bad version/);
  assert.ok(!readdirSync(join(root, 'opt', 'ownrelay', 'releases')).includes('etc'));
});
