/**
 * Fetching MTA-STS policies over real HTTPS on loopback: a real DNS server gives
 * the address of mta-sts.<domain>, a real HTTPS server (certificate from a test
 * CA) serves what each test sets, and the fetcher must classify every failure
 * with its RFC 8460 result type.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { AddressGuard } from '../../server/delivery/address-guard';
import { PolicyFetchError, httpsPolicyFetcher, type HttpsPolicyFetcherOptions } from '../../server/delivery/mta-sts-fetch';
import { MxResolver } from '../../server/delivery/mx-resolver';
import { startDnsServer, type DnsServerHandle } from '../helpers/dns-server';
import { createTestCa, policyText, startPolicyServer, type PolicyServer, type TestCa } from '../helpers/mta-sts-peers';

let dns: DnsServerHandle;
let ca: TestCa;
let server: PolicyServer;
let resolver: MxResolver;

before(async () => {
  ca = await createTestCa();
  server = await startPolicyServer(await ca.issue(['mta-sts.sts.test']), policyText('enforce', ['mx.sts.test']));
  dns = await startDnsServer({
    'mta-sts.sts.test': { A: ['127.0.0.1'] },
    'mta-sts.other.test': { A: ['127.0.0.1'] },
    'mta-sts.private.test': { A: ['10.1.2.3'] },
  });
  resolver = new MxResolver(dns.servers);
});

after(async () => {
  await server.close();
  await dns.close();
});

function fetcher(overrides: Partial<HttpsPolicyFetcherOptions> = {}) {
  return httpsPolicyFetcher({
    resolveHost: (host) => resolver.resolveHost(host),
    guard: new AddressGuard(['127.0.0.0/8']),
    ca: [ca.cert],
    port: server.port,
    ...overrides,
  });
}

async function failureOf(promise: Promise<unknown>): Promise<PolicyFetchError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof PolicyFetchError, String(err));
    return err;
  }
  assert.fail('the fetch succeeded');
}

test('a policy served over HTTPS with a trusted certificate for mta-sts.<domain> is fetched and parsed', async () => {
  server.serve(policyText('testing', ['mx.sts.test', '*.backup.sts.test'], 604800));
  const policy = await fetcher()('sts.test');
  assert.deepEqual(policy, {
    mode: 'testing',
    mx: ['mx.sts.test', '*.backup.sts.test'],
    maxAgeS: 604800,
    text: ['version: STSv1', 'mode: testing', 'mx: mx.sts.test', 'mx: *.backup.sts.test', 'max_age: 604800'],
  });
  server.serve('version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 86400\n', { contentType: 'text/plain; charset=utf-8' });
  assert.equal((await fetcher()('sts.test')).mode, 'enforce', 'media type parameters are fine');
});

test('a certificate for another name or from an unknown CA is sts-webpki-invalid', async () => {
  server.serve(policyText('enforce', ['mx.other.test']));
  const wrongName = await failureOf(fetcher()('other.test'));
  assert.equal(wrongName.kind, 'sts-webpki-invalid');
  assert.match(wrongName.message, /certificate not valid for mta-sts\.other\.test/);
  const untrusted = await failureOf(fetcher({ ca: undefined })('sts.test'));
  assert.equal(untrusted.kind, 'sts-webpki-invalid');
});

test('a status other than 200 is sts-policy-fetch-error and a redirect is not followed', async () => {
  server.serve('', { status: 404 });
  assert.equal((await failureOf(fetcher()('sts.test'))).kind, 'sts-policy-fetch-error');
  const before = server.requests;
  server.serve('moved', { status: 301 });
  const redirect = await failureOf(fetcher()('sts.test'));
  assert.equal(redirect.kind, 'sts-policy-fetch-error');
  assert.match(redirect.message, /HTTP status 301/);
  assert.equal(server.requests, before + 1, 'one request, no redirect followed');
});

test('a body that is not a text/plain policy is sts-policy-invalid', async () => {
  server.serve(policyText('enforce', ['mx.sts.test']), { contentType: 'text/html' });
  assert.match((await failureOf(fetcher()('sts.test'))).message, /media type is "text\/html"/);
  server.serve('version: STSv1\nmode: enforce\nmax_age: 86400\n');
  const invalid = await failureOf(fetcher()('sts.test'));
  assert.equal(invalid.kind, 'sts-policy-invalid');
  assert.match(invalid.message, /mx/);
  server.serve(`${policyText('enforce', ['mx.sts.test'])}${'# padding\n'.repeat(8000)}`);
  const large = await failureOf(fetcher()('sts.test'));
  assert.equal(large.kind, 'sts-policy-invalid');
  assert.match(large.message, /larger than 65536 bytes/);
});

test('the policy host must resolve, and its address must pass the AddressGuard', async () => {
  const before = server.requests;
  const missing = await failureOf(fetcher()('nowhere.test'));
  assert.equal(missing.kind, 'sts-policy-fetch-error');
  assert.match(missing.message, /mta-sts\.nowhere\.test has no A or AAAA records/);
  const refused = await failureOf(fetcher({ guard: new AddressGuard([]) })('sts.test'));
  assert.match(refused.message, /127\.0\.0\.1 is a loopback address/);
  const privateAddress = await failureOf(fetcher()('private.test'));
  assert.match(privateAddress.message, /10\.1\.2\.3 is a private address/);
  assert.equal(server.requests, before, 'no request was made');
});
