/**
 * The MTA-STS policy cache (RFC 8461 5.1) with a scripted TXT record, a
 * scripted fetcher and a clock the test moves; the disk cache is a real
 * temporary directory.
 */
import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../server/log/logger';
import { MtaStsPolicies, type MtaStsPoliciesOptions } from '../../server/delivery/mta-sts-cache';
import { PolicyFetchError } from '../../server/delivery/mta-sts-fetch';
import { parsePolicyText } from '../../server/delivery/mta-sts-policy';
import { waitFor } from '../helpers/spool-files';

const DAY_S = 86400;
let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ownrelay-sts-cache-'));
});
afterEach(async () => rm(dir, { recursive: true, force: true }));

/** A world the test controls: the TXT answer, what the policy host serves, and the time. */
function world() {
  const state = {
    txt: [['v=STSv1; id=one']] as string[][] | Error,
    policy: 'version: STSv1\nmode: enforce\nmx: mx.example.org\nmax_age: 86400\n' as string | PolicyFetchError,
    nowMs: Date.parse('2026-11-29T00:00:00Z'),
    fetches: 0,
    txtLookups: 0,
    failures: [] as Array<{ domain: string; kind: string }>,
  };
  const options = (extra: Partial<MtaStsPoliciesOptions> = {}): MtaStsPoliciesOptions => ({
    lookupTxt: async (name) => {
      assert.equal(name, '_mta-sts.example.org');
      state.txtLookups++;
      if (state.txt instanceof Error) throw state.txt;
      return state.txt;
    },
    fetch: async (domain) => {
      assert.equal(domain, 'example.org');
      state.fetches++;
      if (state.policy instanceof PolicyFetchError) throw state.policy;
      return parsePolicyText(state.policy);
    },
    cacheDir: dir,
    logger: silentLogger(),
    txtRecheckMs: 0,
    now: () => state.nowMs,
    onFetchFailure: (domain, error) => state.failures.push({ domain, kind: error.kind }),
    ...extra,
  });
  return { state, options };
}

test('a published policy is fetched once and then served from memory while the TXT id is unchanged', async () => {
  const { state, options } = world();
  const policies = new MtaStsPolicies(options());
  const first = await policies.policyFor('Example.ORG');
  assert.equal(first?.policy.mode, 'enforce');
  assert.deepEqual(first?.policy.mx, ['mx.example.org']);
  assert.equal(first?.id, 'one');
  state.nowMs += 3600_000;
  await policies.policyFor('example.org');
  assert.equal(state.fetches, 1);
  assert.equal(state.txtLookups, 2);
});

test('concurrent lookups for one domain share one fetch', async () => {
  const { state, options } = world();
  const policies = new MtaStsPolicies(options());
  const results = await Promise.all([policies.policyFor('example.org'), policies.policyFor('example.org'), policies.policyFor('example.org')]);
  assert.ok(results.every((r) => r?.id === 'one'));
  assert.equal(state.fetches, 1);
});

test('a new TXT id fetches the policy again', async () => {
  const { state, options } = world();
  const policies = new MtaStsPolicies(options());
  await policies.policyFor('example.org');
  state.txt = [['v=STSv1; id=two']];
  state.policy = 'version: STSv1\nmode: testing\nmx: mx2.example.org\nmax_age: 86400\n';
  const next = await policies.policyFor('example.org');
  assert.equal(next?.id, 'two');
  assert.equal(next?.policy.mode, 'testing');
  assert.equal(state.fetches, 2);
});

test('the TXT record is asked again only after txtRecheckMs', async () => {
  const { state, options } = world();
  const policies = new MtaStsPolicies(options({ txtRecheckMs: 60_000 }));
  await policies.policyFor('example.org');
  state.nowMs += 30_000;
  await policies.policyFor('example.org');
  assert.equal(state.txtLookups, 1);
  state.nowMs += 31_000;
  await policies.policyFor('example.org');
  assert.equal(state.txtLookups, 2);
});

test('a cached policy stays in force when the TXT record disappears or DNS fails, until max_age runs out', async () => {
  const { state, options } = world();
  const policies = new MtaStsPolicies(options());
  await policies.policyFor('example.org');
  state.txt = [];
  assert.equal((await policies.policyFor('example.org'))?.policy.mode, 'enforce');
  state.txt = Object.assign(new Error('queryTxt ESERVFAIL'), { code: 'ESERVFAIL' });
  assert.equal((await policies.policyFor('example.org'))?.policy.mode, 'enforce');
  state.nowMs += DAY_S * 1000 + 1;
  assert.equal(await policies.policyFor('example.org'), undefined, 'expired, and no record to fetch a new one');
});

test('an expired policy with the same id is fetched again', async () => {
  const { state, options } = world();
  const policies = new MtaStsPolicies(options());
  await policies.policyFor('example.org');
  state.nowMs += DAY_S * 1000 + 1;
  const renewed = await policies.policyFor('example.org');
  assert.equal(renewed?.id, 'one');
  assert.equal(state.fetches, 2);
  assert.equal(renewed?.expiresAtMs, state.nowMs + DAY_S * 1000);
});

