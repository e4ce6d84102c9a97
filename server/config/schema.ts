/**
 * The relay's one config schema. Every key has a default (where one makes sense)
 * and a one-line description; the descriptions end up in the exported JSON Schema,
 * so editors can complete and explain the YAML file.
 *
 * Contract: a config that passed `RelayConfigSchema` is complete (all defaults
 * applied) and is frozen by the loader; nothing else in the relay reads YAML or
 * the environment.
 */
import { z } from 'zod';
import { isValidCidr } from './cidr';
import { parseHash } from '../stages/password';

const hostname = z
  .string()
  .regex(/^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/, 'a DNS host name');

const cidr = z.string().refine(isValidCidr, 'expected an IP address or CIDR range such as 10.0.0.0/8 or ::1/128');

const port = z.number().int().min(1).max(65535);

const tlsOutbound = z
  .enum(['opportunistic', 'required', 'implicit', 'none'])
  .describe('opportunistic: STARTTLS when offered; required: STARTTLS or fail; implicit: TLS from the first byte (port 465); none: plain text');

export const NextHopSchema = z
  .object({
    host: hostname.describe('host name or IP address of the next hop'),
    port: port.default(25).describe('TCP port of the next hop'),
    tls: tlsOutbound.default('opportunistic'),
    verifyCertificate: z
      .boolean()
      .default(true)
      .describe('with tls required or implicit, check the certificate against host (opportunistic TLS never checks)'),
    auth: z
      .object({
        user: z.string().min(1).describe('user name for AUTH at the next hop'),
        pass: z.string().min(1).describe('password for AUTH at the next hop'),
      })
      .strict()
      .optional()
      .describe('credentials for AUTH at the next hop (only sent over TLS)'),
  })
  .strict();

export const ListenerSchema = z
  .object({
    role: z.enum(['mx', 'submission']).describe('mx: mail for our domains from the Internet, no AUTH; submission: the customer\'s applications, AUTH required to relay'),
    address: z.string().default('127.0.0.1').describe('IP address to listen on (0.0.0.0 or :: for all)'),
    port: z.number().int().min(0).max(65535).describe('TCP port (25 for mx, 587 STARTTLS or 465 implicit TLS for submission; 0 picks a free port)'),
    tls: z.enum(['starttls', 'implicit']).default('starttls').describe('starttls: plain connection that offers STARTTLS; implicit: TLS from the first byte (port 465)'),
    earlyTalkerCheck: z
      .boolean()
      .optional()
      .describe('wait 100 ms before the greeting and refuse clients that talk first (default: on for mx, off for submission)'),
  })
  .strict();

export const DomainSchema = z
  .object({
    name: hostname.describe('a domain this server receives mail for'),
    delivery: z.enum(['maildir', 'forward']).default('maildir').describe('maildir: store in a Maildir per mailbox; forward: pass on to a next hop'),
    mailboxes: z
      .array(z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9._-]*$/, 'a mailbox name (letters, digits, . _ -)'))
      .optional()
      .describe('local parts accepted at RCPT; omit to accept any well-formed local part (maildir) or leave the choice to the next hop (forward)'),
    aliases: z
      .record(z.string(), z.string())
      .default({})
      .describe('local part -> mailbox of this domain (e.g. root: postmaster)'),
    forwardTo: NextHopSchema.optional().describe('next hop for delivery: forward'),
  })
  .strict()
  .superRefine((domain, ctx) => {
    if (domain.delivery === 'forward' && !domain.forwardTo) {
      ctx.addIssue({ code: 'custom', path: ['forwardTo'], message: 'required when delivery is forward' });
    }
  });

export const UserSchema = z
  .object({
    name: z.string().min(1).describe('user name for SMTP AUTH'),
    passwordHash: z
      .string()
      .refine((hash) => parseHash(hash) !== undefined, 'expected a $scrypt$ hash made by `ownrelay hash-password`, never a plain password')
      .describe('scrypt hash of the password'),
    senders: z
      .array(z.string().min(2))
      .min(1)
      .describe('envelope senders this user may use: full addresses (app@example.org) or whole domains (@example.org)'),
  })
  .strict();

