/**
 * The listeners' TLS settings, checked from outside by independent scanners:
 * testssl.sh (Debian's, a full TLS scanner with its own handshakes) on the
 * implicit-TLS and STARTTLS submission ports, and `openssl s_client` probes on the
 * mx port. Expected: Mozilla's intermediate profile, i.e. only TLS 1.2 and 1.3,
 * only its ECDHE+AEAD suites, the client's order, and its key exchange groups.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { MOZILLA_INTERMEDIATE } from '../../server/tls/profile';
import { startTestRelay, type TestRelay } from '../helpers/test-relay';
import { opensslProbe } from '../helpers/tls-probe';

const run = promisify(execFile);

let relay: TestRelay;
let mxPort: number;
let submissionPort: number;
let implicitPort: number;

before(async () => {
  relay = await startTestRelay();
  [mxPort, submissionPort, implicitPort] = relay.ports as [number, number, number];
});

after(async () => {
  await relay?.stop();
});

interface Finding {
  id: string;
  finding: string;
}

/** testssl.sh: protocols (-p) and every cipher per protocol (-E), as JSON findings. */
async function testssl(port: number, mode: 'implicit' | 'starttls'): Promise<Finding[]> {
  const json = join(relay.dir, `testssl-${port}.json`);
  const args = ['--quiet', '--color', '0', '--warnings', 'off', '--nodns', 'min', '-p', '-E', '--jsonfile', json];
  if (mode === 'starttls') args.push('--starttls', 'smtp');
  args.push(`127.0.0.1:${port}`);
  await run('testssl', args, { timeout: 180_000, maxBuffer: 16 * 1024 * 1024 }).catch((err: { code?: number }) => {
    // testssl's exit code counts findings of severity >= some level; the JSON is what is judged
    if (typeof err.code !== 'number') throw err;
  });
  return JSON.parse(await readFile(json, 'utf8')) as Finding[];
}

function checkScan(findings: Finding[]): void {
  const protocol = (id: string) => findings.find((f) => f.id === id)?.finding ?? `(${id} missing from the scan)`;
  for (const old of ['SSLv2', 'SSLv3', 'TLS1', 'TLS1_1']) assert.equal(protocol(old), 'not offered', `${old} must not be offered`);
  assert.match(protocol('TLS1_2'), /^offered/);
  assert.match(protocol('TLS1_3'), /^offered/);

  // "TLS 1.2   xc02f   ECDHE-RSA-AES128-GCM-SHA256   ECDH 253 ..." -> the OpenSSL name
  const offered = findings.filter((f) => f.id.startsWith('cipher-tls') || f.id.startsWith('cipher-ssl')).map((f) => f.finding.split(/\s+/)[3] ?? f.finding);
  const allowed = new Set<string>([...MOZILLA_INTERMEDIATE.tls12Ciphers, ...MOZILLA_INTERMEDIATE.tls13Ciphersuites]);
  assert.ok(offered.length > 0, 'the scan found no ciphers at all');
  for (const cipher of offered) {
    assert.ok(allowed.has(cipher), `${cipher} is offered but not in Mozilla's intermediate list`);
    assert.doesNotMatch(cipher, /RC4|3DES|DES-CBC|NULL|EXP|anon|ADH|AECDH|MD5|CBC|-SHA$/, `${cipher} is weak`);
  }
  // with an RSA certificate: every RSA and TLS 1.3 suite of the profile is there
  const expected = [...MOZILLA_INTERMEDIATE.tls12Ciphers.filter((c) => c.includes('-RSA-')), ...MOZILLA_INTERMEDIATE.tls13Ciphersuites].sort();
  assert.deepEqual([...new Set(offered)].sort(), expected);
}

test('testssl.sh finds only TLS 1.2/1.3 and Mozilla intermediate ciphers on the implicit-TLS port', async () => {
  checkScan(await testssl(implicitPort, 'implicit'));
});

test('testssl.sh finds only TLS 1.2/1.3 and Mozilla intermediate ciphers after STARTTLS on the submission port', async () => {
  checkScan(await testssl(submissionPort, 'starttls'));
});

test('openssl s_client: the mx port refuses TLS 1.0, TLS 1.1 and weak suites, and negotiates TLS 1.3', async () => {
  // SECLEVEL=0 lets this client offer what the server must refuse
  for (const version of ['-tls1', '-tls1_1']) {
    const probe = await opensslProbe(mxPort, 'starttls', [version, '-cipher', 'ALL:@SECLEVEL=0']);
    assert.equal(probe.connected, false, `${version} was accepted:\n${probe.output}`);
  }
  for (const weak of ['AES128-SHA', 'AES256-GCM-SHA384', 'ECDHE-RSA-AES128-SHA', 'ECDHE-RSA-AES256-SHA384', 'DES-CBC3-SHA', 'DHE-RSA-AES128-GCM-SHA256', 'aNULL', 'eNULL', 'RC4']) {
    const probe = await opensslProbe(mxPort, 'starttls', ['-tls1_2', '-cipher', `${weak}:@SECLEVEL=0`]);
    assert.equal(probe.connected, false, `TLS 1.2 with ${weak} was accepted:\n${probe.output}`);
  }
  const tls13 = await opensslProbe(mxPort, 'starttls', ['-tls1_3']);
  assert.equal(tls13.connected, true, tls13.output);
  assert.equal(tls13.protocol, 'TLSv1.3');
  assert.ok((MOZILLA_INTERMEDIATE.tls13Ciphersuites as readonly string[]).includes(tls13.cipher ?? ''), tls13.cipher);
  assert.match(tls13.tempKey ?? '', /^X25519\b/);
});

test('openssl s_client: the client chooses among the allowed suites (Mozilla: no server preference)', async () => {
  const aes128First = await opensslProbe(mxPort, 'starttls', ['-tls1_2', '-cipher', 'ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384']);
  const aes256First = await opensslProbe(mxPort, 'starttls', ['-tls1_2', '-cipher', 'ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256']);
  assert.equal(aes128First.cipher, 'ECDHE-RSA-AES128-GCM-SHA256', aes128First.output);
  assert.equal(aes256First.cipher, 'ECDHE-RSA-AES256-GCM-SHA384', aes256First.output);
});

test('openssl s_client: the key exchange groups are those of the profile', async () => {
  for (const group of ['X25519', 'P-256', 'P-384']) {
    const probe = await opensslProbe(implicitPort, 'implicit', ['-tls1_3', '-groups', group]);
    assert.equal(probe.connected, true, `${group}:\n${probe.output}`);
  }
  for (const group of ['P-521', 'ffdhe2048', 'X448']) {
    const probe = await opensslProbe(implicitPort, 'implicit', ['-tls1_3', '-groups', group]);
    assert.equal(probe.connected, false, `${group} was accepted:\n${probe.output}`);
  }
});
