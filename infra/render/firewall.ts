/**
 * The host firewall, /etc/nftables.conf (loaded by Debian's nftables.service). It
 * mirrors the cloud security group, so the host stays closed if the group is
 * widened by mistake: mail ports from anywhere, SSH only from the admin networks,
 * port 80 only for HTTP-01 certificate challenges, port 443 only when the relay
 * serves the MTA-STS policy, everything else dropped.
 *
 * Pure: the same input always renders the same text. Admin networks are parsed and
 * written back in canonical form, so nothing from the input reaches nft verbatim.
 */
import ipaddr from 'ipaddr.js';

export interface FirewallInput {
  /** Networks allowed to reach SSH (port 22), IPv4 and/or IPv6 CIDRs. At least one; no /0. */
  adminCidrs: readonly string[];
  /** Open port 80 for ACME HTTP-01 challenges. */
  http01: boolean;
  /** Open port 443: the relay serves https://mta-sts.<domain>/.well-known/mta-sts.txt. */
  mtaStsPolicy?: boolean;
}

/** Ports open to the whole Internet: SMTP (MX), submissions (implicit TLS), submission. */
export const MAIL_PORTS: readonly number[] = [25, 465, 587];
export const SSH_PORT = 22;
export const HTTP_PORT = 80;
export const HTTPS_PORT = 443;

/** The admin networks split by family, canonical (network address, no host bits). */
export interface AdminNetworks {
  ipv4: string[];
  ipv6: string[];
}

/**
 * Parses and canonicalizes the admin networks. Throws on an empty list, on text
 * that is not a CIDR or an address, and on a /0 (SSH from the whole Internet is
 * what the admin list exists to prevent).
 */
export function splitAdminCidrs(cidrs: readonly string[]): AdminNetworks {
  if (cidrs.length === 0) throw new Error('adminCidrs: at least one network is required for SSH access');
  const out: AdminNetworks = { ipv4: [], ipv6: [] };
  for (const raw of cidrs) {
    const text = raw.trim();
    const withBits = text.includes('/') ? text : `${text}/${text.includes(':') ? 128 : 32}`;
    let bits: number;
    let family: 'ipv4' | 'ipv6';
    let network: string;
    if (ipaddr.IPv4.isValidCIDRFourPartDecimal(withBits)) {
      bits = ipaddr.IPv4.parseCIDR(withBits)[1];
      family = 'ipv4';
      network = ipaddr.IPv4.networkAddressFromCIDR(withBits).toString();
    } else if (ipaddr.IPv6.isValidCIDR(withBits)) {
      bits = ipaddr.IPv6.parseCIDR(withBits)[1];
      family = 'ipv6';
      network = ipaddr.IPv6.networkAddressFromCIDR(withBits).toString();
    } else {
      throw new Error(`adminCidrs: ${JSON.stringify(raw)} is not an IPv4 or IPv6 CIDR`);
    }
    if (bits === 0) throw new Error(`adminCidrs: ${JSON.stringify(raw)} would open SSH to the whole Internet`);
    const canonical = `${network}/${bits}`;
    if (!out[family].includes(canonical)) out[family].push(canonical);
  }
  return out;
}

function setBlock(name: string, type: 'ipv4_addr' | 'ipv6_addr', elements: readonly string[]): string[] {
  // interval + auto-merge: CIDRs, and overlapping ones (10.0.0.0/8 and 10.1.0.0/16) are merged, not refused
  const lines = [`\tset ${name} {`, `\t\ttype ${type}`, '\t\tflags interval', '\t\tauto-merge'];
  if (elements.length > 0) lines.push(`\t\telements = { ${elements.join(', ')} }`);
  lines.push('\t}');
  return lines;
}

/**
 * Renders the complete ruleset. It starts with `flush ruleset`, so loading it
 * replaces whatever was there (nftables.service reloads it the same way).
 */
export function renderNftables(input: FirewallInput): string {
  const admin = splitAdminCidrs(input.adminCidrs);
  const lines: string[] = [
    '#!/usr/sbin/nft -f',
    '# ownrelay host firewall: mirrors the cloud security group. Rendered by infra; edits are overwritten by a redeploy of the host.',
    'flush ruleset',
    '',
    'table inet filter {',
    ...setBlock('admin_v4', 'ipv4_addr', admin.ipv4),
    ...setBlock('admin_v6', 'ipv6_addr', admin.ipv6),
    '',
    '\tchain input {',
    '\t\ttype filter hook input priority filter; policy drop;',
    '',
    '\t\tiif "lo" accept',
    '\t\t# loopback addresses arriving on a real interface are spoofed',
    '\t\tiif != "lo" ip daddr 127.0.0.0/8 drop',
    '\t\tiif != "lo" ip6 daddr ::1 drop',
    '\t\tct state established,related accept',
    '\t\tct state invalid drop',
    '',
    '\t\t# ICMP that IP needs: errors (path MTU discovery), ping; ICMPv6 also carries neighbor discovery',
    '\t\tmeta l4proto icmp icmp type { echo-request, destination-unreachable, time-exceeded, parameter-problem } limit rate 20/second accept',
    '\t\tmeta l4proto ipv6-icmp icmpv6 type { echo-request, destination-unreachable, packet-too-big, time-exceeded, parameter-problem } limit rate 20/second accept',
    '\t\tmeta l4proto ipv6-icmp icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept',
    '\t\t# DHCPv6 replies come from a link-local server to a multicast request, which conntrack cannot pair',
    '\t\tip6 saddr fe80::/10 udp sport 547 udp dport 546 accept',
    '',
    `\t\ttcp dport { ${MAIL_PORTS.join(', ')} } accept`,
    `\t\tip saddr @admin_v4 tcp dport ${SSH_PORT} accept`,
    `\t\tip6 saddr @admin_v6 tcp dport ${SSH_PORT} accept`,
  ];
  if (input.http01) lines.push(`\t\ttcp dport ${HTTP_PORT} accept`);
  if (input.mtaStsPolicy === true) lines.push(`\t\ttcp dport ${HTTPS_PORT} accept`);
  lines.push(
    '\t}',
    '',
    '\t# a mail server routes nothing',
    '\tchain forward {',
    '\t\ttype filter hook forward priority filter; policy drop;',
    '\t}',
    '',
    '\t# outbound: SMTP delivery, DNS, NTP, package mirrors',
    '\tchain output {',
    '\t\ttype filter hook output priority filter; policy accept;',
    '\t}',
    '}',
    '',
  );
  return lines.join('\n');
}
