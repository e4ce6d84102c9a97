/**
 * postmaster@ and abuse@ of the domain reach someone. Complaints, abuse reports
 * and the TLS and DMARC reports the domain's records ask for (rua=mailto:postmaster@)
 * arrive there; kept in a Maildir on the server, they wait unread until somebody
 * looks. The check reads the relay's config only: `pass` when both addresses are
 * passed on (an alias that forwards, or a forward domain), `warn` when one is kept
 * in a local Maildir, with the aliases that would forward it.
 */
import { resolveLocalMailbox, ROLE_MAILBOXES } from '../../delivery/local-mailboxes';
import type { Check } from '../types';

export const roleAddressesCheck: Check = {
  id: 'role-addresses',
  title: 'postmaster and abuse reach someone',
  async run({ config, domain }) {
    const entry = config.domains.find((d) => d.name.toLowerCase() === domain);
    if (!entry) {
      return {
        status: 'warn',
        detail: `this server does not receive mail for ${domain} (no domains entry): postmaster@${domain} and abuse@${domain} go wherever its MX points`,
        fix: `add ${domain} to domains in the relay's config, or make sure the server its MX names delivers them`,
      };
    }
    if (entry.delivery === 'forward') {
      return { status: 'pass', detail: ROLE_MAILBOXES.map((role) => `${role}@${domain}: passed on to ${entry.forwardTo?.host ?? 'the next hop'}`).join('\n') };
    }
    const lines: string[] = [];
    const kept: string[] = [];
    for (const role of ROLE_MAILBOXES) {
      const resolved = resolveLocalMailbox(entry, role);
      if ('reason' in resolved) {
        lines.push(`${role}@${domain}: refused (${resolved.reason})`);
        kept.push(role);
        continue;
      }
      const where = [
        ...resolved.forwards.map((address) => `forwarded to ${address}`),
        ...resolved.mailboxes.map((mailbox) => `kept in the Maildir ${config.paths.mail}/${domain}/${mailbox}/`),
      ];
      lines.push(`${role}@${domain}: ${where.join('; ')}`);
      if (resolved.forwards.length === 0) kept.push(role);
    }
    if (kept.length === 0) return { status: 'pass', detail: lines.join('\n') };
    return {
      status: 'warn',
      detail: `${lines.join('\n')}\ncomplaints and TLS/DMARC reports sent there wait on this server until someone reads them`,
      fix: `forward them to a mailbox you read, in the entry of ${domain} in domains:\n  aliases: { ${kept.map((role) => `${role}: you@example.net`).join(', ')} }`,
    };
  },
};
