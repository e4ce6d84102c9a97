/**
 * `npm run render`: what a stack would publish and deploy, printed from a stack
 * file without an AWS account, by the same functions the Pulumi program uses.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stringify, parse } from 'yaml';
import { parseConfig } from '../../server/config/load';
import { PROJECT_ROOT } from '../helpers/relay-process';

const run = promisify(execFile);

const STACK = {
  config: {
    'ownrelay:domains': ['acme-widgets.com'],
    'ownrelay:dns': { mode: 'manual' },
    'ownrelay:ami': 'ami-0123456789abcdef0',
    'ownrelay:adminSshKeys': ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0wmN/Cr3JXqmLW7u+g9pTh+wyqDHpSQEIQczXkVx9q admin@acme'],
    'ownrelay:adminCidrs': ['198.51.100.0/24'],
  },
};

async function render(args: string[]): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'ownrelay-render-'));
  try {
    const file = join(dir, 'Pulumi.test-acme.yaml');
    writeFileSync(file, stringify(STACK));
    const { stdout } = await run(process.execPath, ['--import', 'tsx', 'infra/render-cli.ts', '--config', file, ...args], { cwd: PROJECT_ROOT });
    return stdout;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function relayConfigOf(output: string) {
  const start = output.indexOf('# ---- /etc/ownrelay/ownrelay.yaml');
  assert.ok(start >= 0, output);
  const yaml = output.slice(output.indexOf('\n', start) + 1);
  assert.ok(parse(yaml), 'the relay config is YAML');
  return parseConfig(yaml, 'rendered');
}

test('with --ip, the records name the address and the relay config lists it for `ownrelay doctor`', { timeout: 60_000 }, async () => {
  const output = await render(['--ip', '203.0.113.7,2001:db8::7']);
  assert.match(output, /^mail\.acme-widgets\.com\.\s+\d+\s+IN\s+A\s+203\.0\.113\.7$/m);
  assert.match(output, /v=spf1 ip4:203\.0\.113\.7 ip6:2001:db8::7 -all/);
  const config = relayConfigOf(output);
  assert.equal(config.hostname, 'mail.acme-widgets.com');
  assert.deepEqual(config.doctor.publicAddresses, ['203.0.113.7', '2001:db8::7']);
});

test('without --ip, placeholder addresses are said to be placeholders and the relay config lists none', { timeout: 60_000 }, async () => {
  const output = await render([]);
  assert.match(output, /NOTE: mail\.acme-widgets\.com: placeholder address 192\.0\.2\.10/);
  assert.deepEqual(relayConfigOf(output).doctor.publicAddresses, []);
});
