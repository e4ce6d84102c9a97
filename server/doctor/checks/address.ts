/**
 * The server's names: the domain's MX points to the host name, the host name's
 * A/AAAA records are the server's addresses, and each address's PTR is the host
 * name and resolves back to that address (forward-confirmed reverse DNS, which
 * large receivers require before they accept mail).
 */
import ipaddr from 'ipaddr.js';
import { DEFAULT_TTL_SECONDS, MX_PREFERENCE } from '../../../infra/render/dns-records';
import { ipv4s, ipv6s, publish } from '../fixes';
import type { Check, DoctorContext } from '../types';

export const mxCheck: Check = {
  id: 'mx',
  title: 'MX points to this server',
  async run({ domain, hostname, dns }) {
    const fix = publish(`publish the MX record of ${domain}`, [{ name: domain, type: 'MX', values: [`${MX_PREFERENCE} ${hostname}`] }]);
    const mx = await dns.mx(domain);
    if (mx.kind === 'error') return { status: 'fail', detail: mx.message, fix: 'make sure the resolver answers; then run the doctor again' };
    if (mx.kind === 'none') return { status: 'fail', detail: `${domain} has no MX record${mx.nxdomain ? ' (the domain does not exist in DNS)' : ''}`, fix };
    const shown = mx.records.map((r) => `${r.priority} ${r.exchange || '.'}`).join(', ');
    if (!mx.records.some((r) => r.exchange === hostname)) {
      return { status: 'fail', detail: `MX of ${domain} is ${shown}; ${hostname} is not among them`, fix };
    }
    return { status: 'pass', detail: `MX of ${domain}: ${shown}` };
  },
};

export const addressCheck: Check = {
  id: 'address',
  title: 'A/AAAA records of the host name are the server\'s addresses',
  async run({ hostname, ips, dns }) {
    const [v4, v6] = await Promise.all([dns.a(hostname), dns.aaaa(hostname)]);
    for (const lookup of [v4, v6]) if (lookup.kind === 'error') return { status: 'fail', detail: lookup.message, fix: 'make sure the resolver answers; then run the doctor again' };
    const published = [...(v4.kind === 'records' ? v4.records : []), ...(v6.kind === 'records' ? v6.records : [])];
    const missing = ips.filter((ip) => !published.some((p) => sameAddress(p, ip)));
    const extra = published.filter((p) => !ips.some((ip) => sameAddress(p, ip)));
    const fix = publish(`publish the address records of ${hostname}${extra.length ? ` (and remove ${extra.join(', ')})` : ''}`, [
      { name: hostname, type: 'A', values: ipv4s(ips) },
      ...(ipv6s(ips).length ? [{ name: hostname, type: 'AAAA' as const, values: ipv6s(ips) }] : []),
    ]);
    const shown = published.length ? published.join(', ') : 'nothing';
    if (missing.length) return { status: 'fail', detail: `${hostname} resolves to ${shown}; missing: ${missing.join(', ')}`, fix };
    if (extra.length) return { status: 'warn', detail: `${hostname} resolves to ${shown}; ${extra.join(', ')} ${extra.length > 1 ? 'are' : 'is'} not this server`, fix };
    return { status: 'pass', detail: `${hostname} resolves to ${shown}` };
  },
};

export const ptrCheck: Check = {
  id: 'ptr',
  title: 'reverse DNS (PTR) is the host name, forward-confirmed',
  async run(context) {
    const problems: string[] = [];
    const facts: string[] = [];
    for (const ip of context.ips) {
      const problem = await ptrProblem(context, ip);
      if (problem) problems.push(problem);
      else facts.push(`${ip} -> ${context.hostname} -> ${ip}`);
    }
    if (problems.length === 0) return { status: 'pass', detail: facts.join('\n') };
    const fix = [
      `set the reverse DNS of ${context.ips.join(', ')} to ${context.hostname}; it is set by the owner of the address, not in your zone:`,
      `  on AWS: the Elastic IP's reverse DNS (the infra program sets it; by hand: aws ec2 modify-address-attribute --allocation-id <eipalloc-...> --domain-name ${context.hostname})`,
      ...context.ips.map((ip) => `  ${reverseName(ip)}.\t${DEFAULT_TTL_SECONDS}\tIN\tPTR\t${context.hostname}.`),
      `and make sure ${context.hostname} resolves to the same addresses (see the address check)`,
    ].join('\n');
    return { status: 'fail', detail: [...problems, ...facts].join('\n'), fix };
  },
};

async function ptrProblem({ hostname, dns }: DoctorContext, ip: string): Promise<string | undefined> {
  const ptr = await dns.ptr(ip);
  if (ptr.kind === 'error') return ptr.message;
  if (ptr.kind === 'none') return `${ip} has no PTR record`;
  if (!ptr.records.includes(hostname)) return `PTR of ${ip} is ${ptr.records.join(', ')}, expected ${hostname}`;
  if (ptr.records.length > 1) return `${ip} has several PTR records (${ptr.records.join(', ')}); receivers may pick any, keep only ${hostname}`;
  const forward = await dns.addresses(hostname);
  if (forward.kind === 'error') return forward.message;
  if (forward.kind === 'none' || !forward.records.some((a) => sameAddress(a, ip))) {
    return `PTR of ${ip} is ${hostname}, but ${hostname} does not resolve back to ${ip} (${forward.kind === 'records' ? forward.records.join(', ') : 'no address records'})`;
  }
  return undefined;
}

export function sameAddress(a: string, b: string): boolean {
  try {
    return ipaddr.process(a).toNormalizedString() === ipaddr.process(b).toNormalizedString();
  } catch {
    return false;
  }
}

/** 7.2.0.192.in-addr.arpa / nibbles.ip6.arpa */
export function reverseName(ip: string): string {
  const address = ipaddr.process(ip);
  if (address.kind() === 'ipv4') return `${address.toByteArray().reverse().join('.')}.in-addr.arpa`;
  const hex = address.toByteArray().map((b) => b.toString(16).padStart(2, '0')).join('');
  return `${[...hex].reverse().join('.')}.ip6.arpa`;
}
