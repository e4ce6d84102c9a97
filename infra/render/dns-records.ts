/**
 * The DNS identity of a customer's mail server, rendered as plain data: address
 * records of every node, and per domain MX, SPF, DKIM, DMARC, MTA-STS and TLS-RPT.
 * The same records feed Route 53 (dns mode `route53`) and the zone-file snippet
 * printed for a DNS host elsewhere (dns mode `manual`), so both say the same thing.
 *
 * Contract: pure functions of their input (no Pulumi, no network); at most one
 * record per (name, type), its values in a stable order; TXT values are the full
 * text, unsplit: splitting into 255-byte character-strings is `splitTxt`'s job.
 */
import { createPublicKey } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import { renderMtaStsPolicy, type MtaStsMode } from '../../server/tls/mta-sts-policy';

export interface DnsRecord {
  /** fully qualified name, lower case, without the trailing dot */
  name: string;
  type: 'A' | 'AAAA' | 'MX' | 'TXT';
  ttl: number;
  /** MX: "10 mail.example.org"; TXT: the full text, unsplit */
  values: string[];
}

export interface MailNode {
  hostname: string;
  ipv4: string;
  ipv6?: string;
}

export type DmarcPolicy = 'none' | 'quarantine' | 'reject';
export type { MtaStsMode };

export interface DnsIdentityInput {
  domains: string[];
  /** the primary host name; node 0's name (kept for symmetry with the stack config) */
  hostname: string;
  /** one entry per node, node 0 first; see `nodeHostnames` for the names */
  nodes: MailNode[];
  dkim: { selector: string; publicKeyPem: string };
  /** keys of earlier selectors, still published while mail signed with them may be checked (a key rotation) */
  retiredDkim?: Array<{ selector: string; publicKeyPem: string }>;
  dmarc: { policy: DmarcPolicy; rua?: string };
  /** the MTA-STS policy the relay serves; omitted: no `_mta-sts` and no `mta-sts.<domain>` records */
  mtaSts?: { mode: MtaStsMode; maxAgeSeconds: number };
  /** where TLS reports go; default mailto:postmaster@<domain> */
  tlsRptRua?: string;
  /** TTL of every record; default DEFAULT_TTL_SECONDS */
  ttlSeconds?: number;
}

/** One hour: short enough to fix a mistake the same day, long enough to cache well. */
export const DEFAULT_TTL_SECONDS = 3600;

/** Preference of every MX: nodes are peers, senders spread over them at random. */
export const MX_PREFERENCE = 10;

/**
 * Host names of `count` nodes. Node 0 is `hostname` itself; node i > 0 gets the
 * number i+1 appended to the first label (mail.acme.org -> mail2.acme.org,
 * mail3.acme.org), with a hyphen when that label already ends in a digit
 * (mx1.acme.org -> mx1-2.acme.org) so names never collide.
 */
export function nodeHostnames(hostname: string, count: number): string[] {
  const dot = hostname.indexOf('.');
  const first = dot < 0 ? hostname : hostname.slice(0, dot);
  const rest = dot < 0 ? '' : hostname.slice(dot);
  const separator = /[0-9]$/.test(first) ? '-' : '';
  return Array.from({ length: count }, (_, i) => (i === 0 ? hostname : `${first}${separator}${i + 1}${rest}`));
}

