/**
 * Destinations that could not be reached at all, and until when their mail
 * waits without a connection attempt (Postfix's "dead destination").
 *
 * When every recipient of an attempt to a destination comes back `unreachable`
 * (its DNS failed, none of its hosts answered, or its MTA-STS policy ruled them
 * all out), the destination is suspended for a while: the messages that queue up
 * behind it are deferred at once with the reason, instead of each waiting for its
 * own connection timeouts and holding delivery slots that mail for live
 * destinations needs. An attempt that reaches a server (whatever it answers)
 * lifts the suspension; so do its expiry and the administrator's retry or flush.
 */
import type { RecipientResult } from '../delivery/types';

export interface Suspension {
  /** ms since epoch */
  until: number;
  /** why the last attempt failed */
  reason: string;
}

/** A suspension as the administrator sees it. */
export interface SuspendedDestination {
  /** the domain, or the next hop's host:port */
  destination: string;
  /** ISO time */
  until: string;
  reason: string;
}

export class SuspendedDestinations {
  /** by route key: the suspension and the destination's name for the administrator */
  private readonly byKey = new Map<string, { suspension: Suspension; name: string }>();

  /** The suspension of `key` in force at `now`, if any. */
  current(key: string, now = Date.now()): Suspension | undefined {
    const suspension = this.byKey.get(key)?.suspension;
    if (suspension && suspension.until <= now) {
      this.byKey.delete(key);
      return undefined;
    }
    return suspension;
  }

  /**
   * Learns from an attempt's results: all unreachable suspends `key` for
   * `forMs`; anything else lifts a suspension. Says what changed.
   */
  record(key: string, results: readonly RecipientResult[], forMs: number, now = Date.now(), name = key): 'suspended' | 'lifted' | undefined {
    if (results.length > 0 && results.every((r) => r.outcome === 'deferred' && r.unreachable)) {
      const known = this.byKey.has(key);
      this.byKey.set(key, { suspension: { until: now + forMs, reason: results[0]!.reply }, name });
      return known ? undefined : 'suspended';
    }
    return this.byKey.delete(key) ? 'lifted' : undefined;
  }

  /** The suspensions in force at `now`, soonest to end first. */
  list(now = Date.now()): SuspendedDestination[] {
    return [...this.byKey]
      .filter(([key]) => this.current(key, now) !== undefined)
      .sort(([, a], [, b]) => a.suspension.until - b.suspension.until)
      .map(([, { suspension, name }]) => ({ destination: name, until: new Date(suspension.until).toISOString(), reason: suspension.reason }));
  }

  /** Lifts every suspension (the administrator asked for delivery now). */
  clear(): void {
    this.byKey.clear();
  }
}
