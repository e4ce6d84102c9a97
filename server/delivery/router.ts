/**
 * Routing: which way each recipient's mail leaves. Per recipient domain, in order:
 * a local maildir domain; a local forward domain's next hop; `delivery.routes`;
 * `delivery.smarthost`; otherwise the domain's MX. Recipients of one message
 * that share a route are delivered together, in one SMTP transaction.
 */
import type { NextHop, RelayConfig } from '../config/schema';
import { domainOf } from '../queue/envelope';
import type { OutboundMessage, RecipientResult } from './types';
import type { MaildirTransport } from './maildir';
import type { SmtpDelivery } from './smtp-transport';

export type Route =
  | { kind: 'maildir'; key: string }
  | { kind: 'next-hop'; key: string; hop: NextHop }
  | { kind: 'mx'; key: string; domain: string };

export interface RouteGroup {
  route: Route;
  recipients: string[];
}

export class Router {
  constructor(
    private readonly config: RelayConfig,
    private readonly maildir: MaildirTransport,
    private readonly smtp: SmtpDelivery,
  ) {}

  routeFor(domain: string): Route {
    const name = domain.toLowerCase();
    const local = this.config.domains.find((d) => d.name.toLowerCase() === name);
    if (local?.delivery === 'maildir') return { kind: 'maildir', key: 'local' };
    if (local?.delivery === 'forward' && local.forwardTo) return nextHopRoute(local.forwardTo);
    const route = this.config.delivery.routes[name];
    if (route) return nextHopRoute(route);
    if (this.config.delivery.smarthost) return nextHopRoute(this.config.delivery.smarthost);
    return { kind: 'mx', key: `mx:${name}`, domain: name };
  }

  /** Groups recipients by route, keeping their order. */
  group(recipients: readonly string[]): RouteGroup[] {
    const groups = new Map<string, RouteGroup>();
    for (const address of recipients) {
      const route = this.routeFor(domainOf(address));
      const group = groups.get(route.key);
      if (group) group.recipients.push(address);
      else groups.set(route.key, { route, recipients: [address] });
    }
    return [...groups.values()];
  }

  deliver(route: Route, message: OutboundMessage): Promise<RecipientResult[]> {
    switch (route.kind) {
      case 'maildir':
        return this.maildir.deliver(message);
      case 'next-hop':
        return this.smtp.deliverViaNextHop(route.hop, message);
      case 'mx':
        return this.smtp.deliverViaMx(route.domain, message);
    }
  }

  async close(): Promise<void> {
    await Promise.all([this.maildir.close(), this.smtp.close()]);
  }
}

function nextHopRoute(hop: NextHop): Route {
  return { kind: 'next-hop', key: `hop:${hop.host}:${hop.port}:${hop.tls}:${hop.auth?.user ?? ''}`, hop };
}
