/**
 * Open connections per client address, for `limits.maxConnectionsPerIp`: one
 * address may hold only so many of a listener's connections at a time (like
 * Postfix's smtpd_client_connection_count_limit), so a single host cannot take
 * every slot of a public MX.
 *
 * Contract: `admit` counts a session only when its address is under the limit;
 * `release` uncounts it and may be called for any session, counted or not, any
 * number of times. An IPv4 address seen as IPv6 (::ffff:a.b.c.d) counts as itself.
 */
export class ClientConnections {
  private readonly open = new Map<string, number>();
  private readonly addressOf = new Map<string, string>();

  /** Counts `sessionId` against `address`; false (and nothing counted) when the address already has `limit` open. */
  admit(sessionId: string, address: string, limit: number): boolean {
    const key = clientKey(address);
    const count = this.open.get(key) ?? 0;
    if (count >= limit) return false;
    this.open.set(key, count + 1);
    this.addressOf.set(sessionId, key);
    return true;
  }

  release(sessionId: string): void {
    const key = this.addressOf.get(sessionId);
    if (key === undefined) return;
    this.addressOf.delete(sessionId);
    const count = (this.open.get(key) ?? 1) - 1;
    if (count > 0) this.open.set(key, count);
    else this.open.delete(key);
  }

  /** Connections open now from `address`. */
  count(address: string): number {
    return this.open.get(clientKey(address)) ?? 0;
  }
}

function clientKey(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address.toLowerCase();
}
