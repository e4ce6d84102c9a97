/**
 * Brute-force protection for SMTP AUTH: counts failures per client IP and per
 * user name in a sliding window.
 *
 * Contract:
 * - `delayMs(ip, user)` is how long to wait before answering an attempt: zero
 *   until a key has failed, then doubling with each failure (from baseDelayMs up
 *   to maxDelayMs), the larger of the IP's and the user's. A user under attack
 *   is slowed down, never locked out (a lockout would let anyone lock out the
 *   customer's own applications).
 * - `blocked(ip)` is true once an IP has maxFailuresPerIp failures in the
 *   window: its attempts are answered 454 without checking the password, so a
 *   flood costs no scrypt work.
 * - A success clears the user's and the IP's count. Memory is bounded: old
 *   entries are dropped as the window moves, and at most maxKeys are kept.
 */
export interface AuthThrottleOptions {
  windowMs: number;
  maxFailuresPerIp: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** most keys tracked at once (oldest dropped first) */
  maxKeys?: number;
}

export class AuthThrottle {
  private readonly failures = new Map<string, number[]>();
  private readonly maxKeys: number;

  constructor(
    private options: AuthThrottleOptions,
    private readonly now: () => number = Date.now,
  ) {
    this.maxKeys = options.maxKeys ?? 100_000;
  }

  /** New limits (a reload); the failures counted so far still count. */
  configure(options: AuthThrottleOptions): void {
    this.options = options;
  }

  delayMs(ip: string, user: string): number {
    const count = Math.max(this.count(ipKey(ip)), this.count(userKey(user)));
    if (count === 0) return 0;
    return Math.min(this.options.maxDelayMs, this.options.baseDelayMs * 2 ** (count - 1));
  }

  blocked(ip: string): boolean {
    return this.count(ipKey(ip)) >= this.options.maxFailuresPerIp;
  }

  failed(ip: string, user: string): void {
    this.add(ipKey(ip));
    if (user) this.add(userKey(user));
  }

  succeeded(ip: string, user: string): void {
    this.failures.delete(ipKey(ip));
    this.failures.delete(userKey(user));
  }

  private count(key: string): number {
    const times = this.failures.get(key);
    if (!times) return 0;
    const since = this.now() - this.options.windowMs;
    while (times.length > 0 && times[0]! <= since) times.shift();
    if (times.length === 0) this.failures.delete(key);
    return times.length;
  }

  private add(key: string): void {
    const times = this.failures.get(key);
    if (times) {
      times.push(this.now());
      // keep the count bounded: only the last maxFailuresPerIp (and enough for the delay) matter
      if (times.length > 64) times.shift();
      return;
    }
    if (this.failures.size >= this.maxKeys) this.failures.delete(this.failures.keys().next().value!);
    this.failures.set(key, [this.now()]);
  }
}

function ipKey(ip: string): string {
  return `ip:${ip.replace(/^::ffff:/i, '')}`;
}

function userKey(user: string): string {
  return `user:${user.toLowerCase()}`;
}
