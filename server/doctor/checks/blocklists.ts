/**
 * DNS blocklists: each of the server's addresses on `doctor.ipBlocklists`
 * (reversed octets or nibbles + zone) and the mail domain on
 * `doctor.domainBlocklists`. Answers are read as the relay's own inbound
 * blocklist check reads them (classifyBlocklistAnswer): error codes and
 * rewritten NXDOMAINs mean "cannot tell", never "listed".
 */
import { blocklistQueryName, classifyBlocklistAnswer, configuredZones } from '../../inbound/dnsbl';
import type { Check, DoctorContext } from '../types';

type Verdict = { kind: 'clean' } | { kind: 'listed'; line: string } | { kind: 'unknown'; line: string };

export const blocklistCheck: Check = {
  id: 'blocklists',
  title: 'addresses and domain not on DNS blocklists',
  async run(context) {
    const { ips, domain, config } = context;
    const queries = [
      ...ips.flatMap((ip) => config.doctor.ipBlocklists.map((zone) => ({ subject: ip, zone, name: blocklistQueryName(ip, zone) }))),
      ...config.doctor.domainBlocklists.map((zone) => ({ subject: domain, zone, name: `${domain}.${zone}` })),
    ];
    if (queries.length === 0) return { status: 'warn', detail: 'no blocklists configured (doctor.ipBlocklists, doctor.domainBlocklists)', fix: 'list zones such as zen.spamhaus.org in doctor.ipBlocklists' };
    const verdicts = await Promise.all(queries.map((q) => lookup(context, q)));
    const listed = verdicts.filter((v): v is Extract<Verdict, { kind: 'listed' }> => v.kind === 'listed').map((v) => v.line);
    const unknown = verdicts.filter((v): v is Extract<Verdict, { kind: 'unknown' }> => v.kind === 'unknown').map((v) => v.line);
    const cleanCount = verdicts.filter((v) => v.kind === 'clean').length;
    const detail = [...listed, ...unknown, `not listed in ${cleanCount} of ${queries.length} queries (${queries.length === 1 ? '' : 'zones: '}${[...new Set(queries.map((q) => q.zone))].join(', ')})`].join('\n');
    if (listed.length) {
      return {
        status: 'fail',
        detail,
        fix: 'find out why at the list\'s web site (the reason above often links it), stop the cause (a compromised account, an open relay, a form that sends mail), then request removal there; Spamhaus: https://check.spamhaus.org/',
      };
    }
    if (unknown.length) {
      return {
        status: 'warn',
        detail,
        fix: 'query the lists through a resolver of your own (--dns-server, e.g. unbound on the server), not a public or cloud-shared one; for Spamhaus, a free Data Query Service key gives a zone such as <key>.zen.dq.spamhaus.net for doctor.ipBlocklists',
      };
    }
    return { status: 'pass', detail };
  },
};

async function lookup({ dns }: DoctorContext, query: { subject: string; zone: string; name: string }): Promise<Verdict> {
  const answer = await dns.a(query.name);
  if (answer.kind === 'none') return { kind: 'clean' };
  if (answer.kind === 'error') return { kind: 'unknown', line: `${query.subject} on ${query.zone}: cannot tell (${answer.message})` };
  const verdict = classifyBlocklistAnswer(answer.records);
  if (verdict.kind === 'clean') return verdict;
  if (verdict.kind === 'unknown') return { kind: 'unknown', line: `${query.subject} on ${query.zone}: cannot tell, ${verdict.reason}` };
  const reason = await dns.txt(query.name);
  const text = reason.kind === 'records' ? `: ${reason.records.join(' ')}` : '';
  return { kind: 'listed', line: `${query.subject} is LISTED on ${query.zone} (${verdict.codes.join(', ')})${text}` };
}

/**
 * The lists of `inbound.dnsbl`, asked about their test entries (RFC 5782 5):
 * an IPv4 list lists 127.0.0.2 and never 127.0.0.1. A list that lists
 * 127.0.0.1 lists everyone (as a defunct list that answers every query does):
 * the relay would refuse all mail from the Internet, so that fails. A list that
 * refuses this resolver or does not list its test entry warns: the relay lets
 * every client through it.
 */
export const inboundBlocklistCheck: Check = {
  id: 'inbound-blocklists',
  title: 'inbound blocklists answer',
  async run({ config, dns }) {
    const zones = configuredZones(config.inbound.dnsbl);
    if (zones.length === 0) return { status: 'pass', detail: 'no inbound blocklists configured (inbound.dnsbl)' };
    const verdicts = await Promise.all(zones.map((zone) => testEntries(dns, zone.zone, zone.codes)));
    const detail = verdicts.map((v) => v.line).join('\n');
    if (verdicts.some((v) => v.kind === 'fail')) {
      return { status: 'fail', detail, fix: 'remove the list that lists everyone from inbound.dnsbl (it is broken or defunct), then `ownrelay reload`' };
    }
    if (verdicts.some((v) => v.kind === 'warn')) {
      return {
        status: 'warn',
        detail,
        fix: 'ask the lists through a resolver of your own (dns.servers: [127.0.0.1] with unbound on the server), not a public or cloud-shared one; check the zone names for typos',
      };
    }
    return { status: 'pass', detail };
  },
};

async function testEntries(dns: DoctorContext['dns'], zone: string, codes?: readonly string[]): Promise<{ kind: 'pass' | 'warn' | 'fail'; line: string }> {
  const everyone = await dns.a(blocklistQueryName('127.0.0.1', zone));
  if (everyone.kind === 'records' && classifyBlocklistAnswer(everyone.records).kind === 'listed') {
    return { kind: 'fail', line: `${zone} lists 127.0.0.1 (${everyone.records.join(', ')}), which no list may: it would refuse every client` };
  }
  const test = await dns.a(blocklistQueryName('127.0.0.2', zone));
  if (test.kind === 'none') return { kind: 'warn', line: `${zone} does not list its test address 127.0.0.2: not a blocklist, or a typo?` };
  if (test.kind === 'error') return { kind: 'warn', line: `${zone}: cannot tell (${test.message})` };
  const answer = classifyBlocklistAnswer(test.records, codes);
  if (answer.kind === 'unknown') return { kind: 'warn', line: `${zone}: cannot tell, ${answer.reason}` };
  if (answer.kind === 'clean') return { kind: 'warn', line: `${zone} answers ${test.records.join(', ')} for its test address 127.0.0.2, none of the codes configured for it` };
  return { kind: 'pass', line: `${zone} answers its test address 127.0.0.2 (${answer.codes.join(', ')}) and not 127.0.0.1` };
}
