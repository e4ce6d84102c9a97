/**
 * Decides which IP addresses outbound delivery may connect to.
 *
 * DNS is controlled by whoever owns the recipient domain, so an MX record can
 * point anywhere: at loopback, at the private network this relay runs in, or at
 * a cloud metadata service. Delivery only connects to global unicast addresses,
 * unless an address is inside `delivery.allowedDestinations` (labs and tests).
 *
 * Contract: `check` never throws; text that is not an IP address is refused.
 * IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) and SIIT
 * (::ffff:0:a.b.c.d) IPv6 forms are judged as the IPv4 address they carry, and
 * NAT64 addresses of the well-known prefix 64:ff9b::/96 likewise. Other IPv6
 * transition ranges (6to4, Teredo, local-use NAT64) are refused outright.
 *
 * Cloud metadata addresses are only allowed when listed as a single address
 * (169.254.169.254 or 169.254.169.254/32): allowing a whole link-local range
 * for a lab must not also open the metadata service.
 */
import ipaddr from 'ipaddr.js';
import { NetworkList, rememberAnswers } from '../config/cidr';

export type GuardVerdict = { allowed: true } | { allowed: false; reason: string };

const METADATA_ADDRESSES = ['169.254.169.254', 'fd00:ec2::254'].map((text) => ipaddr.parse(text).toNormalizedString());

/** ipaddr.js range names, in the words used in refusal reasons */
const IPV4_RANGE_LABELS: Record<string, string> = {
  unspecified: 'unspecified ("this network")',
  broadcast: 'broadcast',
  multicast: 'multicast',
  linkLocal: 'link-local',
  loopback: 'loopback',
  carrierGradeNat: 'carrier-grade NAT',
  private: 'private',
  reserved: 'reserved',
  as112: 'reserved (AS112)',
  amt: 'reserved (AMT)',
};

const IPV6_RANGE_LABELS: Record<string, string> = {
  unspecified: 'unspecified',
  linkLocal: 'link-local',
  multicast: 'multicast',
  loopback: 'loopback',
  uniqueLocal: 'unique local (private)',
  deprecatedSiteLocal: 'site-local',
  discard: 'discard-only',
  rfc6052: 'local-use NAT64',
  '6to4': '6to4 transition',
  teredo: 'Teredo transition',
};

/** 2000::/3, the only IPv6 space allocated for global unicast */
const GLOBAL_UNICAST_V6 = ipaddr.parseCIDR('2000::/3') as [ipaddr.IPv6, number];
/** 64:ff9b::/96, NAT64 well-known prefix: the last 32 bits are a public IPv4 address */
const NAT64_WELL_KNOWN = ipaddr.parseCIDR('64:ff9b::/96') as [ipaddr.IPv6, number];
/** ::/96 (deprecated IPv4-compatible) and ::ffff:0:0/96 (SIIT) */
const IPV4_COMPATIBLE = ipaddr.parseCIDR('::/96') as [ipaddr.IPv6, number];
const SIIT = ipaddr.parseCIDR('::ffff:0:0:0/96') as [ipaddr.IPv6, number];

export class AddressGuard {
  private readonly allowed: NetworkList;
  private readonly allowedSingles: NetworkList;
  /** the verdict on an address; answered from memory for addresses seen before (verdicts are frozen) */
  readonly check: (ip: string) => GuardVerdict = rememberAnswers((ip) => Object.freeze(this.judge(ip)));

  constructor(allowedCidrs: readonly string[]) {
    this.allowed = new NetworkList(allowedCidrs);
    this.allowedSingles = new NetworkList(allowedCidrs.filter(isSingleAddress));
  }

  /**
   * The addresses of `host` that delivery may connect to, in the resolver's order;
   * `refused` names the others with the reason, `failure` says why the lookup gave
   * nothing (it failed, or the host has no address).
   */
  async usableAddresses(host: string, resolver: { resolveHost(host: string): Promise<string[]> }): Promise<{ addresses: string[]; refused: string[]; failure?: string }> {
    let all: string[];
    try {
      all = await resolver.resolveHost(host);
    } catch (err) {
      return { addresses: [], refused: [], failure: `address lookup for ${host} failed: ${err instanceof Error ? err.message : String(err)}` };
    }
    if (all.length === 0) return { addresses: [], refused: [], failure: `${host} has no A or AAAA records` };
    const addresses: string[] = [];
    const refused: string[] = [];
    for (const address of all) {
      const verdict = this.check(address);
      if (verdict.allowed) addresses.push(address);
      else refused.push(`${host}[${address}]: ${verdict.reason}`);
    }
    return { addresses, refused };
  }

  private judge(ip: string): GuardVerdict {
    if (!ipaddr.isValid(ip)) return { allowed: false, reason: `"${ip}" is not an IP address` };
    const address = embeddedIPv4(ipaddr.parse(ip));
    const normalized = address.toNormalizedString();

    if (METADATA_ADDRESSES.includes(normalized)) {
      if (this.allowedSingles.contains(normalized)) return { allowed: true };
      return refuse(ip, 'cloud metadata');
    }
    if (this.allowed.contains(normalized)) return { allowed: true };

    const label = specialRangeLabel(address);
    return label === undefined ? { allowed: true } : refuse(ip, label);
  }
}

function refuse(ip: string, label: string): GuardVerdict {
  return { allowed: false, reason: `${ip} is a ${label} address, not allowed by delivery.allowedDestinations` };
}

/** The label of the special-purpose range `address` is in, or undefined for global unicast. */
function specialRangeLabel(address: ipaddr.IPv4 | ipaddr.IPv6): string | undefined {
  const range = address.range();
  if (address.kind() === 'ipv4') {
    return range === 'unicast' ? undefined : (IPV4_RANGE_LABELS[range] ?? `special-purpose (${range})`);
  }
  if (range !== 'unicast') return IPV6_RANGE_LABELS[range] ?? `special-purpose (${range})`;
  // ipaddr.js calls everything outside its named ranges unicast, including unallocated space
  if (!address.match(GLOBAL_UNICAST_V6)) return 'unallocated';
  return undefined;
}

/** Replaces IPv6 forms that carry an IPv4 destination with that IPv4 address. */
function embeddedIPv4(address: ipaddr.IPv4 | ipaddr.IPv6): ipaddr.IPv4 | ipaddr.IPv6 {
  if (address.kind() === 'ipv4') return address;
  const v6 = address as ipaddr.IPv6;
  if (v6.isIPv4MappedAddress()) return v6.toIPv4Address();
  const carriesIPv4 = v6.match(NAT64_WELL_KNOWN) || v6.match(SIIT) || (v6.match(IPV4_COMPATIBLE) && !isUnspecifiedOrLoopback(v6));
  if (!carriesIPv4) return v6;
  const bytes = v6.toByteArray();
  return new ipaddr.IPv4(bytes.slice(12));
}

function isUnspecifiedOrLoopback(v6: ipaddr.IPv6): boolean {
  const range = v6.range();
  return range === 'unspecified' || range === 'loopback';
}

function isSingleAddress(cidr: string): boolean {
  if (!cidr.includes('/')) return true;
  const [address, bits] = ipaddr.parseCIDR(cidr);
  return bits === (address.kind() === 'ipv4' ? 32 : 128);
}
