/**
 * DNS blocklists (DNSBL) for the clients of mx listeners, like Postfix's
 * `reject_rbl_client`: the client's address, reversed (octets, or nibbles for
 * IPv6), is looked up as an A record under each zone of `inbound.dnsbl`, and an
 * answer in 127.0.0.0/8 means "listed" (or, for a zone given with `codes`, one of
 * those answers). The listener refuses a listed client's recipients with 554.
 *
 * Contract:
 * - `check(ip)` never throws. A list that cannot be asked (a timeout, SERVFAIL)
 *   or that answers with an error code does not list anyone: the client is let
 *   through and the reason is logged (`"event":"dnsbl-error"`). Error codes are
 *   answers in 127.255.255.0/24 (Spamhaus: 252 a malformed query, 254 a public
 *   or shared resolver asked, 255 too many queries) and answers outside
 *   127.0.0.0/8 (a resolver that rewrites NXDOMAIN).
 * - Zones are asked side by side; the first listing zone in config order names
 *   the refusal, with its TXT record (the list's reason, often a link) when it
 *   has one.
 * - Verdicts are kept per address for CACHE_MS (at most CACHE_ENTRIES addresses),
 *   and a client's connections share one lookup in flight. A "not listed" that a
 *   list could not vouch for (it could not be asked) is kept only UNSURE_CACHE_MS:
 *   long enough not to ask a failing list again for every connection, short
 *   enough that a listed client is refused soon after the list is back.
 */
import ipaddr from 'ipaddr.js';
import { boundedResolver } from '../delivery/mx-resolver';
import type { Logger } from '../log/logger';

export interface DnsblZone {
  zone: string;
  /** the answers that mean "listed"; absent: any answer in 127.0.0.0/8 but the error codes */
  codes?: readonly string[];
}

/** `address` is the client's address as the lists know it (an IPv4-mapped IPv6 address as plain IPv4) */
export type DnsblVerdict = { listed: false } | { listed: true; address: string; zone: string; codes: string[]; text?: string };

/** The zones of `inbound.dnsbl`, where a zone alone stands for `{ zone }`. */
export function configuredZones(entries: readonly (string | DnsblZone)[]): DnsblZone[] {
  return entries.map((entry) => (typeof entry === 'string' ? { zone: entry } : entry));
}

/** the DNS lookups a DnsblChecker makes (node:dns's Resolver has them) */
export interface DnsblResolver {
  resolve4(name: string): Promise<string[]>;
  resolveTxt(name: string): Promise<string[][]>;
}

/** What one zone said: listed (with the codes), nothing, or no usable answer (why). */
export type BlocklistAnswer = { kind: 'listed'; codes: string[] } | { kind: 'clean' } | { kind: 'unknown'; reason: string };

const REFUSAL_MEANINGS: Record<string, string> = {
  '127.255.255.252': 'the list says the query was malformed',
  '127.255.255.254': 'the list refuses queries from public or shared resolvers',
  '127.255.255.255': 'the list refuses this resolver for sending too many queries',
};

export const CACHE_MS = 5 * 60_000;
export const UNSURE_CACHE_MS = 30_000;
export const CACHE_ENTRIES = 10_000;
/** the most of a list's TXT reason put in an SMTP reply */
const MAX_REASON_CHARS = 200;
const DEFAULT_TIMEOUT_MS = 5_000;

/** The query name of `ip` under `zone`: 7.2.0.192.zone, or 32 nibbles for IPv6 (IPv4-mapped IPv6 as IPv4). */
export function blocklistQueryName(ip: string, zone: string): string {
  const address = ipaddr.process(ip);
  const bytes = address.toByteArray();
  if (address.kind() === 'ipv4') return `${bytes.reverse().join('.')}.${zone}`;
  const nibbles = bytes.flatMap((byte) => [byte >> 4, byte & 15]).map((n) => n.toString(16));
  return `${nibbles.reverse().join('.')}.${zone}`;
}

/** Reads the A records a zone answered for an address (see the module comment for the error codes). */
export function classifyBlocklistAnswer(codes: readonly string[], wanted?: readonly string[]): BlocklistAnswer {
  if (codes.length === 0) return { kind: 'clean' };
  const refusal = codes.find((code) => code.startsWith('127.255.255.'));
  if (refusal) return { kind: 'unknown', reason: `the list answered ${refusal}: ${REFUSAL_MEANINGS[refusal] ?? 'an error code, not a listing'}` };
  const outside = codes.find((code) => !ipaddr.IPv4.isValidFourPartDecimal(code) || ipaddr.IPv4.parse(code).range() !== 'loopback');
  if (outside) return { kind: 'unknown', reason: `the answer ${outside} is not a blocklist code (a resolver that rewrites NXDOMAIN?)` };
  const listing = wanted ? codes.filter((code) => wanted.includes(code)) : [...codes];
  return listing.length > 0 ? { kind: 'listed', codes: listing } : { kind: 'clean' };
}

