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

/** A compiled list of networks; `contains` answers for any textual IP address. */
export class NetworkList {
  private readonly ranges: Range[];

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

  contains(text: string): boolean {
    const address = parseAddress(text);
    if (!address) return false;
    return this.ranges.some(([network, bits]) => network.kind() === address.kind() && address.match(network, bits));
  }
}
