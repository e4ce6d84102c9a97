/**
 * Relay policy: who may send what to whom. Decisions use only the envelope that
 * smtp-server parsed (it strips source routes and refuses addresses with two
 * unquoted @), never headers.
 *
 * - Mail for the domains we receive for is accepted from anyone, if the mailbox
 *   exists (maildir domains) or the local part has no routing syntax (forward
 *   domains, whose next hop might honour "%" or "!").
 * - Mail for other domains needs AUTH or a client in relay.networks; anything else
 *   is "Relay access denied", whatever tricks the address carries.
 * - An authenticated user may only use the senders configured for it.
 */
import type { DomainConfig, RelayConfig, UserConfig } from '../config/schema';
import { NetworkList } from '../config/cidr';
import { resolveLocalMailbox } from '../delivery/local-mailboxes';
import { domainOf, localPartOf } from '../queue/envelope';
import { accept, refuse, type Verdict } from './verdict';

export interface ClientContext {
  remoteAddress: string;
  /** authenticated user name, if any */
  user?: string;
  role: 'mx' | 'submission';
}

/** Local parts that ask some mail systems to route elsewhere. */
const ROUTING_SYNTAX = /[%!@"\\]/;

export class RelayPolicy {
  private readonly domains = new Map<string, DomainConfig>();
  private readonly users = new Map<string, UserConfig>();
  private readonly relayNetworks: NetworkList;

  constructor(config: RelayConfig) {
    for (const domain of config.domains) this.domains.set(domain.name.toLowerCase(), domain);
    for (const user of config.users) this.users.set(user.name, user);
    this.relayNetworks = new NetworkList(config.relay.networks);
  }

  localDomain(domain: string): DomainConfig | undefined {
    return this.domains.get(domain.toLowerCase());
  }

  user(name: string): UserConfig | undefined {
    return this.users.get(name);
  }

  /** Clients that may send to any domain: authenticated, or in relay.networks. */
  mayRelay(client: ClientContext): boolean {
    return client.user !== undefined || this.relayNetworks.contains(client.remoteAddress);
  }

  checkSender(client: ClientContext, from: string): Verdict {
    if (client.user !== undefined) {
      const user = this.users.get(client.user);
      if (!user || !senderAllowed(user, from)) {
        return refuse('sender', 553, '5.7.1', `Sender address <${from}> is not allowed for user ${client.user}`, `user ${client.user} may not send as <${from}>`);
      }
      return accept('sender', `user ${client.user}`);
    }
    if (client.role === 'submission' && !this.relayNetworks.contains(client.remoteAddress)) {
      return refuse('sender', 530, '5.7.0', 'Authentication required', 'unauthenticated sender on a submission listener');
    }
    return accept('sender', from === '' ? 'null sender' : 'any sender');
  }

  checkRecipient(client: ClientContext, address: string): Verdict {
    const domainName = address.includes('@') ? domainOf(address) : this.postmasterDomain();
    const localPart = localPartOf(address);
    if (domainName.startsWith('[')) {
      return refuse('recipient', 550, '5.1.2', 'Address literals are not accepted as recipients', `address literal ${address}`);
    }
    const domain = this.localDomain(domainName);
    if (domain) {
      if (domain.delivery === 'maildir') {
        const resolved = resolveLocalMailbox(domain, localPart);
        if ('reason' in resolved) return refuse('recipient', 550, '5.1.1', `<${address}>: Recipient address rejected: unknown user`, resolved.reason);
        const targets = [...resolved.mailboxes.map((m) => `${m}@${domain.name}`), ...resolved.forwards];
        return accept('recipient', targets.length === 1 && resolved.forwards.length === 0 ? `local mailbox ${targets[0]}` : `alias of ${domain.name} to ${targets.join(', ')}`);
      }
      if (ROUTING_SYNTAX.test(localPart)) {
        return refuse('recipient', 553, '5.7.1', `<${address}>: Routing syntax in the local part is not allowed`, `routing syntax in ${address}`);
      }
      if (domain.mailboxes && !resolvesToListedMailbox(domain, localPart)) {
        return refuse('recipient', 550, '5.1.1', `<${address}>: Recipient address rejected: unknown user`, `no mailbox ${localPart} at ${domain.name}`);
      }
      return accept('recipient', `forward domain ${domain.name}`);
    }
    if (this.mayRelay(client)) return accept('recipient', client.user !== undefined ? `relay for user ${client.user}` : 'relay for listed network');
    return refuse('recipient', 554, '5.7.1', `<${address}>: Relay access denied`, `relay denied for ${client.remoteAddress} to ${address}`);
  }

  /** RCPT TO:<postmaster> without a domain means the postmaster of this server. */
  private postmasterDomain(): string {
    return this.domains.keys().next().value ?? '';
  }
}

function resolvesToListedMailbox(domain: DomainConfig, localPart: string): boolean {
  return !('reason' in resolveLocalMailbox(domain, localPart));
}

export function senderAllowed(user: UserConfig, from: string): boolean {
  if (from === '') return false;
  const address = from.toLowerCase();
  const domain = domainOf(address);
  return user.senders.some((allowed) => {
    const rule = allowed.toLowerCase();
    return rule.startsWith('@') ? `@${domain}` === rule : address === rule;
  });
}
