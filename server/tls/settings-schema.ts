/**
 * The config schema of the certificate features (`tls.acme`, `tls.mtaStsPolicy`),
 * kept next to the code that uses them; server/config/schema.ts mounts them under
 * `tls`. Same rules as there: a default and a one-line description per key.
 */
import { z } from 'zod';

const hostname = z
  .string()
  .regex(/^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/, 'a DNS host name');

const port = z.number().int().min(0).max(65535);

export const LETS_ENCRYPT_DIRECTORY_URL = 'https://acme-v02.api.letsencrypt.org/directory';

export const AcmeSettingsSchema = z
  .object({
    directoryUrl: z.url({ protocol: /^https$/ }).default(LETS_ENCRYPT_DIRECTORY_URL).describe('the ACME directory of the certificate authority (default: Let\'s Encrypt production)'),
    email: z.email().describe('contact address for the ACME account (expiry notices); enabling ACME agrees to the CA\'s terms of service'),
    challenge: z.enum(['http-01', 'dns-01']).default('http-01').describe('http-01: answer on port 80 (firewall must allow it); dns-01: publish a TXT record through dns01.provider'),
    http01: z
      .object({
        address: z.string().default('0.0.0.0').describe('IP address the HTTP-01 responder listens on'),
        port: port.default(80).describe('TCP port of the HTTP-01 responder (the CA always connects to 80)'),
      })
      .strict()
      .prefault({})
      .describe('the HTTP-01 responder, run only with challenge http-01; it serves nothing but /.well-known/acme-challenge/'),
    dns01: z
      .object({
        provider: z.enum(['route53']).describe('where the _acme-challenge TXT records are published'),
        hostedZoneId: z.string().min(1).optional().describe('Route 53 hosted zone id (default: looked up from the domain)'),
      })
      .strict()
      .optional()
      .describe('DNS-01 settings (required with challenge dns-01)'),
    domains: z.array(hostname).default([]).describe('more names for the certificate, besides hostname and (with mtaStsPolicy) mta-sts.<domain> of every domain'),
    renewBeforeDays: z.number().int().min(1).max(365).default(30).describe('renew when the certificate has fewer days left than this'),
    checkIntervalMs: z.number().int().positive().default(86_400_000).describe('how often the expiry is checked (and at every start)'),
    caFile: z.string().optional().describe('PEM file of extra CA certificates to trust for the ACME directory\'s HTTPS (a private CA)'),
  })
  .strict()
  .superRefine((acme, ctx) => {
    if (acme.challenge === 'dns-01' && !acme.dns01) ctx.addIssue({ code: 'custom', path: ['dns01'], message: 'required when challenge is dns-01' });
  });

export const MtaStsPolicySettingsSchema = z
  .object({
    address: z.string().default('0.0.0.0').describe('IP address of the HTTPS server for https://mta-sts.<domain>/.well-known/mta-sts.txt'),
    port: port.default(443).describe('its TCP port (senders always use 443)'),
    mode: z.enum(['testing', 'enforce']).default('testing').describe('the policy mode; must match the stack config (infra publishes the record\'s id from the same text)'),
    maxAgeSeconds: z.number().int().min(1).max(31_557_600).default(604_800).describe('max_age of the policy: how long senders cache it'),
    mx: z.array(hostname).default([]).describe('the MX host names the policy lists (every node of the customer); empty: this hostname only'),
  })
  .strict();

export type AcmeSettings = z.output<typeof AcmeSettingsSchema>;
export type MtaStsPolicySettings = z.output<typeof MtaStsPolicySettingsSchema>;
