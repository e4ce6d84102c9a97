/**
 * The customer's MTA-STS policy served by the relay over HTTPS on loopback, fetched
 * by curl (an independent HTTPS client that verifies the certificate for
 * mta-sts.<domain>) and parsed by mailauth's MTA-STS parser. The body must be the
 * very text the infra program renders, whose hash is the id it publishes in
 * `_mta-sts.<domain>` TXT; anything else on the server is 404.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parsePolicy } from 'mailauth/lib/mta-sts';
import { generate } from 'selfsigned';
import { renderDnsRecords, renderMtaStsPolicy } from '../../infra/render/dns-records';
import { startTestRelay, type TestRelay } from '../helpers/test-relay';

const run = promisify(execFile);

const DOMAINS = ['relay.test', 'other.test'];
const NODES = [
  { hostname: 'relay.test', ipv4: '192.0.2.10' },
  { hostname: 'relay2.test', ipv4: '192.0.2.11' },
];
const MODE = 'enforce';
const MAX_AGE_S = 86_400;

let relay: TestRelay;
let dir: string;
let caFile: string;
let port: number;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ownrelay-mta-sts-'));
  const pems = await generate([{ name: 'commonName', value: 'relay.test' }], {
    keySize: 2048,
    algorithm: 'sha256',
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'subjectAltName', altNames: ['relay.test', ...DOMAINS.map((d) => `mta-sts.${d}`)].map((value) => ({ type: 2, value })) },
    ],
  });
  await mkdir(join(dir, 'tls'));
  caFile = join(dir, 'tls', 'cert.pem');
  await writeFile(caFile, pems.cert);
  await writeFile(join(dir, 'tls', 'key.pem'), pems.private, { mode: 0o600 });
  relay = await startTestRelay(
    () => ({
      domains: DOMAINS.map((name) => ({ name, delivery: 'maildir' })),
      tls: {
        certFile: caFile,
        keyFile: join(dir, 'tls', 'key.pem'),
        mtaStsPolicy: { address: '127.0.0.1', port: 0, mode: MODE, maxAgeSeconds: MAX_AGE_S, mx: NODES.map((n) => n.hostname) },
      },
    }),
    { dir },
  );
  port = relay.relay.tls.mtaSts!.port;
});

after(async () => {
  await relay?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** curl with certificate verification against our certificate; `host` is resolved to 127.0.0.1. */
async function curl(host: string, path: string, extra: string[] = []): Promise<{ status: number; body: string; contentType: string }> {
  const { stdout } = await run('curl', [
    '--silent', '--show-error', '--cacert', caFile, '--resolve', `${host}:${port}:127.0.0.1`,
    '--write-out', '\n%{http_code} %{content_type}', ...extra, `https://${host}:${port}${path}`,
  ]);
  const cut = stdout.lastIndexOf('\n');
  const [status, contentType] = stdout.slice(cut + 1).split(' ');
  return { status: Number(status), body: stdout.slice(0, cut), contentType: contentType ?? '' };
}

test('https://mta-sts.<domain>/.well-known/mta-sts.txt serves exactly the policy whose id the infra program publishes', async () => {
  const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const records = renderDnsRecords({
    domains: DOMAINS,
    hostname: NODES[0]!.hostname,
    nodes: NODES,
    dkim: { selector: 's1', publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() },
    dmarc: { policy: 'none' },
    mtaSts: { mode: MODE, maxAgeSeconds: MAX_AGE_S },
  });
  const expected = renderMtaStsPolicy({ mode: MODE, maxAgeSeconds: MAX_AGE_S, mxHosts: NODES.map((n) => n.hostname) }).text;
  for (const domain of DOMAINS) {
    const response = await curl(`mta-sts.${domain}`, '/.well-known/mta-sts.txt');
    assert.equal(response.status, 200);
    assert.equal(response.contentType, 'text/plain');
    assert.equal(response.body, expected);
    const txt = records.find((r) => r.name === `_mta-sts.${domain}` && r.type === 'TXT')?.values[0];
    const servedId = createHash('sha256').update(response.body, 'utf8').digest('hex').slice(0, 32);
    assert.equal(txt, `v=STSv1; id=${servedId}`);

    const parsed = parsePolicy(response.body) as unknown as { mode: string; mx: Array<{ pattern?: string } | string>; maxAge: number };
    assert.equal(parsed.mode, MODE);
    assert.equal(parsed.maxAge, MAX_AGE_S);
    assert.deepEqual(parsed.mx.map((m) => (typeof m === 'string' ? m : m.pattern)), NODES.map((n) => n.hostname));
  }
});

test('the policy server answers nothing else: other hosts and paths are 404, other methods 405', async () => {
  assert.equal((await curl('mta-sts.relay.test', '/')).status, 404);
  assert.equal((await curl('mta-sts.relay.test', '/.well-known/mta-sts.txt.bak')).status, 404);
  assert.equal((await curl('mta-sts.relay.test', '/.well-known/acme-challenge/x')).status, 404);
  // a name the relay does not receive mail for (the certificate is checked against the name, so -k)
  assert.equal((await curl('mta-sts.unknown.test', '/.well-known/mta-sts.txt', ['--insecure'])).status, 404);
  assert.equal((await curl('mta-sts.relay.test', '/.well-known/mta-sts.txt', ['--request', 'POST', '--data', 'x'])).status, 405);
});

test('the policy server uses the TLS profile: TLS 1.1 is refused, TLS 1.3 works', async () => {
  const base = ['--silent', '--show-error', '--output', '/dev/null', '--cacert', caFile, '--resolve', `mta-sts.relay.test:${port}:127.0.0.1`];
  const url = `https://mta-sts.relay.test:${port}/.well-known/mta-sts.txt`;
  await assert.rejects(run('curl', [...base, '--tlsv1.1', '--tls-max', '1.1', '--ciphers', 'DEFAULT:@SECLEVEL=0', url]), (err: { stderr?: string }) => {
    assert.match(err.stderr ?? '', /protocol version|alert/i);
    return true;
  });
  await run('curl', [...base, '--tlsv1.3', url]);
});
