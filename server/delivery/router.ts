/**
 * Routing: which way each recipient's mail leaves. Per recipient domain, in order:
 * a local maildir domain; a local forward domain's next hop; `delivery.routes`;
 * `delivery.smarthost`; otherwise the domain's MX. Recipients of one message
 * that share a route are delivered together, in one SMTP transaction.
 *
 * Mail that leaves over SMTP (next hops and MX) is DKIM-signed on the way out;
 * mail stored in a local Maildir is not. A signing error defers the recipients.
 */
import type { NextHop, RelayConfig } from '../config/schema';
import { domainOf } from '../queue/envelope';
import type { DkimSigner } from '../dkim/signer';
import type { OutboundMessage, RecipientResult } from './types';
import type { MaildirTransport } from './maildir';
import type { SmtpDelivery } from './smtp-transport';

export type Route =
  | { kind: 'maildir'; key: string }
  | { kind: 'next-hop'; key: string; hop: NextHop }
  | { kind: 'mx'; key: string; domain: string };

/** A destination as the logs name it: the domain, or the next hop's host and port. */
export function routeName(route: Route): string {
  if (route.kind === 'mx') return route.domain;
  if (route.kind === 'next-hop') return `${route.hop.host}:${route.hop.port}`;
  return route.key;
}

export interface RouteGroup {
  route: Route;
  recipients: string[];
}

export class Router {
  constructor(
    private readonly config: RelayConfig,
    private readonly maildir: MaildirTransport,
    private readonly smtp: SmtpDelivery,
    private readonly signer?: DkimSigner,
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

  async deliver(route: Route, message: OutboundMessage): Promise<RecipientResult[]> {
    if (route.kind === 'maildir') return this.maildir.deliver(message);
    let signed: OutboundMessage;
    try {
      signed = this.signer ? await this.signer.sign(message, message.receivedAt ?? Date.now()) : message;
    } catch (err) {
      const reply = `451 4.7.0 ${err instanceof Error ? err.message : String(err)}`;
      return message.recipients.map((address) => ({ address, outcome: 'deferred', reply }));
    }
    return route.kind === 'next-hop' ? this.smtp.deliverViaNextHop(route.hop, signed) : this.smtp.deliverViaMx(route.domain, signed);
  }

  async close(): Promise<void> {
    await Promise.all([this.maildir.close(), this.smtp.close()]);
  }
}

function nextHopRoute(hop: NextHop): Route {
  return { kind: 'next-hop', key: `hop:${hop.host}:${hop.port}:${hop.tls}:${hop.auth?.user ?? ''}`, hop };
}
