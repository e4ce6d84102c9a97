/**
 * The RCPT TO checks that wait on the network, after the relay policy accepted
 * a recipient: the client's DNS blocklist verdict (started at connect) and, for
 * forward domains with verifyRecipients, the next hop's answer. Each takes the
 * policy's acceptance and returns it, or the refusal that replaces it.
 */
import { isRoleMailbox } from '../delivery/local-mailboxes';
import type { RecipientVerifier } from '../delivery/recipient-verifier';
import type { DnsblVerdict } from '../inbound/dnsbl';
import { domainOf } from '../queue/envelope';
import type { ClientContext, RelayPolicy } from '../stages/policy';
import { accept, refuse, type Verdict } from '../stages/verdict';

/**
 * A client on a DNS blocklist gets 554 for every recipient but postmaster and
 * abuse (so a listed sender can still reach a human), in Postfix's words. The
 * refusal comes at RCPT TO, as Postfix's does, so the log names the sender and
 * the recipient. `blocklisted` is undefined for clients that are not checked.
 */
export async function blocklistVerdict(blocklisted: Promise<DnsblVerdict> | undefined, recipient: string, accepted: Verdict): Promise<Verdict> {
  if (!blocklisted || isRoleMailbox(recipient)) return accepted;
  const verdict = await blocklisted;
  if (!verdict.listed) return accepted;
  const ip = verdict.address;
  return refuse('recipient', 554, '5.7.1', `Service unavailable; Client host [${ip}] blocked using ${verdict.zone}${verdict.text ? `; ${verdict.text}` : ''}`, `client ${ip} is listed on ${verdict.zone} (${verdict.codes.join(', ')})`);
}

/**
 * A stranger's recipient at a forward domain with verifyRecipients must be one
 * its next hop takes (see recipient-verifier.ts); postmaster and abuse always are.
 * The next hop's own reply is logged, not shown to the client.
 */
export async function nextHopVerdict(policy: RelayPolicy, verifier: RecipientVerifier | undefined, client: ClientContext, recipient: string, accepted: Verdict): Promise<Verdict> {
  const domain = policy.localDomain(domainOf(recipient));
  if (!verifier || !domain?.verifyRecipients || !domain.forwardTo || policy.mayRelay(client)) return accepted;
  if (isRoleMailbox(recipient)) return accepted;
  const hop = domain.forwardTo.host;
  const verification = await verifier.verify(recipient, domain.forwardTo);
  switch (verification.result) {
    case 'deliverable':
      return accept('recipient', `forward domain ${domain.name}, verified at ${hop}`);
    case 'undeliverable':
      return refuse('recipient', 550, '5.1.1', `<${recipient}>: Recipient address rejected: undeliverable address`, `${hop} refused <${recipient}>: ${verification.reply}`);
    case 'unknown':
      return refuse('recipient', 450, '4.1.1', `<${recipient}>: Recipient address rejected: unverified address, try again later`, `could not verify <${recipient}> at ${hop}: ${verification.reason}`);
  }
}
