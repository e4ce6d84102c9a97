/**
 * TLS reporting records (RFC 8460) kept on disk per policy domain and UTC day,
 * and the report JSON built from them. Real files in a temporary directory.
 */
import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../server/log/logger';
import { TlsReportStore, type TlsDayRecord, type TlsPolicyDescription } from '../../server/delivery/tls-report-store';
import { previousUtcDay, tlsReportForDay } from '../../server/delivery/tls-report';
import { certificateResultType } from '../../server/delivery/tls-report-result';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ownrelay-tlsrpt-'));
});
afterEach(async () => rm(dir, { recursive: true, force: true }));

const policy: TlsPolicyDescription = {
  'policy-type': 'sts',
  'policy-string': ['version: STSv1', 'mode: enforce', 'mx: mx.example.org', 'max_age: 86400'],
  'policy-domain': 'example.org',
  'mx-host': ['mx.example.org'],
};
const at = new Date('2026-11-28T10:00:00Z');
const mismatch = { 'result-type': 'certificate-host-mismatch' as const, 'receiving-mx-hostname': 'mx.example.org', 'receiving-ip': '192.0.2.25', 'failure-reason-code': 'ERR_TLS_CERT_ALTNAME_INVALID' };

async function dayFile(day: string, domain: string): Promise<TlsDayRecord> {
  return JSON.parse(await readFile(join(dir, day, `${domain}.json`), 'utf8')) as TlsDayRecord;
}

test('sessions are counted per policy domain and day, with failures grouped by their details', async () => {
  const store = new TlsReportStore(dir, silentLogger());
  store.recordSuccess(policy, at);
  store.recordSuccess(policy, at);
  store.recordFailure(policy, mismatch, at);
  store.recordFailure(policy, mismatch, at);
  store.recordFailure(policy, { 'result-type': 'starttls-not-supported', 'receiving-mx-hostname': 'mx.example.org', 'failure-reason-code': 'starttls-not-supported' }, at);
  store.recordSuccess(policy, new Date('2026-11-29T00:00:01Z'));
  await store.close();

  const day = await dayFile('2026-11-28', 'example.org');
  assert.deepEqual(day['date-range'], { 'start-datetime': '2026-11-28T00:00:00Z', 'end-datetime': '2026-11-28T23:59:59Z' });
  assert.equal(day.policies.length, 1);
  assert.deepEqual(day.policies[0]!.policy, policy);
  assert.deepEqual(day.policies[0]!.summary, { 'total-successful-session-count': 2, 'total-failure-session-count': 3 });
  assert.deepEqual(day.policies[0]!['failure-details'], [
    { ...mismatch, 'failed-session-count': 2 },
    { 'result-type': 'starttls-not-supported', 'receiving-mx-hostname': 'mx.example.org', 'failure-reason-code': 'starttls-not-supported', 'failed-session-count': 1 },
  ]);
  assert.equal((await dayFile('2026-11-29', 'example.org')).policies[0]!.summary['total-successful-session-count'], 1, 'the next UTC day has its own file');
});

test('counts from a new store (after a restart) are added to the day file, and a changed policy is listed separately', async () => {
  const first = new TlsReportStore(dir, silentLogger());
  first.recordSuccess(policy, at);
  await first.close();
  const second = new TlsReportStore(dir, silentLogger());
  second.recordSuccess(policy, at);
  second.recordFailure({ ...policy, 'policy-string': ['version: STSv1', 'mode: testing', 'mx: mx.example.org', 'max_age: 86400'] }, mismatch, at);
  await second.close();
  const day = await dayFile('2026-11-28', 'example.org');
  assert.equal(day.policies.length, 2);
  assert.equal(day.policies[0]!.summary['total-successful-session-count'], 2);
  assert.equal(day.policies[1]!.summary['total-failure-session-count'], 1);
});

test('an unreadable day file is moved aside, not deleted, and counting starts again', async () => {
  await mkdir(join(dir, '2026-11-28'), { recursive: true });
  await writeFile(join(dir, '2026-11-28', 'example.org.json'), '{ truncated');
  const store = new TlsReportStore(dir, silentLogger());
  store.recordSuccess(policy, at);
  await store.close();
  const names = await readdir(join(dir, '2026-11-28'));
  assert.equal(names.filter((n) => n.startsWith('example.org.json.unreadable-')).length, 1);
  assert.equal((await dayFile('2026-11-28', 'example.org')).policies[0]!.summary['total-successful-session-count'], 1);
});

test('a domain name that is not safe as a file name is not recorded', async () => {
  const store = new TlsReportStore(dir, silentLogger());
  store.recordSuccess({ ...policy, 'policy-domain': '../outside' }, at);
  await store.close();
  assert.deepEqual(await readdir(dir), []);
});

test('a day record becomes an RFC 8460 report with organization, contact and report id', async () => {
  const store = new TlsReportStore(dir, silentLogger());
  store.recordSuccess(policy, at);
  store.recordFailure(policy, mismatch, at);
  await store.close();
  const report = await tlsReportForDay(dir, '2026-11-28', 'Example.org', { organizationName: 'mail.sender.test', contactInfo: 'postmaster@mail.sender.test' });
  assert.deepEqual(report, {
    'organization-name': 'mail.sender.test',
    'date-range': { 'start-datetime': '2026-11-28T00:00:00Z', 'end-datetime': '2026-11-28T23:59:59Z' },
    'contact-info': 'postmaster@mail.sender.test',
    'report-id': '2026-11-28T00:00:00Z_example.org@mail.sender.test',
    policies: [
      {
        policy,
        summary: { 'total-successful-session-count': 1, 'total-failure-session-count': 1 },
        'failure-details': [{ ...mismatch, 'failed-session-count': 1 }],
      },
    ],
  });
  assert.equal(await tlsReportForDay(dir, '2026-11-27', 'example.org', { organizationName: 'x', contactInfo: 'y' }), undefined);
  await assert.rejects(tlsReportForDay(dir, '28.11.2026', 'example.org', { organizationName: 'x', contactInfo: 'y' }), /not a day/);
  await assert.rejects(tlsReportForDay(dir, '2026-11-28', '../x', { organizationName: 'x', contactInfo: 'y' }), /not a domain/);
  assert.equal(previousUtcDay(new Date('2026-11-29T00:30:00Z')), '2026-11-28');
});

test('Node certificate errors map to RFC 8460 result types', () => {
  assert.equal(certificateResultType('ERR_TLS_CERT_ALTNAME_INVALID'), 'certificate-host-mismatch');
  assert.equal(certificateResultType('CERT_HAS_EXPIRED'), 'certificate-expired');
  assert.equal(certificateResultType('DEPTH_ZERO_SELF_SIGNED_CERT'), 'certificate-not-trusted');
  assert.equal(certificateResultType('UNABLE_TO_VERIFY_LEAF_SIGNATURE'), 'certificate-not-trusted');
  assert.equal(certificateResultType('ECONNREFUSED'), undefined);
  assert.equal(certificateResultType(undefined), undefined);
});