export function renderDnsRecords(input: DnsIdentityInput): DnsRecord[] {
  if (input.nodes.length === 0) throw new Error('renderDnsRecords: at least one node is required');
  if (input.domains.length === 0) throw new Error('renderDnsRecords: at least one domain is required');
  for (const node of input.nodes) {
    if (!isIPv4(node.ipv4)) throw new Error(`renderDnsRecords: ${node.hostname}: "${node.ipv4}" is not an IPv4 address`);
    if (node.ipv6 !== undefined && !isIPv6(node.ipv6)) throw new Error(`renderDnsRecords: ${node.hostname}: "${node.ipv6}" is not an IPv6 address`);
  }
  const ttl = input.ttlSeconds ?? DEFAULT_TTL_SECONDS;
  const records: DnsRecord[] = [];
  const add = (name: string, type: DnsRecord['type'], values: string[]): void => {
    if (values.length > 0) records.push({ name: name.toLowerCase(), type, ttl, values });
  };
  const ipv4s = input.nodes.map((n) => n.ipv4);
  const ipv6s = input.nodes.flatMap((n) => (n.ipv6 === undefined ? [] : [n.ipv6]));
  const mxHosts = input.nodes.map((n) => n.hostname.toLowerCase());

  for (const node of input.nodes) {
    add(node.hostname, 'A', [node.ipv4]);
    if (node.ipv6 !== undefined) add(node.hostname, 'AAAA', [node.ipv6]);
  }
  const dkimKeys = [input.dkim, ...(input.retiredDkim ?? [])].map((key) => ({ selector: key.selector, base64: dkimPublicKeyBase64(key.publicKeyPem) }));
  if (new Set(dkimKeys.map((key) => key.selector)).size !== dkimKeys.length) throw new Error('renderDnsRecords: a DKIM selector is given twice');
  const policy = input.mtaSts === undefined ? undefined : renderMtaStsPolicy({ ...input.mtaSts, mxHosts });
  const policyHost = input.nodes[0];
  for (const domain of input.domains) {
    add(domain, 'MX', mxHosts.map((host) => `${MX_PREFERENCE} ${host}`));
    add(domain, 'TXT', [renderSpf(ipv4s, ipv6s)]);
    for (const key of dkimKeys) add(`${key.selector}._domainkey.${domain}`, 'TXT', [`v=DKIM1; k=rsa; p=${key.base64}`]);
    add(`_dmarc.${domain}`, 'TXT', [renderDmarc(input.dmarc)]);
    if (policy !== undefined) add(`_mta-sts.${domain}`, 'TXT', [`v=STSv1; id=${policy.id}`]);
    add(`_smtp._tls.${domain}`, 'TXT', [`v=TLSRPTv1; rua=${input.tlsRptRua ?? `mailto:postmaster@${domain}`}`]);
    if (policy !== undefined && policyHost !== undefined) {
      // node 0 serves https://mta-sts.<domain>/.well-known/mta-sts.txt: with HTTP-01, the CA must reach the node
      // that asked for the mta-sts.<domain> certificate, so the name points to that node only
      add(`mta-sts.${domain}`, 'A', [policyHost.ipv4]);
      add(`mta-sts.${domain}`, 'AAAA', policyHost.ipv6 === undefined ? [] : [policyHost.ipv6]);
    }
  }
  return mergeRecordSets(records);
}

/** `v=spf1` with every node's addresses and `-all`: only these hosts send for the domain. */
export function renderSpf(ipv4s: string[], ipv6s: string[]): string {
  const mechanisms = [...new Set(ipv4s)].map((ip) => `ip4:${ip}`).concat([...new Set(ipv6s)].map((ip) => `ip6:${ip}`));
  return ['v=spf1', ...mechanisms, '-all'].join(' ');
}

/**
 * DMARC with relaxed alignment (adkim=r; aspf=r). The customer owns the whole
 * organizational domain, so strict alignment protects against nobody, while it
 * fails legitimate mail whose From is a subdomain (billing.acme.org) signed or
 * bounced as acme.org, and with the default p=quarantine that mail lands in spam.
 */
export function renderDmarc(dmarc: { policy: DmarcPolicy; rua?: string }): string {
  const tags = ['v=DMARC1', `p=${dmarc.policy}`];
  if (dmarc.rua !== undefined) tags.push(`rua=${dmarc.rua}`);
  tags.push('adkim=r', 'aspf=r');
  return tags.join('; ');
}

