import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RelayConfigSchema } from '../../server/config/schema';
import { hasExpired, nextRetryDelayMs, retryPlan } from '../../server/queue/retry-schedule';

const defaults = RelayConfigSchema.parse({ listeners: [{ role: 'mx', port: 25 }] }).delivery.retry;
const SECOND_MS = 1000;
const DAY_MS = 24 * 3600 * SECOND_MS;

describe('nextRetryDelayMs', () => {
  test('with the default settings follows the Postfix schedule: 300, 600, 1200, 2400 s, then 4000 s', () => {
    const delaysS = [1, 2, 3, 4, 5, 6, 50].map((n) => nextRetryDelayMs(n, defaults) / SECOND_MS);
    assert.deepEqual(delaysS, [300, 600, 1200, 2400, 4000, 4000, 4000]);
  });

  test('is zero before any attempt has been made', () => {
    assert.equal(nextRetryDelayMs(0, defaults), 0);
    assert.equal(nextRetryDelayMs(-1, defaults), 0);
  });

  test('stays finite and capped for absurd attempt counts', () => {
    assert.equal(nextRetryDelayMs(1e9, defaults), defaults.maxBackoffMs);
    assert.equal(nextRetryDelayMs(Number.MAX_SAFE_INTEGER, { minBackoffMs: 1, maxBackoffMs: 7 }), 7);
  });

  test('never exceeds the maximum even when the minimum is larger', () => {
    assert.equal(nextRetryDelayMs(1, { minBackoffMs: 10_000, maxBackoffMs: 5_000 }), 5_000);
  });
});

describe('hasExpired', () => {
  test('a message expires once it has been queued for the whole lifetime (5 days by default)', () => {
    const receivedAt = Date.UTC(2025, 0, 1);
    assert.equal(defaults.maxQueueLifetimeMs, 5 * DAY_MS);
    assert.equal(hasExpired(receivedAt, receivedAt + 5 * DAY_MS - 1, defaults.maxQueueLifetimeMs), false);
    assert.equal(hasExpired(receivedAt, receivedAt + 5 * DAY_MS, defaults.maxQueueLifetimeMs), true);
    assert.equal(hasExpired(receivedAt, receivedAt + 6 * DAY_MS, defaults.maxQueueLifetimeMs), true);
  });
});

describe('retryPlan', () => {
  const receivedAt = Date.UTC(2025, 0, 1);

  test('schedules the next attempt after the backoff for the attempts made', () => {
    const now = receivedAt + 3_600_000;
    assert.deepEqual(retryPlan({ attemptsMade: 2, receivedAt, now, retry: defaults }), {
      action: 'retry',
      retryAtMs: now + 600 * SECOND_MS,
      expiresAtMs: receivedAt + 5 * DAY_MS,
    });
  });

  test('moves a retry that would fall after the expiry to the expiry time', () => {
    const now = receivedAt + 5 * DAY_MS - 60 * SECOND_MS;
    const plan = retryPlan({ attemptsMade: 40, receivedAt, now, retry: defaults });
    assert.deepEqual(plan, { action: 'retry', retryAtMs: receivedAt + 5 * DAY_MS, expiresAtMs: receivedAt + 5 * DAY_MS });
  });

  test('gives up once the message has expired', () => {
    assert.deepEqual(retryPlan({ attemptsMade: 40, receivedAt, now: receivedAt + 5 * DAY_MS, retry: defaults }), { action: 'expire' });
  });
});