/** A resolver for blocklist queries: the relay's dns.servers (empty: the system's), `timeoutMs` per query, retries included. */
export function blocklistResolver(servers: readonly string[], timeoutMs = DEFAULT_TIMEOUT_MS): DnsblResolver {
  return boundedResolver(servers, timeoutMs);
}

export interface DnsblCheckerOptions {
  /** hears each zone's answer to each lookup (not the ones answered from memory), e.g. for metrics */
  onAnswer?: (zone: string, answer: BlocklistAnswer['kind']) => void;
  now?: () => number;
}

export class DnsblChecker {
  /** `keepMs` is CACHE_MS until the lookup turns out unsure */
  private readonly verdicts = new Map<string, { at: number; keepMs: number; verdict: Promise<DnsblVerdict> }>();
  private readonly now: () => number;

  constructor(
    private readonly zones: readonly DnsblZone[],
    private readonly resolver: DnsblResolver,
    private readonly logger: Logger,
    private readonly options: DnsblCheckerOptions = {},
  ) {
    this.now = options.now ?? Date.now;
  }

  check(ip: string): Promise<DnsblVerdict> {
    const now = this.now();
    const known = this.verdicts.get(ip);
    if (known && now - known.at < known.keepMs && now >= known.at) return known.verdict;
    if (known) this.verdicts.delete(ip);
    if (this.verdicts.size >= CACHE_ENTRIES) this.verdicts.delete(this.verdicts.keys().next().value!);
    const entry = { at: now, keepMs: CACHE_MS, verdict: Promise.resolve<DnsblVerdict>({ listed: false }) };
    entry.verdict = this.lookUp(ip, () => (entry.keepMs = UNSURE_CACHE_MS));
    this.verdicts.set(ip, entry);
    return entry.verdict;
  }

  /** `unsure` is called when no list lists `ip` but one of them could not be asked. */
  private async lookUp(ip: string, unsure: () => void): Promise<DnsblVerdict> {
    if (!ipaddr.isValid(ip)) return { listed: false };
    const answers = await Promise.all(this.zones.map((zone) => this.ask(ip, zone)));
    const index = answers.findIndex((answer) => answer.kind === 'listed');
    if (index < 0) {
      if (answers.some((answer) => answer.kind === 'unknown')) unsure();
      return { listed: false };
    }
    const zone = this.zones[index]!.zone;
    const codes = (answers[index] as Extract<BlocklistAnswer, { kind: 'listed' }>).codes;
    const text = await this.reason(blocklistQueryName(ip, zone));
    return { listed: true, address: ipaddr.process(ip).toString(), zone, codes, ...(text ? { text } : {}) };
  }

  private async ask(ip: string, zone: DnsblZone): Promise<BlocklistAnswer> {
    const name = blocklistQueryName(ip, zone.zone);
    let answer: BlocklistAnswer;
    try {
      answer = classifyBlocklistAnswer(await this.resolver.resolve4(name), zone.codes);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      answer = code === 'ENOTFOUND' || code === 'ENODATA' ? { kind: 'clean' } : { kind: 'unknown', reason: `the lookup of ${name} failed: ${code ?? String(err)}` };
    }
    this.options.onAnswer?.(zone.zone, answer.kind);
    if (answer.kind === 'unknown') {
      this.logger.warn({ event: 'dnsbl-error', client: ip, zone: zone.zone, reason: answer.reason }, `DNS blocklist ${zone.zone} could not be used for ${ip}, which is let through: ${answer.reason}`);
    }
    return answer;
  }

  /** The list's TXT reason for a listing, as one printable line (or undefined). */
  private async reason(name: string): Promise<string | undefined> {
    try {
      const records = await this.resolver.resolveTxt(name);
      const text = records
        .map((strings) => strings.join(''))
        .join(' ')
        .replace(/[^\x20-\x7e]+/g, ' ')
        .trim();
      return text ? text.slice(0, MAX_REASON_CHARS) : undefined;
    } catch {
      return undefined;
    }
  }
}