/** The address of a report URI (`mailto:dmarc@acme.org!10m` -> `dmarc@acme.org`); undefined for an https: URI. */
export function mailtoAddress(uri: string): string | undefined {
  return /^mailto:/i.test(uri) ? uri.slice('mailto:'.length).replace(/![0-9]+[kmgt]?$/i, '') : undefined;
}

// the policy text is rendered by the relay's own renderer, so the served file and the published id agree
export { renderMtaStsPolicy } from '../../server/tls/mta-sts-policy';

/** The base64 SubjectPublicKeyInfo (DER) of an RSA key in PEM form, as DKIM's p= wants it. */
export function dkimPublicKeyBase64(pem: string): string {
  const key = createPublicKey(pem);
  if (key.asymmetricKeyType !== 'rsa') throw new Error(`dkimPublicKeyBase64: expected an RSA key, got ${String(key.asymmetricKeyType)}`);
  return key.export({ type: 'spki', format: 'der' }).toString('base64');
}

/**
 * Splits a TXT value into DNS character-strings of at most 255 bytes of UTF-8,
 * cutting only between characters (never inside a multi-byte sequence). The empty
 * text is one empty string.
 */
export function splitTxt(value: string): string[] {
  const chunks: string[] = [];
  let current = '';
  let currentBytes = 0;
  for (const char of value) {
    const bytes = Buffer.byteLength(char, 'utf8');
    if (currentBytes + bytes > 255) {
      chunks.push(current);
      current = '';
      currentBytes = 0;
    }
    current += char;
    currentBytes += bytes;
  }
  chunks.push(current);
  return chunks;
}

/**
 * Escapes one TXT character-string: `"` and `\` get a backslash, bytes outside
 * printable ASCII become a backslash and three digits, decimal in RFC 1035
 * presentation form and octal in Route 53's.
 */
export function escapeTxtString(chunk: string, digits: 'decimal' | 'octal'): string {
  let out = '';
  for (const byte of Buffer.from(chunk, 'utf8')) {
    if (byte === 0x22 || byte === 0x5c) out += `\\${String.fromCharCode(byte)}`;
    else if (byte >= 0x20 && byte <= 0x7e) out += String.fromCharCode(byte);
    else out += `\\${byte.toString(digits === 'octal' ? 8 : 10).padStart(3, '0')}`;
  }
  return out;
}

/**
 * A TXT value in RFC 1035 presentation form: its character-strings quoted and
 * separated by spaces; `"` and `\` escaped, bytes outside printable ASCII as \DDD.
 */
export function quoteTxt(value: string): string {
  return splitTxt(value)
    .map((chunk) => `"${escapeTxtString(chunk, 'decimal')}"`)
    .join(' ');
}

/** BIND zone-file lines for the records: absolute names with trailing dots, one line per value. */
export function renderZoneSnippet(records: DnsRecord[]): string {
  const lines: string[] = [];
  for (const record of records) {
    for (const value of record.values) {
      lines.push(`${record.name}.\t${record.ttl}\tIN\t${record.type}\t${presentValue(record.type, value)}`);
    }
  }
  return lines.map((line) => `${line}\n`).join('');
}

function presentValue(type: DnsRecord['type'], value: string): string {
  if (type === 'TXT') return quoteTxt(value);
  if (type === 'MX') return value.endsWith('.') ? value : `${value}.`;
  return value;
}

/** One record per (name, type), values deduplicated in first-seen order (Route 53 wants record sets). */
function mergeRecordSets(records: DnsRecord[]): DnsRecord[] {
  const byKey = new Map<string, DnsRecord>();
  for (const record of records) {
    const key = `${record.name} ${record.type}`;
    const existing = byKey.get(key);
    if (existing) {
      for (const value of record.values) if (!existing.values.includes(value)) existing.values.push(value);
    } else {
      byKey.set(key, { ...record, values: [...new Set(record.values)] });
    }
  }
  return [...byKey.values()];
}
