/**
 * Messages per hour per authenticated user (limits.sending, or the user's own
 * sendingLimit): a leaked password must not burn the server's IP reputation.
 *
 * Contract: `check(user)` says whether the user is over its limit and what to do
 * (defer or hold); `record(user)` counts one accepted message. The window slides:
 * a message counts for exactly one hour after it was accepted. Concurrent
 * sessions of one user may overshoot by the messages in flight, never more.
 */
import type { RelayConfig, UserConfig } from '../config/schema';

type SendingLimit = RelayConfig['limits']['sending'];

const HOUR_MS = 3600_000;

export type SendingVerdict = { over: false } | { over: true; action: 'defer' | 'hold'; limit: number };

export class SendingLimiter {
  private readonly sent = new Map<string, number[]>();

  constructor(private readonly now: () => number = Date.now) {}

  /** `defaults` is limits.sending of the config in force (a reload may change it; the counts stay). */
  check(user: UserConfig, defaults: SendingLimit): SendingVerdict {
    const { messagesPerHour, action } = user.sendingLimit ?? defaults;
    return this.count(user.name) >= messagesPerHour ? { over: true, action, limit: messagesPerHour } : { over: false };
  }

  record(user: UserConfig): void {
    const times = this.sent.get(user.name) ?? [];
    times.push(this.now());
    this.sent.set(user.name, times);
  }

  /** messages the user sent in the last hour */
  count(name: string): number {
    const times = this.sent.get(name);
    if (!times) return 0;
    const since = this.now() - HOUR_MS;
    let drop = 0;
    while (drop < times.length && times[drop]! <= since) drop++;
    if (drop > 0) times.splice(0, drop);
    return times.length;
  }
}