export const RelayConfigSchema = z
  .object({
    hostname: hostname.default('localhost').describe('this server\'s name: greeting, Received headers, EHLO when sending; must match the reverse DNS of its IP'),
    listeners: z.array(ListenerSchema).min(1).describe('the SMTP ports to listen on'),
    tls: z
      .object({
        certFile: z.string().optional().describe('PEM certificate chain; when absent a self-signed certificate is generated into paths.state at first start'),
        keyFile: z.string().optional().describe('PEM private key of certFile'),
        minVersion: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2').describe('oldest TLS version accepted'),
      })
      .strict()
      .prefault({})
      .superRefine((tls, ctx) => {
        if (Boolean(tls.certFile) !== Boolean(tls.keyFile)) {
          ctx.addIssue({ code: 'custom', path: [tls.certFile ? 'keyFile' : 'certFile'], message: 'certFile and keyFile must be set together' });
        }
      })
      .describe('TLS for the listeners'),
    domains: z.array(DomainSchema).default([]).describe('the domains this server receives mail for'),
    relay: z
      .object({
        networks: z.array(cidr).default([]).describe('client networks allowed to relay without AUTH (keep this to hosts you control)'),
      })
      .strict()
      .prefault({})
      .describe('who may send to other domains'),
    users: z.array(UserSchema).default([]).describe('users who may AUTH on submission listeners'),
    limits: z
      .object({
        maxMessageBytes: z.number().int().positive().default(25 * 1024 * 1024).describe('largest message accepted, enforced while receiving (552)'),
        maxRecipients: z.number().int().positive().default(100).describe('recipients per message (452 beyond)'),
        maxErrors: z.number().int().positive().default(10).describe('rejected commands per connection before 421 and disconnect'),
        maxClients: z.number().int().positive().default(1000).describe('concurrent connections per listener'),
        idleTimeoutMs: z.number().int().positive().default(300_000).describe('close a connection that is silent this long'),
        bareLineEndings: z.enum(['reject', 'normalize']).default('normalize').describe('a bare CR or LF in DATA: reject the message (554) or turn it into CRLF'),
      })
      .strict()
      .prefault({})
      .describe('protection against bad and oversized input'),
    paths: z
      .object({
        spool: z.string().default('./var/spool').describe('the queue directory (keep it on a durable disk)'),
        mail: z.string().default('./var/mail').describe('root of the Maildirs: <mail>/<domain>/<mailbox>/'),
        state: z.string().default('./var/state').describe('generated state, such as the self-signed certificate'),
      })
      .strict()
      .prefault({})
      .describe('where the relay keeps its files (relative paths are relative to the working directory)'),
    delivery: z
      .object({
        maxActive: z.number().int().positive().default(200).describe('messages being delivered at once'),
        maxPerDestination: z.number().int().positive().default(20).describe('connections at once to one destination domain or next hop'),
        connectTimeoutMs: z.number().int().positive().default(30_000).describe('TCP connect timeout per address'),
        commandTimeoutMs: z.number().int().positive().default(300_000).describe('wait this long for each reply of a remote server'),
        retry: z
          .object({
            minBackoffMs: z.number().int().positive().default(300_000).describe('first retry after this long (Postfix: 300 s)'),
            maxBackoffMs: z.number().int().positive().default(4_000_000).describe('retry interval never grows past this (Postfix: 4000 s)'),
            maxQueueLifetimeMs: z.number().int().positive().default(5 * 24 * 3600_000).describe('give up and bounce after this long in the queue (Postfix: 5 days)'),
          })
          .strict()
          .prefault({})
          .describe('the retry schedule: the interval doubles after each attempt'),
        smarthost: NextHopSchema.optional().describe('send all non-local mail through this host (e.g. while outbound port 25 is blocked)'),
        routes: z.record(hostname, NextHopSchema).default({}).describe('per destination domain next hop, taking precedence over smarthost and MX'),
        allowedDestinations: z
          .array(cidr)
          .default([])
          .describe('private, loopback or link-local addresses that delivery may connect to anyway (labs and tests)'),
      })
      .strict()
      .prefault({})
      .describe('sending mail on'),
    dns: z
      .object({
        servers: z
          .array(z.string().min(1))
          .default([])
          .describe('resolvers for MX/A/AAAA lookups as ip or ip:port; empty uses the system resolver'),
      })
      .strict()
      .prefault({})
      .describe('name resolution for delivery'),
    admin: z
      .object({
        socket: z
          .string()
          .optional()
          .describe('Unix socket of the `ownrelay` command (mode 0660: its group is who may administer); default <paths.state>/admin.sock'),
      })
      .strict()
      .prefault({})
      .describe('the local administration socket'),
    metrics: z
      .object({
        enabled: z.boolean().default(true).describe('serve Prometheus metrics over HTTP at /metrics'),
        address: z.string().default('127.0.0.1').describe('IP address of the metrics endpoint (keep it on loopback or a private network)'),
        port: z.number().int().min(0).max(65535).default(9465).describe('TCP port of the metrics endpoint (0 picks a free port)'),
      })
      .strict()
      .prefault({})
      .describe('the Prometheus endpoint'),
    log: z
      .object({
        level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info').describe('least important log level written'),
      })
      .strict()
      .prefault({})
      .describe('JSON logs on stdout'),
  })
  .strict();

export type RelayConfig = z.output<typeof RelayConfigSchema>;
export type RelayConfigInput = z.input<typeof RelayConfigSchema>;
export type ListenerConfig = z.output<typeof ListenerSchema>;
export type DomainConfig = z.output<typeof DomainSchema>;
export type UserConfig = z.output<typeof UserSchema>;
export type NextHop = z.output<typeof NextHopSchema>;
