/**
 * Which mailbox of a local domain a recipient's local part names.
 *
 * The same function answers at RCPT time (a refusal becomes 550 5.1.1) and at
 * delivery, so a recipient accepted by the listener is delivered to the mailbox
 * the listener checked. The mailbox name becomes a directory name under the
 * Maildir root, which is why the accepted syntax is deliberately narrow and the
 * result is asserted safe before it is returned.
 */
import type { DomainConfig } from '../config/schema';
import { domainOf, localPartOf, type RecipientState } from '../queue/envelope';

/** One mailbox, or several for an alias that is a list (`team: [alice, bob]`). */
export type MailboxResolution = { mailboxes: string[] } | { reason: string };

/** Mailboxes every domain has, listed or not (RFC 5321 section 4.5.1 requires postmaster; abuse per RFC 2142). */
export const ROLE_MAILBOXES: readonly string[] = ['postmaster', 'abuse'];

/**
 * A plain dot-atom local part: letters, digits, '.', '_' and '-', starting with a
 * letter or digit, at most 64 characters (the RFC 5321 local-part limit), no
 * empty dot-separated atoms ("a..b", "a."), as RFC 5321 forbids them unquoted.
 */
const PLAIN_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/i;

export function isPlainMailboxName(name: string): boolean {
  return PLAIN_NAME.test(name) && !name.includes('..') && !name.endsWith('.');
}

/**
 * Last line of defence before a name is joined to a path: throws unless the name
 * is a single, ordinary path component. Callers validate first; reaching the
 * throw means a bug, not bad input.
 */
export function assertSafePathComponent(name: string, what: string): void {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\\') || name.includes('\0')) {
    throw new Error(`unsafe ${what} name for a directory: ${JSON.stringify(name)}`);
  }
}

/** Whether `address` is postmaster@ or abuse@ (with any +detail) of its domain. */
export function isRoleMailbox(address: string): boolean {
  return ROLE_MAILBOXES.includes(baseLocalPart(localPartOf(address)));
}

/** Lower-cases and drops a "+detail" suffix: "User+Tag" -> "user". */
export function baseLocalPart(localPart: string): string {
  const plus = localPart.indexOf('+');
  return (plus < 0 ? localPart : localPart.slice(0, plus)).toLowerCase();
}

/** The mailboxes an alias names, lower-cased: one, or the members of a list. */
function aliasTargets(domain: DomainConfig, base: string): string[] | undefined {
  for (const [from, to] of Object.entries(domain.aliases ?? {})) {
    if (from.toLowerCase() === base) return (typeof to === 'string' ? [to] : to).map((name) => name.trim().toLowerCase());
  }
  return undefined;
}

/**
 * Resolves `localPart` (as given at RCPT TO, without "@domain") to the mailboxes
 * of `domain` it delivers to: one, or the members of an alias list. Aliases are
 * applied once (an alias to another alias is not followed), after the "+detail"
 * suffix is dropped. Reasons are fit for an SMTP reply: they never echo unchecked
 * input.
 */
export function resolveLocalMailbox(domain: DomainConfig, localPart: string): MailboxResolution {
  const base = baseLocalPart(localPart);
  if (!isPlainMailboxName(base)) {
    return { reason: 'local part is not a plain mailbox name (letters, digits, ".", "_", "-")' };
  }

  const mailboxes = [...new Set(aliasTargets(domain, base) ?? [base])];
  for (const mailbox of mailboxes) {
    if (!isPlainMailboxName(mailbox)) {
      // Only a config error gets here (the schema refuses it): an alias whose target is not a mailbox of this domain.
      return { reason: `alias ${base} does not lead to a mailbox of ${domain.name}` };
    }
    const isRole = ROLE_MAILBOXES.includes(base) || ROLE_MAILBOXES.includes(mailbox);
    if (domain.mailboxes !== undefined && !isRole && !domain.mailboxes.some((m) => m.toLowerCase() === mailbox)) {
      return { reason: `no mailbox ${base} at ${domain.name}` };
    }
    assertSafePathComponent(mailbox, 'mailbox');
  }
  return { mailboxes };
}

/**
 * Whether any maildir domain has an alias that is a list: without one,
 * expandAliasLists has nothing to do and need not be called.
 */
export function hasAliasLists(domains: readonly DomainConfig[]): boolean {
  return domains.some((d) => d.delivery === 'maildir' && Object.values(d.aliases ?? {}).some((to) => typeof to !== 'string' && to.length > 1));
}

/**
 * A new message's recipients as they are queued (as Postfix's cleanup applies
 * virtual aliases): a recipient at a maildir domain whose alias is a list becomes
 * one recipient per member (`member@domain`), each with its own delivery state,
 * so a member whose mailbox cannot be written to is retried alone and the others
 * are not written twice. Each member keeps the recipient's NOTIFY and names it as
 * ORCPT (its own ORCPT when it gave one), so a DSN says which address the mail was
 * sent to. Other recipients pass unchanged, and an address is never listed twice.
 */
export function expandAliasLists(domains: readonly DomainConfig[], recipients: RecipientState[]): RecipientState[] {
  const out: RecipientState[] = [];
  const seen = new Set<string>();
  const add = (r: RecipientState) => {
    const key = r.address.toLowerCase();
    if (seen.has(key)) return;
    seen.add(key);
    out.push(r);
  };
  for (const recipient of recipients) {
    const domainName = domainOf(recipient.address);
    const domain = domains.find((d) => d.delivery === 'maildir' && d.name.toLowerCase() === domainName);
    const resolved = domain ? resolveLocalMailbox(domain, localPartOf(recipient.address)) : undefined;
    if (!domain || !resolved || !('mailboxes' in resolved) || resolved.mailboxes.length < 2 || recipient.status !== 'pending') {
      add(recipient);
      continue;
    }
    // RFC 6533: an address that is not all ASCII (an IDN domain as given) is of type utf-8
    const orcpt = recipient.orcpt ?? `${/[^\x00-\x7f]/.test(recipient.address) ? 'utf-8' : 'rfc822'};${recipient.address}`;
    for (const mailbox of resolved.mailboxes) {
      add({ address: `${mailbox}@${domain.name.toLowerCase()}`, status: 'pending', ...(recipient.notify ? { notify: recipient.notify } : {}), orcpt });
    }
  }
  return out;
}
