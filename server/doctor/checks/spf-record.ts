/**
 * SPF records (RFC 7208) read without evaluating them: syntax, and the number of
 * DNS lookups the whole tree of includes and redirects costs. RFC 7208 4.6.4 caps
 * an evaluation at 10 lookups (include, a, mx, ptr, exists, redirect) and a
 * receiver answers permerror past it; counting the whole tree rather than one
 * evaluation's path gives the worst case, which is what a mail from an address
 * the record does not list walks through.
 *
 * Contract: `countLookups` never throws; problems in included records (missing,
 * duplicated, syntax, loops) come back as `problems`, each naming the domain.
 */
import net from 'node:net';
import type { DoctorDns } from '../dns-client';

export const SPF_LOOKUP_LIMIT = 10;

export interface SpfTerm {
  qualifier: '+' | '-' | '~' | '?';
  /** mechanism name or modifier name, lower case */
  name: string;
  value: string | undefined;
  modifier: boolean;
  text: string;
}

const MECHANISMS = new Set(['all', 'include', 'a', 'mx', 'ptr', 'ip4', 'ip6', 'exists']);
const LOOKUP_TERMS = new Set(['include', 'a', 'mx', 'ptr', 'exists', 'redirect']);

export function isSpfRecord(text: string): boolean {
  return /^v=spf1( |$)/i.test(text.trim());
}

/** the SPF records among a name's TXT records */
export function spfRecords(txt: readonly string[]): string[] {
  return txt.filter(isSpfRecord);
}

/** terms of a record, or the first syntax error */
export function parseSpf(record: string): { terms: SpfTerm[] } | { error: string } {
  const terms: SpfTerm[] = [];
  for (const text of record.trim().split(/ +/).slice(1)) {
    const modifier = /^([a-z][a-z0-9_.-]*)=(.*)$/i.exec(text);
    if (modifier) {
      terms.push({ qualifier: '+', name: modifier[1]!.toLowerCase(), value: modifier[2]!, modifier: true, text });
      continue;
    }
    const mechanism = /^([+\-~?]?)([a-z0-9]+)(?:([:/])(.*))?$/i.exec(text);
    const name = mechanism?.[2]?.toLowerCase();
    if (!mechanism || !name || !MECHANISMS.has(name)) return { error: `unknown term "${text}"` };
    const value = mechanism[3] === ':' ? mechanism[4] : mechanism[3] === '/' ? `/${mechanism[4] ?? ''}` : undefined;
    const problem = termProblem(name, value);
    if (problem) return { error: `"${text}": ${problem}` };
    terms.push({ qualifier: (mechanism[1] || '+') as SpfTerm['qualifier'], name, value, modifier: false, text });
  }
  const redirects = terms.filter((t) => t.name === 'redirect').length;
  if (redirects > 1) return { error: 'more than one redirect= modifier' };
  return { terms };
}

function termProblem(name: string, value: string | undefined): string | undefined {
  if (name === 'all' && value !== undefined) return 'all takes no value';
  if ((name === 'include' || name === 'exists') && !value) return `${name} needs a domain`;
  if (name === 'ip4' || name === 'ip6') {
    const [address = '', bits, ...rest] = (value ?? '').split('/');
    const family = name === 'ip4' ? 4 : 6;
    if (net.isIP(address) !== family) return `expected an IPv${family} address`;
    if (rest.length > 0 || (bits !== undefined && !(/^[0-9]+$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128)))) return 'bad prefix length';
  }
  return undefined;
}

export interface LookupCount {
  total: number;
  /** "include:_spf.example.net = 4" for each term that costs lookups, at the top level */
  breakdown: string[];
  problems: string[];
}

/** lookups of the record of `domain` whose text is `record`, following includes and redirect */
export async function countLookups(dns: DoctorDns, domain: string, record: string): Promise<LookupCount> {
  const problems: string[] = [];
  const breakdown: string[] = [];
  const total = await countRecord(dns, domain, record, [domain.toLowerCase()], problems, breakdown);
  return { total, breakdown, problems };
}

async function countRecord(dns: DoctorDns, domain: string, record: string, path: string[], problems: string[], breakdown: string[] | undefined): Promise<number> {
  const parsed = parseSpf(record);
  if ('error' in parsed) {
    problems.push(`SPF record of ${domain}: ${parsed.error}`);
    return 0;
  }
  const hasAll = parsed.terms.some((t) => t.name === 'all');
  let total = 0;
  for (const term of parsed.terms) {
    if (!LOOKUP_TERMS.has(term.name) || (term.name === 'redirect' && hasAll)) continue;
    let cost = 1;
    if ((term.name === 'include' || term.name === 'redirect') && term.value && !term.value.includes('%')) {
      cost += await countTarget(dns, term.value.toLowerCase().replace(/\.$/, ''), path, problems);
    }
    total += cost;
    breakdown?.push(`${term.text} = ${cost}`);
  }
  return total;
}

async function countTarget(dns: DoctorDns, target: string, path: string[], problems: string[]): Promise<number> {
  if (path.includes(target)) {
    problems.push(`SPF include loop: ${[...path, target].join(' -> ')}`);
    return 0;
  }
  if (path.length > SPF_LOOKUP_LIMIT) return 0;
  const txt = await dns.txt(target);
  if (txt.kind === 'error') {
    problems.push(txt.message);
    return 0;
  }
  const records = txt.kind === 'records' ? spfRecords(txt.records) : [];
  if (records.length !== 1) {
    problems.push(`${target} (included from ${path[path.length - 1]}) has ${records.length === 0 ? 'no SPF record' : `${records.length} SPF records`}: receivers answer permerror`);
    return 0;
  }
  return countRecord(dns, target, records[0]!, [...path, target], problems, undefined);
}
