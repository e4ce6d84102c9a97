/**
 * The `doctor` section of the relay config: what `ownrelay doctor` checks against
 * that is not the relay's own identity. Part of the relay's one schema, so the
 * same file, messages and JSON Schema cover it.
 */
import { isIP } from 'node:net';
import { z } from 'zod';

/** a DNS zone name, such as a blocklist's */
export const dnsZone = z
  .string()
  .regex(/^(?=.{1,253}$)([a-zA-Z0-9_]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9_]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/, 'a DNS zone such as zen.spamhaus.org');

export const DoctorSettingsSchema = z
  .object({
    publicAddresses: z
      .array(z.string().refine((value) => isIP(value) !== 0, 'an IPv4 or IPv6 address such as 203.0.113.25'))
      .default([])
      .describe('the server\'s public addresses, checked unless `doctor --ip` is given; needed where they are not on an interface (an AWS Elastic IP): the infra program writes them. Empty: the public addresses of the host\'s interfaces'),
    ipBlocklists: z
      .array(dnsZone)
      .default(['zen.spamhaus.org', 'bl.spamcop.net', 'b.barracudacentral.org'])
      .describe('DNS blocklists (DNSBL zones) the server\'s IP addresses must not be on'),
    domainBlocklists: z
      .array(dnsZone)
      .default(['dbl.spamhaus.org'])
      .describe('domain blocklists (RHSBL zones) the mail domain must not be on'),
    outboundProbe: z
      .string()
      .regex(/^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):[0-9]{1,5}$/, 'host:port, such as gmail-smtp-in.l.google.com:25')
      .default('gmail-smtp-in.l.google.com:25')
      .describe('a host:port outside that accepts SMTP connections, to prove outbound port 25 is open'),
    certificateMinDays: z
      .number()
      .int()
      .min(1)
      .default(14)
      .describe('the server\'s certificate fails the check when it expires within this many days'),
  })
  .strict()
  .prefault({})
  .describe('what `ownrelay doctor` checks the server against');

export type DoctorSettings = z.output<typeof DoctorSettingsSchema>;
