/**
 * When a deferred message is tried again, and when it is given up on. Like
 * Postfix (minimal_backoff_time, maximal_backoff_time, maximal_queue_lifetime):
 * the first retry waits minBackoffMs, each further one twice as long, never more
 * than maxBackoffMs; a message older than maxQueueLifetimeMs is bounced after its
 * next failed attempt. Pure functions of their arguments (times in ms).
 */

export interface BackoffSettings {
  minBackoffMs: number;
  maxBackoffMs: number;
}

export interface RetrySettings extends BackoffSettings {
  maxQueueLifetimeMs: number;
}

/**
 * The wait before the next attempt, given how many attempts have failed so far:
 * 0 before any attempt, then minBackoffMs, 2x, 4x, ... capped at maxBackoffMs
 * (with the defaults: 300 s, 600 s, 1200 s, 2400 s, 4000 s, 4000 s, ...).
 */
export function nextRetryDelayMs(attemptsMade: number, retry: BackoffSettings): number {
  if (!(attemptsMade >= 1)) return 0;
  // 2 ** 1023 is still finite; beyond that the cap applies anyway.
  const exponent = Math.min(attemptsMade - 1, 1023);
  return Math.min(retry.maxBackoffMs, retry.minBackoffMs * 2 ** exponent);
}

/** True once a message received at `receivedAt` has been queued for maxQueueLifetimeMs or longer. */
export function hasExpired(receivedAt: number, now: number, maxQueueLifetimeMs: number): boolean {
  return now - receivedAt >= maxQueueLifetimeMs;
}

export type RetryDecision =
  | { action: 'retry'; retryAtMs: number; expiresAtMs: number }
  | { action: 'expire' };

/**
 * What to do after a failed attempt (attemptsMade already counts it): bounce if
 * the message has expired, else retry after the backoff. A retry that would fall
 * after the expiry time is moved to the expiry time, so the final attempt (and
 * the bounce if it fails) happens when the lifetime ends, not up to one
 * maxBackoffMs later.
 */
export function retryPlan(input: { attemptsMade: number; receivedAt: number; now: number; retry: RetrySettings }): RetryDecision {
  const { attemptsMade, receivedAt, now, retry } = input;
  if (hasExpired(receivedAt, now, retry.maxQueueLifetimeMs)) return { action: 'expire' };
  const expiresAtMs = receivedAt + retry.maxQueueLifetimeMs;
  const retryAtMs = Math.min(now + nextRetryDelayMs(attemptsMade, retry), expiresAtMs);
  return { action: 'retry', retryAtMs, expiresAtMs };
}
