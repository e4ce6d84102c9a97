/**
 * The domain's published policies: DMARC (RFC 7489) present, valid and
 * enforcing, and TLS-RPT (RFC 8460) present, so failures of TLS to the server
 * get reported to someone.
 */
import { mailtoAddress, renderDmarc } from '../../../infra/render/dns-records';
import type { RelayConfig } from '../../config/schema';
import { resolveLocalMailbox } from '../../delivery/local-mailboxes';
import { domainOf, localPartOf } from '../../queue/envelope';
import { publish } from '../fixes';
import type { Check } from '../types';
import { parseTags } from './dkim';

const REPORT_URI = /^(mailto:[^\s,@]+@[^\s,!]+(![0-9]+[kmgt]?)?|https:\/\/[^\s,]+)$/i;

export const dmarcCheck: Check = {
  id: 'dmarc',
  title: 'DMARC policy present and valid',
  async run({ domain, dns, config }) {
    const recommended = renderDmarc({ policy: 'quarantine', rua: `mailto:postmaster@${domain}` });
    const fix = publish(`publish the DMARC record of ${domain}`, [{ name: `_dmarc.${domain}`, type: 'TXT', values: [recommended] }]);
    // a subdomain without its own record inherits its parent's (RFC 7489 6.6.3)
    const names = [domain];
    for (let labels = domain.split('.'); labels.length > 2; labels = labels.slice(1)) names.push(labels.slice(1).join('.'));
    for (const owner of names) {
      const txt = await dns.txt(`_dmarc.${owner}`);
      if (txt.kind === 'error') return { status: 'fail', detail: txt.message, fix: 'make sure the resolver answers; then run the doctor again' };
      const records = (txt.kind === 'records' ? txt.records : []).filter((r) => /^v\s*=\s*DMARC1\s*(;|$)/i.test(r));
      if (records.length === 0) continue;
      const where = owner === domain ? `_dmarc.${domain}` : `_dmarc.${owner} (inherited by ${domain})`;
      if (records.length > 1) return { status: 'fail', detail: `${where} has ${records.length} DMARC records: receivers ignore them all`, fix: `${fix}\nand delete the others` };
      const record = records[0]!;
      const problem = dmarcProblem(record);
      if (problem) return { status: 'fail', detail: `${where}: ${record}\ninvalid: ${problem}`, fix };
      const policy = parseTags(record).get('p')!.toLowerCase();
      const refused = refusedReportAddresses(parseTags(record).get('rua'), config);
      if (policy === 'none') {
        return { status: 'warn', detail: [`${where}: ${record}`, `p=none only monitors: forged mail from ${domain} is still delivered`, ...refused.lines].join('\n'), fix: [`once the reports show only your own servers, publish p=quarantine:\n${fix}`, ...refused.fixes].join('\n') };
      }
      if (refused.lines.length > 0) return { status: 'warn', detail: [`${where}: ${record}`, ...refused.lines].join('\n'), fix: refused.fixes.join('\n') };
      return { status: 'pass', detail: `${where}: ${record}` };
    }
    return { status: 'fail', detail: `no DMARC record at _dmarc.${domain}: Gmail and Yahoo require one from bulk senders, and anyone can send mail as ${domain} unchecked`, fix };
  },
};

export function dmarcProblem(record: string): string | undefined {
  const tags = parseTags(record);
  const policy = tags.get('p')?.toLowerCase();
  if (policy === undefined) return 'no p= tag (the policy)';
  if (!['none', 'quarantine', 'reject'].includes(policy)) return `p=${policy} is not none, quarantine or reject`;
  const sp = tags.get('sp')?.toLowerCase();
  if (sp !== undefined && !['none', 'quarantine', 'reject'].includes(sp)) return `sp=${sp} is not none, quarantine or reject`;
  const pct = tags.get('pct');
  if (pct !== undefined && !(/^[0-9]{1,3}$/.test(pct) && Number(pct) <= 100)) return `pct=${pct} is not a number from 0 to 100`;
  for (const tag of ['adkim', 'aspf']) {
    const value = tags.get(tag)?.toLowerCase();
    if (value !== undefined && value !== 'r' && value !== 's') return `${tag}=${value} is not r or s`;
  }
  for (const tag of ['rua', 'ruf']) {
    const value = tags.get(tag);
    if (value === undefined) continue;
    const bad = value.split(',').map((u) => u.trim()).find((u) => !REPORT_URI.test(u));
    if (bad !== undefined) return `${tag}: "${bad}" is not a mailto: or https: URI`;
  }
  return undefined;
}

export const tlsRptCheck: Check = {
  id: 'tls-rpt',
  title: 'TLS-RPT reporting address published',
  async run({ domain, dns, config }) {
    const name = `_smtp._tls.${domain}`;
    const fix = publish(`publish ${name}`, [{ name, type: 'TXT', values: [`v=TLSRPTv1; rua=mailto:postmaster@${domain}`] }]);
    const txt = await dns.txt(name);
    if (txt.kind === 'error') return { status: 'fail', detail: txt.message, fix: 'make sure the resolver answers; then run the doctor again' };
    const records = (txt.kind === 'records' ? txt.records : []).filter((r) => /^v=TLSRPTv1\s*(;|$)/i.test(r));
    if (records.length === 0) return { status: 'fail', detail: `no TLS-RPT record at ${name}: nobody hears when senders fail to reach the server over TLS`, fix };
    if (records.length > 1) return { status: 'fail', detail: `${name} has ${records.length} TLS-RPT records: senders ignore them all`, fix: `${fix}\nand delete the others` };
    const rua = parseTags(records[0]!).get('rua');
    const bad = rua?.split(',').map((u) => u.trim()).find((u) => !REPORT_URI.test(u));
    if (rua === undefined || bad !== undefined) return { status: 'fail', detail: `${name}: ${records[0]}\ninvalid: ${rua === undefined ? 'no rua= tag' : `"${bad}" is not a mailto: or https: URI`}`, fix };
    const refused = refusedReportAddresses(rua, config);
    if (refused.lines.length > 0) return { status: 'warn', detail: [`${name}: ${records[0]}`, ...refused.lines].join('\n'), fix: refused.fixes.join('\n') };
    return { status: 'pass', detail: `${name}: ${records[0]}` };
  },
};

/**
 * The mailto: report addresses of a rua tag that are at one of this server's
 * domains and that the relay would refuse at RCPT (an unknown mailbox): the
 * reports would bounce back to their senders instead of arriving.
 */
function refusedReportAddresses(rua: string | undefined, config: RelayConfig): { lines: string[]; fixes: string[] } {
  const lines: string[] = [];
  const fixes: string[] = [];
  for (const uri of rua?.split(',').map((u) => u.trim()) ?? []) {
    const address = mailtoAddress(uri);
    if (address === undefined || !address.includes('@')) continue;
    const entry = config.domains.find((d) => d.name.toLowerCase() === domainOf(address));
    if (!entry || (entry.delivery !== 'maildir' && entry.mailboxes === undefined)) continue;
    const resolved = resolveLocalMailbox(entry, localPartOf(address));
    if (!('reason' in resolved)) continue;
    lines.push(`reports to ${address} would be refused by this server (${resolved.reason})`);
    fixes.push(`accept them: add the mailbox to ${entry.name} in domains (mailboxes, or an alias that forwards it)`);
  }
  return { lines, fixes };
}
