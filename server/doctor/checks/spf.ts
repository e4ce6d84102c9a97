/**
 * SPF: the domain has exactly one valid SPF record, it permits every address of
 * the server (evaluated by mailauth's RFC 7208 implementation, as receivers do),
 * it ends in a policy that refuses others, and its tree stays within 10 lookups.
 */
import { spf as evaluateSpf } from 'mailauth/lib/spf';
import { renderSpf } from '../../../infra/render/dns-records';
import { ipv4s, ipv6s, publish } from '../fixes';
import type { Check, CheckResult, DoctorContext } from '../types';
import { SPF_LOOKUP_LIMIT, countLookups, parseSpf, spfRecords } from './spf-record';

export const spfCheck: Check = {
  id: 'spf',
  title: 'SPF permits the server and stays within 10 lookups',
  async run(context) {
    const { domain, ips, dns } = context;
    const serverOnly = renderSpf(ipv4s(ips), ipv6s(ips));
    const txt = await dns.txt(domain);
    if (txt.kind === 'error') return { status: 'fail', detail: txt.message, fix: 'make sure the resolver answers; then run the doctor again' };
    const records = spfRecords(txt.kind === 'records' ? txt.records : []);
    if (records.length === 0) return { status: 'fail', detail: `${domain} has no SPF record`, fix: publish(`publish the SPF record of ${domain}`, [{ name: domain, type: 'TXT', values: [serverOnly] }]) };
    if (records.length > 1) {
      return {
        status: 'fail',
        detail: `${domain} has ${records.length} SPF records (receivers answer permerror):\n${records.map((r) => `  ${r}`).join('\n')}`,
        fix: 'merge them into one TXT record that starts with v=spf1 and lists every sender, and delete the others',
      };
    }
    const record = records[0]!;
    const parsed = parseSpf(record);
    if ('error' in parsed) {
      return { status: 'fail', detail: `SPF record of ${domain} is invalid: ${parsed.error}\n  ${record}`, fix: publish(`replace it; for this server alone`, [{ name: domain, type: 'TXT', values: [serverOnly] }]) };
    }
    const count = await countLookups(dns, domain, record);
    const permitted = await Promise.all(ips.map((ip) => permits(context, ip)));
    const notPermitted = ips.filter((_, i) => permitted[i] !== 'pass');
    const facts = [`${domain}: ${record}`, `DNS lookups: ${count.total} of ${SPF_LOOKUP_LIMIT}${count.breakdown.length ? ` (${count.breakdown.join(', ')})` : ''}`];
    ips.forEach((ip, i) => facts.push(`${ip}: ${permitted[i]}`));

    if (count.total > SPF_LOOKUP_LIMIT) {
      return {
        status: 'fail',
        detail: [`SPF of ${domain} needs ${count.total} DNS lookups, more than the limit of ${SPF_LOOKUP_LIMIT}: receivers answer permerror`, ...facts].join('\n'),
        fix: `remove include:, a, mx, ptr and exists terms that are not needed, or replace them by the ip4:/ip6: ranges they stand for; this server needs none:\n${publish('  the record for this server alone', [{ name: domain, type: 'TXT', values: [serverOnly] }])}`,
      };
    }
    if (count.problems.length) return { status: 'fail', detail: [...count.problems, ...facts].join('\n'), fix: 'fix or remove the include:/redirect= terms named above' };
    if (notPermitted.length) {
      return {
        status: 'fail',
        detail: [`SPF of ${domain} does not permit ${notPermitted.join(', ')}`, ...facts].join('\n'),
        fix: publish(`add the server's addresses to the record`, [{ name: domain, type: 'TXT', values: [withAddresses(record, notPermitted)] }]),
      };
    }
    return endingResult(domain, parsed.terms, facts, serverOnly);
  },
};

/** pass, fail, softfail ... for mail from postmaster@domain sent by `ip` */
async function permits({ domain, hostname, dns }: DoctorContext, ip: string): Promise<string> {
  const result = await evaluateSpf({ sender: `postmaster@${domain}`, ip, helo: hostname, mta: hostname, resolver: dns.raw as never });
  return result.status.result;
}

function endingResult(domain: string, terms: { name: string; qualifier: string; text: string }[], facts: string[], serverOnly: string): Omit<CheckResult, 'id' | 'title'> {
  const all = terms.find((t) => t.name === 'all');
  const redirect = terms.some((t) => t.name === 'redirect');
  if (all?.qualifier === '+') {
    return { status: 'fail', detail: [`SPF of ${domain} ends in +all: it permits every host on the Internet`, ...facts].join('\n'), fix: publish('end it in -all', [{ name: domain, type: 'TXT', values: [serverOnly] }]) };
  }
  if ((!all && !redirect) || all?.qualifier === '?') {
    return { status: 'warn', detail: [`SPF of ${domain} does not refuse other hosts (no -all or ~all)`, ...facts].join('\n'), fix: 'end the record in -all (or ~all while you find every sender)' };
  }
  return { status: 'pass', detail: facts.join('\n') };
}

/** the record with ip4:/ip6: terms for `ips` right after v=spf1 */
function withAddresses(record: string, ips: string[]): string {
  const [version, ...rest] = record.trim().split(/ +/);
  return [version, ...ips.map((ip) => (ip.includes(':') ? `ip6:${ip}` : `ip4:${ip}`)), ...rest].join(' ');
}
