/**
 * RelayDeploy under Pulumi's mocks: what it asks the SSH provider to do. The
 * remote steps themselves are tested for real in infra-deploy-script.test.ts.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as pulumi from '@pulumi/pulumi';

interface Created {
  type: string;
  name: string;
  inputs: Record<string, unknown>;
}
const created: Created[] = [];

pulumi.runtime.setMocks(
  {
    newResource: (args) => {
      created.push({ type: args.type, name: args.name, inputs: args.inputs as Record<string, unknown> });
      return { id: `${args.name}-id`, state: { ...args.inputs, stdout: 'ownrelay-deploy: running release' } };
    },
    call: (args) => args.inputs,
  },
  'ownrelay',
  'acme',
  false,
);

function unwrap<T>(output: pulumi.Output<T>): Promise<T> {
  return new Promise((resolve) => output.apply(resolve));
}

let version: string;

before(async () => {
  // loaded after setMocks, as Pulumi requires
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { RelayDeploy, sha256Hex } = require('../../infra/components/deploy') as typeof import('../../infra/components/deploy');
  const dir = mkdtempSync(join(tmpdir(), 'ownrelay-deploy-mock-'));
  const bundlePath = join(dir, 'ownrelay.js');
  writeFileSync(bundlePath, '#!/usr/bin/env node\nconsole.log("relay")\n');
  const deploy = new RelayDeploy('mail-1', {
    host: '198.51.100.7',
    user: 'admin',
    privateKey: '-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----\n',
    hostPublicKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfTheServer',
    bundlePath,
    configYaml: 'hostname: mail.acme-widgets.com\nlisteners: [{ role: mx, port: 25 }]\n',
    dkimKeys: [{ fileName: 'acme-widgets.com.ownrelay1.pem', privateKeyPem: '-----BEGIN PRIVATE KEY-----\nfake\n-----END PRIVATE KEY-----\n' }],
  });
  version = deploy.version;
  assert.equal(version, sha256Hex(readBundle(bundlePath)).slice(0, 16));
  await unwrap(deploy.output);
});

function readBundle(path: string): Buffer {
  return readFileSync(path);
}

/** The mock sees secret inputs in Pulumi's wire form: { <secret signature>: ..., value }. */
const SECRET_SIG = '4dabf18193072939515e22adb298388d';
function unsecret(value: unknown): Record<string, unknown> {
  const object = value as Record<string, unknown>;
  return (SECRET_SIG in object ? object.value : object) as Record<string, unknown>;
}

test('the SSH private key, the relay config and the DKIM key travel as secrets', () => {
  for (const step of [...commands(), ...copies()]) assert.ok(SECRET_SIG in (step.inputs.connection as object), `${step.name}: connection is secret`);
  const config = copies().find((c) => c.name === 'mail-1-config');
  assert.ok(config && SECRET_SIG in (config.inputs.source as object), 'the config asset is secret');
  const key = copies().find((c) => c.name === 'mail-1-dkim-acme-widgets.com.ownrelay1');
  assert.ok(key && SECRET_SIG in (key.inputs.source as object), 'the key asset is secret');
});

test('a DKIM key file name that is not a plain *.pem name is refused', () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { RelayDeploy } = require('../../infra/components/deploy') as typeof import('../../infra/components/deploy');
  const dir = mkdtempSync(join(tmpdir(), 'ownrelay-deploy-mock-'));
  writeFileSync(join(dir, 'ownrelay.js'), '');
  assert.throws(() => new RelayDeploy('bad', {
    host: '198.51.100.7', user: 'admin', privateKey: 'k', hostPublicKey: 'ssh-ed25519 AAAA', bundlePath: join(dir, 'ownrelay.js'), configYaml: '',
    dkimKeys: [{ fileName: '../../etc/passwd.pem', privateKeyPem: 'x' }],
  }), /not a plain \*\.pem name/);
});

const commands = () => created.filter((r) => r.type === 'command:remote:Command');
const copies = () => created.filter((r) => r.type === 'command:remote:CopyToRemote');

test('every SSH step pins the host key of the server', () => {
  const steps = [...commands(), ...copies()];
  assert.equal(steps.length, 6);
  for (const step of steps) {
    const connection = unsecret(step.inputs.connection);
    assert.equal(connection.hostKey, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfTheServer', step.name);
    assert.equal(connection.host, '198.51.100.7');
  }
});

test('the bundle, the config, the DKIM keys and the deploy script are copied to a staging directory in the admin home', () => {
  const targets = copies().map((c) => String(c.inputs.remotePath));
  assert.equal(targets.length, 4);
  for (const target of targets) assert.match(target, /^ownrelay-staging-[0-9a-f]{16}\/(ownrelay\.js|ownrelay\.yaml|ownrelay-deploy|dkim\/acme-widgets\.com\.ownrelay1\.pem)$/);
  const prepare = commands().find((c) => c.name === 'mail-1-staging');
  assert.match(String(prepare?.inputs.create), /^install -d -m 0700 (ownrelay-staging-[0-9a-f]{16}) \1\/dkim$/);
});

test('the deploy runs the checked, atomic deploy step with the bundle hash as version, and again only when something changes', () => {
  const run = commands().find((c) => c.name === 'mail-1-run');
  assert.ok(run);
  assert.match(String(run.inputs.create), new RegExp(`sudo /usr/local/sbin/ownrelay-deploy deploy ownrelay-staging-[0-9a-f]{16} ${version}`));
  const triggers = run.inputs.triggers as unknown[];
  assert.equal(triggers[0], version);
  assert.equal(triggers.length, 4, 'bundle, config, script and keys');
  assert.match(String(run.inputs.create), /; status=\$\?; rm -rf ownrelay-staging-[0-9a-f]{16}; exit \$status$/, 'the staged secrets go even when the deploy fails');
});
