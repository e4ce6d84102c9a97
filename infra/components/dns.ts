/**
 * The DNS identity (MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, mta-sts address
 * records) published in Route 53, or only printed for a DNS host elsewhere.
 *
 * Contract: the set of Route 53 records is fixed when the component is built
 * (`recordSets`: names and types follow from the stack config alone), and only
 * their values come from outputs (IPs, the DKIM key); so no resource is created
 * inside an `apply`, and a preview shows every record. In manual mode no Route 53
 * resource exists at all. `zoneSnippet` always carries every record given,
 * including those created elsewhere (the nodes' A/AAAA records of `RelayAddress`).
 *
 * TXT values: Route 53 stores a TXT value as quoted character-strings of at most
 * 255 bytes each. The AWS provider wraps each value in one pair of quotes and
 * passes the inside through unchanged, so a long value is written as
 * `part1""part2` (its documented form) and reaches Route 53 as `"part1""part2"`:
 * two strings of one record, which resolvers concatenate.
 */
import * as aws from '@pulumi/aws';
import * as pulumi from '@pulumi/pulumi';
import { escapeTxtString, renderZoneSnippet, splitTxt, type DnsRecord } from '../render/dns-records';

export interface RecordSetKey {
  name: string;
  type: DnsRecord['type'];
}

export interface RelayDnsArgs {
  /** Every record of the customer's identity, as rendered by `renderDnsRecords`. */
  records: pulumi.Input<DnsRecord[]>;
  /** Route 53 mode: the zone and the record sets to create there; omit for manual mode. */
  route53?: {
    zoneId: pulumi.Input<string>;
    recordSets: RecordSetKey[];
  };
}

export class RelayDns extends pulumi.ComponentResource {
  readonly records: pulumi.Output<DnsRecord[]>;
  /** BIND zone-file lines of every record. */
  readonly zoneSnippet: pulumi.Output<string>;
  /** The Route 53 records created, by "name type". */
  readonly route53Records: Map<string, aws.route53.Record> = new Map();

  constructor(name: string, args: RelayDnsArgs, opts?: pulumi.ComponentResourceOptions) {
    super('ownrelay:infra:RelayDns', name, {}, opts);
    this.records = pulumi.output(args.records) as pulumi.Output<DnsRecord[]>;
    this.zoneSnippet = this.records.apply(renderZoneSnippet);

    if (args.route53 !== undefined) {
      for (const key of args.route53.recordSets) {
        const record = this.records.apply((records) => {
          const found = records.find((r) => r.name === key.name && r.type === key.type);
          if (!found) throw new Error(`RelayDns: no ${key.type} record for ${key.name} among the rendered records`);
          return found;
        });
        const resource = new aws.route53.Record(`${name}-${key.type.toLowerCase()}-${key.name}`, {
          zoneId: args.route53.zoneId,
          name: key.name,
          type: key.type,
          ttl: record.ttl,
          records: record.apply((r) => r.values.map((value) => route53Value(r.type, value))),
        }, { parent: this });
        this.route53Records.set(`${key.name} ${key.type}`, resource);
      }
    }

    this.registerOutputs({ records: this.records, zoneSnippet: this.zoneSnippet });
  }
}

/** A record value as the AWS provider's `records` wants it (see the module comment for TXT). */
export function route53Value(type: DnsRecord['type'], value: string): string {
  return type === 'TXT' ? route53TxtValue(value) : value;
}

/**
 * A TXT value split into character-strings of at most 255 bytes, joined by `""`
 * (the provider adds the outer quotes). Inside a string, `"` and `\` are escaped
 * and bytes outside printable ASCII written as Route 53's octal `\ooo`.
 */
export function route53TxtValue(text: string): string {
  return splitTxt(text)
    .map((chunk) => escapeTxtString(chunk, 'octal'))
    .join('""');
}

/** The character-strings a Route 53 TXT value (as `route53TxtValue` wrote it, quoted by the provider) holds, unescaped. */
export function route53TxtStrings(value: string): string[] {
  const quoted = `"${value}"`;
  const strings: string[] = [];
  const pattern = /"((?:[^"\\]|\\.)*)"/g;
  for (const match of quoted.matchAll(pattern)) {
    const bytes: number[] = [];
    const inner = match[1] ?? '';
    for (let i = 0; i < inner.length; i++) {
      const char = inner[i] ?? '';
      if (char === '\\') {
        const octal = /^[0-7]{3}/.exec(inner.slice(i + 1));
        if (octal) {
          bytes.push(parseInt(octal[0], 8));
          i += 3;
        } else {
          bytes.push(inner.charCodeAt(i + 1));
          i += 1;
        }
      } else {
        bytes.push(...Buffer.from(char, 'utf8'));
      }
    }
    strings.push(Buffer.from(bytes).toString('utf8'));
  }
  return strings;
}
