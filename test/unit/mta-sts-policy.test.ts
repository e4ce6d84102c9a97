/**
 * MTA-STS policy text (RFC 8461 3.1, 3.2, 4.1): the TXT record's id, the policy
 * file's fields, and how MX patterns match host names.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PolicyTextError, mxAllowed, mxMatches, parsePolicyText, policyIdOf } from '../../server/delivery/mta-sts-policy';

test('the id of exactly one STSv1 TXT record is the policy id; other TXT records are ignored', () => {
  assert.equal(policyIdOf([['v=STSv1; id=20160831085700Z;']]), '20160831085700Z');
  assert.equal(policyIdOf([['v=spf1 -all'], ['v=STSv1;', ' id=abc123']]), 'abc123', 'character-strings are joined');
  assert.equal(policyIdOf([['v=STSv1; id=abc; ext=1']]), 'abc');
});

test('no record, two records, a bad id or a missing id mean no policy', () => {
  assert.equal(policyIdOf([]), undefined);
  assert.equal(policyIdOf([['v=STSv1; id=a'], ['v=STSv1; id=b']]), undefined);
  assert.equal(policyIdOf([['v=STSv1; id=not-alphanumeric']]), undefined);
  assert.equal(policyIdOf([['v=STSv1; id=' + 'x'.repeat(33)]]), undefined);
  assert.equal(policyIdOf([['v=STSv1;']]), undefined);
  assert.equal(policyIdOf([['v=STSv10; id=abc']]), undefined);
});

test('a policy file is parsed into mode, mx patterns, max_age and its lines', () => {
  const policy = parsePolicyText('version: STSv1\r\nmode: enforce\r\nmx: MX1.Example.ORG\r\nmx: *.mail.example.org\r\nmax_age: 604800\r\n');
  assert.deepEqual(policy, {
    mode: 'enforce',
    mx: ['mx1.example.org', '*.mail.example.org'],
    maxAgeS: 604800,
    text: ['version: STSv1', 'mode: enforce', 'mx: MX1.Example.ORG', 'mx: *.mail.example.org', 'max_age: 604800'],
  });
  assert.equal(parsePolicyText('version: STSv1\nmode: none\nmax_age: 86400\n').mode, 'none', 'mode none needs no mx');
});

test('invalid policy files are refused with a reason', () => {
  const cases: Array<[string, RegExp]> = [
    ['version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n', /version/],
    ['version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n', /mode/],
    ['version: STSv1\nmode: enforce\nmax_age: 86400\n', /mx/],
    ['version: STSv1\nmode: enforce\nmx: a.example\n', /max_age/],
    ['version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n', /max_age/],
    ['version: STSv1\nmode: enforce\nmx: bad_host!.example\nmax_age: 86400\n', /invalid mx pattern/],
    ['version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 86400\n', /invalid mx pattern/],
    ['<html>not a policy</html>', /version/],
  ];
  for (const [body, reason] of cases) assert.throws(() => parsePolicyText(body), (err: unknown) => err instanceof PolicyTextError && reason.test(err.message), body);
});

test('an MX pattern matches its exact name; a wildcard stands for exactly one leftmost label', () => {
  assert.ok(mxMatches('mx1.example.org', 'mx1.example.org'));
  assert.ok(mxMatches('MX1.Example.Org.', 'mx1.example.org'), 'case and the trailing dot do not matter');
  assert.ok(mxMatches('a.mail.example.org', '*.mail.example.org'));
  assert.ok(!mxMatches('mail.example.org', '*.mail.example.org'), 'the wildcard needs a label');
  assert.ok(!mxMatches('a.b.mail.example.org', '*.mail.example.org'), 'only one label');
  assert.ok(!mxMatches('evilmail.example.org', '*.mail.example.org'));
  assert.ok(!mxMatches('mx1.example.org.evil.test', 'mx1.example.org'));
  assert.ok(mxAllowed('mx2.example.org', { mx: ['mx1.example.org', 'mx2.example.org'] }));
  assert.ok(!mxAllowed('mx3.example.org', { mx: ['mx1.example.org', 'mx2.example.org'] }));
});
