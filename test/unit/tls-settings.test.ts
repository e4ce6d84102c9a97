/**
 * The certificate settings as the config loader sees them: what the schema
 * refuses (with the key path), the defaults, and which names an ACME
 * certificate covers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stringify } from 'yaml';
import { ConfigError, parseConfig } from '../../server/config/load';
import { certificateNames } from '../../server/tls/tls-service';
import { LETS_ENCRYPT_DIRECTORY_URL } from '../../server/tls/settings-schema';

const BASE = { listeners: [{ role: 'mx', port: 25 }], hostname: 'mail.example.org', domains: [{ name: 'example.org' }, { name: 'example.net' }] };

function problemsOf(config: Record<string, unknown>): string[] {
  try {
    parseConfig(stringify({ ...BASE, ...config }), 'test.yaml');
  } catch (err) {
    if (err instanceof ConfigError) return err.message.split('\n');
    throw err;
  }
  return [];
}

test('acme gets Let\'s Encrypt, HTTP-01 on port 80, a 30-day renewal window and a daily check by default', () => {
  const config = parseConfig(stringify({ ...BASE, tls: { acme: { email: 'hostmaster@example.org' } } }), 'test.yaml');
  assert.deepEqual(config.tls.acme, {
    directoryUrl: LETS_ENCRYPT_DIRECTORY_URL,
    email: 'hostmaster@example.org',
    challenge: 'http-01',
    http01: { address: '0.0.0.0', port: 80 },
    domains: [],
    renewBeforeDays: 30,
    checkIntervalMs: 86_400_000,
  });
  assert.equal(config.tls.reloadCheckIntervalMs, 30_000);
  assert.equal(config.tls.mtaStsPolicy, undefined);
});

test('acme and certFile/keyFile exclude each other', () => {
  const problems = problemsOf({ tls: { certFile: '/c.pem', keyFile: '/k.pem', acme: { email: 'a@example.org' } } });
  assert.ok(problems.some((p) => p.includes('tls.acme: acme and certFile/keyFile exclude each other')), problems.join('\n'));
});

test('acme needs a contact address, an https directory, and dns01 settings for dns-01', () => {
  assert.ok(problemsOf({ tls: { acme: {} } }).some((p) => p.includes('tls.acme.email')));
  assert.ok(problemsOf({ tls: { acme: { email: 'a@example.org', directoryUrl: 'http://ca.example/dir' } } }).some((p) => p.includes('tls.acme.directoryUrl')));
  const problems = problemsOf({ tls: { acme: { email: 'a@example.org', challenge: 'dns-01' } } });
  assert.ok(problems.some((p) => p.includes('tls.acme.dns01: required when challenge is dns-01')), problems.join('\n'));
});

test('an ACME certificate covers the hostname, the extra names, and mta-sts.<domain> only when the policy is served', () => {
  const without = parseConfig(stringify({ ...BASE, tls: { acme: { email: 'a@example.org', domains: ['smtp.example.org'] } } }), 'test.yaml');
  assert.deepEqual(certificateNames(without), ['mail.example.org', 'smtp.example.org']);
  const withPolicy = parseConfig(stringify({ ...BASE, tls: { acme: { email: 'a@example.org' }, mtaStsPolicy: { mode: 'enforce' } } }), 'test.yaml');
  assert.deepEqual(certificateNames(withPolicy), ['mail.example.org', 'mta-sts.example.org', 'mta-sts.example.net']);
  assert.deepEqual(withPolicy.tls.mtaStsPolicy, { address: '0.0.0.0', port: 443, mode: 'enforce', maxAgeSeconds: 604_800, mx: [] });
});
