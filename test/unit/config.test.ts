/**
 * The config contract: one schema for the embedded default, the example file and
 * every user file; a broken file is refused with the file, the line, the key path
 * and what was expected; the exported JSON Schema is the schema's own.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { ConfigError, defaultConfig, loadConfigFile, parseConfig } from '../../server/config/load';
import { RelayConfigSchema } from '../../server/config/schema';

const CONFIG_DIR = join(__dirname, '..', '..', 'server', 'config');

function problemsOf(text: string): string[] {
  try {
    parseConfig(text, '/etc/ownrelay/ownrelay.yaml');
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, /^invalid config \/etc\/ownrelay\/ownrelay\.yaml:/);
    return err.problems;
  }
  assert.fail('the config was accepted');
}

test('the embedded default runs on loopback: MX on 2525, submission on 2587, Maildir for localhost under ./var', () => {
  const config = defaultConfig();
  assert.deepEqual(
    config.listeners.map((l) => [l.role, l.address, l.port]),
    [
      ['mx', '127.0.0.1', 2525],
      ['submission', '127.0.0.1', 2587],
    ],
  );
  assert.deepEqual(config.domains.map((d) => [d.name, d.delivery]), [['localhost', 'maildir']]);
  assert.deepEqual(config.relay.networks, ['127.0.0.0/8', '::1/128']);
  assert.equal(config.paths.spool, './var/spool');
  assert.equal(config.paths.mail, './var/mail');
  assert.equal(config.delivery.retry.minBackoffMs, 300_000);
  assert.equal(config.delivery.retry.maxQueueLifetimeMs, 5 * 24 * 3600_000);
});

test('the commented example config is valid and sets every top-level key', async () => {
  const path = join(CONFIG_DIR, 'ownrelay.example.yaml');
  const config = loadConfigFile(path);
  const text = await readFile(path, 'utf8');
  for (const key of Object.keys(RelayConfigSchema.shape)) assert.match(text, new RegExp(`^${key}:`, 'm'), `example sets ${key}`);
  assert.equal(config.hostname, 'mail.example.org');
});

test('the shipped JSON Schema is generated from the config schema (run `ownrelay config-schema` after changing it)', async () => {
  const shipped = JSON.parse(await readFile(join(CONFIG_DIR, 'ownrelay.schema.json'), 'utf8')) as unknown;
  assert.deepEqual(shipped, z.toJSONSchema(RelayConfigSchema, { io: 'input' }));
});

test('a wrong type names the line, the key path and what was expected', () => {
  const problems = problemsOf('listeners:\n  - role: mx\n    port: "twenty-five"\n');
  assert.deepEqual(problems, ['line 3: listeners.0.port: expected number, received string']);
});

test('an unknown key and a bad enum value are both reported', () => {
  const problems = problemsOf(['listeners:', '  - role: mxx', '    port: 25', 'limitz: {}'].join('\n'));
  assert.deepEqual(problems, ['line 2: listeners.0.role: expected one of "mx", "submission"', 'line 1: (top level): unknown key "limitz"']);
});

test('a network that is not a CIDR range is refused', () => {
  const problems = problemsOf(['listeners: [{ role: mx, port: 25 }]', 'relay:', '  networks: [10.0.0.0/33]'].join('\n'));
  assert.match(problems[0]!, /^line 3: relay\.networks\.0: expected an IP address or CIDR range/);
});

test('a plain-text password is refused', () => {
  const problems = problemsOf('listeners: [{ role: submission, port: 587 }]\nusers:\n  - name: app\n    passwordHash: hunter2\n    senders: ["@example.org"]\n');
  assert.match(problems[0]!, /^line 4: users\.0\.passwordHash: expected a \$scrypt\$ hash/);
});

test('a certificate without its key, and a forward domain without a next hop, are refused', () => {
  const problems = problemsOf('listeners: [{ role: mx, port: 25 }]\ntls: { certFile: /etc/cert.pem }\ndomains: [{ name: example.org, delivery: forward }]\n');
  assert.ok(problems.some((p) => p.includes('tls.keyFile: certFile and keyFile must be set together')), problems.join('\n'));
  assert.ok(problems.some((p) => p.includes('domains.0.forwardTo: required when delivery is forward')), problems.join('\n'));
});

test('a YAML syntax error names the line', () => {
  const problems = problemsOf('listeners: [\n  { role: mx, port: 25 }\nhostname: x\n');
  assert.match(problems[0]!, /^line \d+: YAML syntax: /);
});

test('a file that cannot be read is refused with its path', async () => {
  assert.throws(() => loadConfigFile('/nonexistent/ownrelay.yaml'), (err: unknown) => err instanceof ConfigError && /\/nonexistent\/ownrelay\.yaml/.test(err.message) && /cannot read/.test(err.message));
});

test('a loaded config is frozen, so nothing can change it behind the relay\'s back', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ownrelay-config-'));
  try {
    const path = join(dir, 'c.yaml');
    await writeFile(path, 'listeners: [{ role: mx, port: 25 }]\nrelay: { networks: [10.0.0.0/8] }\n');
    const config = loadConfigFile(path);
    assert.ok(Object.isFrozen(config.relay.networks));
    assert.throws(() => (config.relay.networks as string[]).push('0.0.0.0/0'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
