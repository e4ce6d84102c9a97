/**
 * IP networks written as CIDR ranges ("10.0.0.0/8", "::1/128") or single addresses.
 * IPv4-mapped IPv6 addresses (::ffff:127.0.0.1, as Node reports IPv4 clients on a
 * dual-stack socket) are matched as the IPv4 address they carry.
 */
import ipaddr from 'ipaddr.js';

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];

function parseRange(text: string): Range {
  if (text.includes('/')) return ipaddr.parseCIDR(text);
  const address = ipaddr.parse(text);
  return [address, address.kind() === 'ipv4' ? 32 : 128];
}

export function isValidCidr(text: string): boolean {
  try {
    parseRange(text);
    return true;
  } catch {
    return false;
  }
}

/** Parses an address, unwrapping IPv4-mapped IPv6; returns undefined when it is not an IP address. */
export function parseAddress(text: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  if (!ipaddr.isValid(text)) return undefined;
  return ipaddr.process(text);
}

/**
 * Wraps `answer`, a function whose result depends only on the address text, so
 * that addresses seen before are answered from memory: a relay sees the same
 * few clients and destinations again and again, and parsing the text is most of
 * the cost of a check. At most `limit` answers are kept; the oldest goes first.
 * Answers must never be undefined (and callers must not change them).
 */
export function rememberAnswers<T>(answer: (address: string) => T, limit = 4096): (address: string) => T {
  const answers = new Map<string, T>();
  return (address) => {
    const known = answers.get(address);
    if (known !== undefined) return known;
    const fresh = answer(address);
    if (answers.size >= limit) answers.delete(answers.keys().next().value!);
    answers.set(address, fresh);
    return fresh;
  };
}

/** A compiled list of networks; `contains` answers for any textual IP address. */
export class NetworkList {
  private readonly ranges: Range[];
  /** whether an address is in the list; answered from memory for addresses seen before */
  readonly contains: (text: string) => boolean = rememberAnswers((text) => this.lookup(text));

  constructor(cidrs: readonly string[]) {
    this.ranges = cidrs.map((text) => {
      const [address, bits] = parseRange(text);
      // store IPv4-mapped ranges as plain IPv4 so they match processed addresses
      if (address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress() && bits >= 96) {
        return [(address as ipaddr.IPv6).toIPv4Address(), bits - 96] as Range;
      }
      return [address, bits] as Range;
    });
  }

  private lookup(text: string): boolean {
    const address = parseAddress(text);
    if (!address) return false;
    return this.ranges.some(([network, bits]) => network.kind() === address.kind() && address.match(network, bits));
  }
}
