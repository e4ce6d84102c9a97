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

/**
 * Where a local part's mail goes: the mailboxes of its domain (one, or several for
 * an alias list such as `team: [alice, bob]`), and the addresses elsewhere an alias
 * forwards it to (`postmaster: ops@example.net`). At least one of the two is non-empty.
 */
export type MailboxResolution = { mailboxes: string[]; forwards: string[] } | { reason: string };

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

/** RFC 5322 dot-atom text of a local part (at most 64 characters) and a DNS domain of at least two labels, ASCII only. */
const FORWARD_ADDRESS = /^(?=[^@]{1,64}@)[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$/i;

/** Whether an alias target is an address elsewhere (`ops@example.net`) rather than a mailbox name. */
export function isForwardAddress(target: string): boolean {
  return FORWARD_ADDRESS.test(target);
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

/** Whether `name` is a mailbox `domain` accepts by itself: any plain name without a mailbox list, else a listed one or a role mailbox. */
export function isListedMailbox(domain: DomainConfig, name: string): boolean {
  const lower = name.toLowerCase();
  return domain.mailboxes === undefined || ROLE_MAILBOXES.includes(lower) || domain.mailboxes.some((m) => m.toLowerCase() === lower);
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

/** An alias's targets: mailbox names lower-cased, addresses with their domain lower-cased. */
function aliasTargets(domain: DomainConfig, base: string): string[] | undefined {
  for (const [from, to] of Object.entries(domain.aliases ?? {})) {
    if (from.toLowerCase() !== base) continue;
    return (typeof to === 'string' ? [to] : to).map((target) => {
      const name = target.trim();
      const at = name.lastIndexOf('@');
      return at < 0 ? name.toLowerCase() : `${name.slice(0, at)}@${name.slice(at + 1).toLowerCase()}`;
    });
  }
  return undefined;
}

/**
 * Resolves `localPart` (as given at RCPT TO, without "@domain") to where its mail
 * goes: mailboxes of `domain` (one, or the members of an alias list) and addresses
 * elsewhere that an alias forwards to. Aliases are applied once (an alias to
 * another alias is not followed), after the "+detail" suffix is dropped. Reasons
 * are fit for an SMTP reply: they never echo unchecked input.
 */
export function resolveLocalMailbox(domain: DomainConfig, localPart: string): MailboxResolution {
  const base = baseLocalPart(localPart);
  if (!isPlainMailboxName(base)) {
    return { reason: 'local part is not a plain mailbox name (letters, digits, ".", "_", "-")' };
  }

  const targets = [...new Set(aliasTargets(domain, base) ?? [base])];
  const mailboxes: string[] = [];
  const forwards: string[] = [];
  for (const target of targets) {
    if (target.includes('@')) {
      if (!isForwardAddress(target)) return { reason: `alias ${base} does not lead to a usable address` };
      forwards.push(target);
      continue;
    }
    if (!isPlainMailboxName(target)) {
      // Only a config error gets here (the schema refuses it): an alias whose target is neither a mailbox nor an address.
      return { reason: `alias ${base} does not lead to a mailbox of ${domain.name}` };
    }
    // an alias of postmaster or abuse may name an unlisted mailbox
    if (!ROLE_MAILBOXES.includes(base) && !isListedMailbox(domain, target)) {
      return { reason: `no mailbox ${base} at ${domain.name}` };
    }
    assertSafePathComponent(target, 'mailbox');
    mailboxes.push(target);
  }
  return { mailboxes, forwards };
}

/** Whether expandAliases replaces a recipient that resolves so: more than one mailbox, or an address elsewhere. */
function isExpansion(resolved: MailboxResolution): resolved is Exclude<MailboxResolution, { reason: string }> {
  return !('reason' in resolved) && (resolved.mailboxes.length > 1 || resolved.forwards.length > 0);
}

/**
 * Whether any maildir domain has an alias that expandAliases rewrites (a list, or
 * an address elsewhere): without one, it has nothing to do and need not be called.
 */
export function hasExpandingAliases(domains: readonly DomainConfig[]): boolean {
  return domains.some((d) => Object.keys(d.aliases ?? {}).some((from) => aliasExpands(d, from)));
}

/** Whether mail for `localPart` at the maildir domain `domain` is expanded by expandAliases (a list, or a forward). */
export function aliasExpands(domain: DomainConfig, localPart: string): boolean {
  return domain.delivery === 'maildir' && isExpansion(resolveLocalMailbox(domain, localPart));
}

/**
 * Recipients as they are queued and before each delivery attempt (as Postfix's
 * cleanup applies virtual aliases): a pending recipient at a maildir domain whose
 * alias is a list or forwards elsewhere becomes one recipient per target, each
 * with its own delivery state (a member's mailbox, `member@domain`, or the address
 * forwarded to), so a target that fails is retried alone and the others are not
 * sent twice. Each keeps the recipient's NOTIFY and names it as ORCPT (its own
 * ORCPT when it gave one), so a DSN says which address the mail was sent to. Other
 * recipients pass unchanged, and an address is never listed twice.
 */
export function expandAliases(domains: readonly DomainConfig[], recipients: RecipientState[]): RecipientState[] {
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
    const domain = recipient.status === 'pending' ? domains.find((d) => d.delivery === 'maildir' && d.name.toLowerCase() === domainName) : undefined;
    const resolved = domain ? resolveLocalMailbox(domain, localPartOf(recipient.address)) : undefined;
    if (!domain || !resolved || !isExpansion(resolved)) {
      add(recipient);
      continue;
    }
    // RFC 6533: an address that is not all ASCII (an IDN domain as given) is of type utf-8
    const orcpt = recipient.orcpt ?? `${/[^\x00-\x7f]/.test(recipient.address) ? 'utf-8' : 'rfc822'};${recipient.address}`;
    const targets = [...resolved.mailboxes.map((mailbox) => `${mailbox}@${domain.name.toLowerCase()}`), ...resolved.forwards];
    for (const address of targets) add({ address, status: 'pending', ...(recipient.notify ? { notify: recipient.notify } : {}), orcpt });
  }
  return out;
}