test('a policy that cannot be fetched means no policy, is reported, and is not fetched again for fetchRetryMs', async () => {
  const { state, options } = world();
  state.policy = new PolicyFetchError('certificate not valid', 'sts-webpki-invalid');
  const policies = new MtaStsPolicies(options({ fetchRetryMs: 60_000 }));
  assert.equal(await policies.policyFor('example.org'), undefined);
  assert.deepEqual(state.failures, [{ domain: 'example.org', kind: 'sts-webpki-invalid' }]);
  state.nowMs += 30_000;
  assert.equal(await policies.policyFor('example.org'), undefined);
  assert.equal(state.fetches, 1);
  state.nowMs += 31_000;
  state.policy = 'version: STSv1\nmode: enforce\nmx: mx.example.org\nmax_age: 86400\n';
  assert.equal((await policies.policyFor('example.org'))?.policy.mode, 'enforce');
  assert.equal(state.fetches, 2);
});

test('when a changed policy cannot be fetched, the cached one stays in force', async () => {
  const { state, options } = world();
  const policies = new MtaStsPolicies(options());
  await policies.policyFor('example.org');
  state.txt = [['v=STSv1; id=two']];
  state.policy = new PolicyFetchError('HTTP status 500', 'sts-policy-fetch-error');
  const kept = await policies.policyFor('example.org');
  assert.equal(kept?.id, 'one');
  assert.equal(state.failures.length, 1);
});

test('policies are written to disk and read back by a new instance without fetching', async () => {
  const { state, options } = world();
  await new MtaStsPolicies(options()).policyFor('example.org');
  const file = JSON.parse(await readFile(join(dir, 'example.org.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(file.id, 'one');
  assert.deepEqual(file.policy, ['version: STSv1', 'mode: enforce', 'mx: mx.example.org', 'max_age: 86400']);
  assert.equal(file.expiresAt, new Date(state.nowMs + DAY_S * 1000).toISOString());

  state.policy = new PolicyFetchError('server gone', 'sts-policy-fetch-error');
  const restarted = new MtaStsPolicies(options());
  assert.equal((await restarted.policyFor('example.org'))?.policy.mode, 'enforce');
  assert.equal(state.fetches, 1);
});

test('a damaged cache file is ignored and the policy fetched again', async () => {
  const { state, options } = world();
  await writeFile(join(dir, 'example.org.json'), '{"version":1,"domain":"example.org","id":"one","fetchedAt":"2026-11-29T00:00:00Z","expiresAt":"2027-01-01T00:00:00Z","policy":["version: STSv1","mode: sometimes"]}');
  const policies = new MtaStsPolicies(options());
  assert.equal((await policies.policyFor('example.org'))?.policy.mode, 'enforce');
  assert.equal(state.fetches, 1);
});

test('a domain without a record has no policy; names that are not domains are not looked up', async () => {
  const { state, options } = world();
  state.txt = [['v=spf1 -all']];
  const policies = new MtaStsPolicies(options());
  assert.equal(await policies.policyFor('example.org'), undefined);
  assert.equal(await policies.policyFor('[192.0.2.1]'), undefined);
  assert.equal(await policies.policyFor('../etc'), undefined);
  assert.equal(state.fetches, 0);
  assert.equal(state.txtLookups, 1);
});

test('a policy past half its max_age is still used and fetched again in the background', async () => {
  const { state, options } = world();
  const policies = new MtaStsPolicies(options());
  await policies.policyFor('example.org');
  state.nowMs += 13 * 3600_000;
  state.policy = 'version: STSv1\nmode: enforce\nmx: mx.example.org\nmx: mx2.example.org\nmax_age: 86400\n';
  const current = await policies.policyFor('example.org');
  assert.deepEqual(current?.policy.mx, ['mx.example.org'], 'the cached policy answers at once');
  const refreshed = await waitFor(async () => {
    const policy = await policies.policyFor('example.org');
    return policy?.policy.mx.length === 2 ? policy : undefined;
  }, 5000, 'the background refresh');
  assert.deepEqual(refreshed.policy.mx, ['mx.example.org', 'mx2.example.org']);
  assert.equal(state.fetches, 2);
  // memory answers before the refreshed policy is written: the file follows
  await waitFor(async () => (await readFile(join(dir, 'example.org.json'), 'utf8').catch(() => '')).includes('mx2.example.org'), 5000, 'the refreshed policy on disk');
});

test('a domain without a record is not asked again before txtRecheckMs', async () => {
  const { state, options } = world();
  state.txt = [];
  const policies = new MtaStsPolicies(options({ txtRecheckMs: 60_000 }));
  assert.equal(await policies.policyFor('example.org'), undefined);
  assert.equal(await policies.policyFor('example.org'), undefined);
  assert.equal(state.txtLookups, 1);
  state.nowMs += 61_000;
  state.txt = [['v=STSv1; id=one']];
  assert.equal((await policies.policyFor('example.org'))?.id, 'one', 'a record published later is found at the next check');
  assert.equal(state.txtLookups, 2);
});
