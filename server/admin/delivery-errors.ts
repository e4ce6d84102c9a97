/**
 * The last delivery error per destination domain, for `ownrelay status`: what a
 * remote server (or the network) last said when a recipient was deferred or
 * bounced. Bounded: the domains with the oldest errors are forgotten first, and a
 * delivery to a domain clears its entry.
 */
import { domainOf } from '../queue/envelope';
import type { RecipientResult } from '../delivery/types';

export interface DomainError {
  domain: string;
  /** ISO time of the last error */
  at: string;
  outcome: 'deferred' | 'failed';
  reply: string;
  remoteHost?: string;
  queueId: string;
  /** errors for this domain since its last successful delivery */
  count: number;
}

const MAX_DOMAINS = 100;

export class DeliveryErrors {
  private readonly byDomain = new Map<string, DomainError>();

  record(queueId: string, result: RecipientResult): void {
    const domain = domainOf(result.address);
    if (result.outcome === 'delivered') {
      this.byDomain.delete(domain);
      return;
    }
    const previous = this.byDomain.get(domain);
    // re-inserted so the map stays ordered by time of the last error
    this.byDomain.delete(domain);
    this.byDomain.set(domain, {
      domain,
      at: new Date().toISOString(),
      outcome: result.outcome,
      reply: result.reply,
      ...(result.remoteHost ? { remoteHost: result.remoteHost } : {}),
      queueId,
      count: (previous?.count ?? 0) + 1,
    });
    if (this.byDomain.size > MAX_DOMAINS) this.byDomain.delete(this.byDomain.keys().next().value!);
  }

  /** most recent first */
  list(): DomainError[] {
    return [...this.byDomain.values()].reverse();
  }
}
