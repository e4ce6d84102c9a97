/**
 * `ownrelay users add|passwd|remove|list` edit the config file in place (comments
 * kept, only scrypt hashes written), and a reloaded relay (child process) lets
 * the user AUTH with the new password and refuses the old one; nodemailer is the
 * real client that authenticates over STARTTLS. `config check` and its alias
 * `check-config` validate with the relay's messages.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { runCli } from '../helpers/ownrelay-cli';
import { removeDir, startRelayProcess, writeTempDir } from '../helpers/relay-process';

function configYaml(dir: string): string {
  return `# ownrelay config for the users test
hostname: relay.test
listeners:
  - { role: submission, address: 127.0.0.1, port: 0 }  # the applications' port
domains:
  - name: relay.test
    delivery: maildir
# users are managed with \`ownrelay users\`
users: []
paths:
  spool: ${join(dir, 'spool')}
  mail: ${join(dir, 'mail')}
  state: ${join(dir, 'state')}
metrics: { enabled: false }
`;
}

async function authSend(port: number, user: string, pass: string): Promise<'sent' | 'refused'> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, requireTLS: true, tls: { rejectUnauthorized: false }, auth: { user, pass } });
  try {
    await transport.sendMail({ from: 'app@relay.test', to: 'postmaster@relay.test', subject: 'auth test', text: 'hello' });
    return 'sent';
  } catch (err) {
    if ((err as { responseCode?: number }).responseCode === 535) return 'refused';
    throw err;
  } finally {
    transport.close();
  }
}

test('users add/passwd/remove edit the file keeping its comments, and the reloaded relay accepts exactly the current password', { timeout: 120_000 }, async () => {
  const dir = writeTempDir('ownrelay-cli-users');
  const relay = await startRelayProcess(configYaml(dir));
  try {
    const config = relay.configPath;
    const port = relay.ports[0]!;
    assert.equal(await authSend(port, 'app', 'first password 1'), 'refused');

    const added = await runCli(['--config', config, 'users', 'add', 'app', '--sender', '@relay.test', '--reload'], { input: 'first password 1\n' });
    assert.equal(added.code, 0, added.stderr);
    assert.match(added.stdout, /user app added to .*; relay reloaded/);
    const text = readFileSync(config, 'utf8');
    assert.match(text, /^# ownrelay config for the users test$/m);
    assert.match(text, /# the applications' port/);
    assert.match(text, /passwordHash: \$scrypt\$/);
    assert.doesNotMatch(text, /first password 1/);
    assert.equal(await authSend(port, 'app', 'first password 1'), 'sent');

    const duplicate = await runCli(['--config', config, 'users', 'add', 'app', '--sender', '@relay.test'], { input: 'another password\n' });
    assert.equal(duplicate.code, 1);
    assert.match(duplicate.stderr, /user app exists already/);
    const short = await runCli(['--config', config, 'users', 'add', 'other', '--sender', '@relay.test'], { input: 'short\n' });
    assert.equal(short.code, 1);
    assert.match(short.stderr, /at least 12 characters/);

    const changed = await runCli(['--config', config, 'users', 'passwd', 'app'], { input: 'second password 2\n' });
    assert.equal(changed.code, 0, changed.stderr);
    assert.match(changed.stdout, /run `ownrelay reload` to apply it/);
    // not applied until the reload
    assert.equal(await authSend(port, 'app', 'first password 1'), 'sent');
    const reloaded = await runCli(['--config', config, 'reload']);
    assert.equal(reloaded.code, 0, reloaded.stderr);
    assert.equal(await authSend(port, 'app', 'first password 1'), 'refused');
    assert.equal(await authSend(port, 'app', 'second password 2'), 'sent');

    const listed = await runCli(['--config', config, 'users', 'list', '--json']);
    assert.deepEqual(JSON.parse(listed.stdout), [{ name: 'app', senders: ['@relay.test'] }]);
    const human = await runCli(['--config', config, 'users', 'list']);
    assert.equal(human.code, 0, `stdout: ${human.stdout}\nstderr: ${human.stderr}`);
    assert.match(human.stdout, /^USER +SENDERS\napp +@relay\.test\n$/, `stderr: ${human.stderr}`);

    const removed = await runCli(['--config', config, 'users', 'remove', 'app', '--reload']);
    assert.equal(removed.code, 0, removed.stderr);
    assert.equal(await authSend(port, 'app', 'second password 2'), 'refused');
    assert.match(readFileSync(config, 'utf8'), /# users are managed with `ownrelay users`/);
    const missing = await runCli(['--config', config, 'users', 'passwd', 'app'], { input: 'third password 3\n' });
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no user app/);
  } finally {
    await relay.stop();
    removeDir(dir);
  }
});

test('config check and check-config give the relay\'s messages and exit codes', { timeout: 60_000 }, async () => {
  const dir = writeTempDir('ownrelay-cli-config');
  try {
    const good = join(dir, 'good.yaml');
    const bad = join(dir, 'bad.yaml');
    writeFileSync(good, configYaml(dir));
    writeFileSync(bad, configYaml(dir).replace('delivery: maildir', 'delivery: carrier-pigeon'));
    for (const command of [['config', 'check'], ['check-config']]) {
      const ok = await runCli([...command, good]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(ok.stdout, `${good}: valid\n`);
      const refused = await runCli([...command, bad]);
      assert.equal(refused.code, 2);
      assert.match(refused.stderr, new RegExp(`invalid config ${bad}:\\n  - line 7: domains\\.0\\.delivery: expected one of "maildir", "forward"`));
    }
  } finally {
    removeDir(dir);
  }
});
