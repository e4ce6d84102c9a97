/** AuthThrottle's counting, with a clock the test moves. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AuthThrottle } from '../../server/stages/auth-throttle';

function throttle(maxKeys?: number) {
  let now = 1_000_000;
  const t = new AuthThrottle({ windowMs: 60_000, maxFailuresPerIp: 3, baseDelayMs: 100, maxDelayMs: 350, ...(maxKeys ? { maxKeys } : {}) }, () => now);
  return { t, advance: (ms: number) => (now += ms) };
}

test('delays double per failure up to the maximum; the larger of IP and user counts', () => {
  const { t } = throttle();
  assert.equal(t.delayMs('10.0.0.1', 'app'), 0);
  t.failed('10.0.0.1', 'app');
  assert.equal(t.delayMs('10.0.0.1', 'other'), 100);
  assert.equal(t.delayMs('10.0.0.2', 'app'), 100, 'the user is slowed down from any IP');
  t.failed('10.0.0.2', 'app');
  assert.equal(t.delayMs('10.0.0.3', 'APP'), 200, 'user names compare without case');
  t.failed('10.0.0.2', 'app');
  assert.equal(t.delayMs('10.0.0.3', 'app'), 350);
});

test('an IP is blocked at the limit, IPv4-mapped or not, until its failures leave the window', () => {
  const { t, advance } = throttle();
  t.failed('10.0.0.1', 'a');
  t.failed('::ffff:10.0.0.1', 'b');
  assert.equal(t.blocked('10.0.0.1'), false);
  advance(30_000);
  t.failed('10.0.0.1', 'c');
  assert.equal(t.blocked('::ffff:10.0.0.1'), true);
  advance(30_001);
  assert.equal(t.blocked('10.0.0.1'), false, 'the first two failures left the window');
  assert.equal(t.delayMs('10.0.0.1', 'x'), 100);
});

test('a success clears the IP and the user; the number of keys is bounded', () => {
  const { t } = throttle(4);
  t.failed('10.0.0.1', 'app');
  t.succeeded('10.0.0.1', 'app');
  assert.equal(t.delayMs('10.0.0.1', 'app'), 0);
  for (let i = 0; i < 10; i++) t.failed(`10.0.1.${i}`, '');
  assert.equal(t.delayMs('10.0.1.0', ''), 0, 'the oldest keys were dropped');
  assert.equal(t.delayMs('10.0.1.9', ''), 100);
});
