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
import { AcmeSettingsSchema, MtaStsPolicySettingsSchema } from '../tls/settings-schema';
import { DoctorSettingsSchema, dnsZone } from '../doctor/settings';
import { tlsReportFrom } from '../delivery/tls-report';
import { aliasExpands, isForwardAddress, isListedMailbox, isPlainMailboxName } from '../delivery/local-mailboxes';
import { domainOf, localPartOf } from '../queue/envelope';

const hostname = z
  .string()
  .regex(/^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/, 'a DNS host name');

const cidr = z.string().refine(isValidCidr, 'expected an IP address or CIDR range such as 10.0.0.0/8 or ::1/128');

const port = z.number().int().min(1).max(65535);

const tlsOutbound = z
  .enum(['opportunistic', 'required', 'implicit', 'none'])
  .describe('opportunistic: STARTTLS when offered; required: STARTTLS or fail; implicit: TLS from the first byte (port 465); none: plain text');

const dmarcRejectPolicy = z
  .enum(['refuse', 'mark'])
  .describe('mail failing the DMARC p=reject policy of its From domain: refuse it (550 5.7.1) or accept and mark it in Authentication-Results');

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
      .record(z.string(), z.union([z.string(), z.array(z.string()).min(1, 'a list of at least one mailbox')], { error: 'a mailbox name or an address, or a list of them' }))
      .default({})
      .describe('local part -> mailbox of this domain (root: postmaster), an address elsewhere to forward to (abuse: ops@example.net), or a list of these (team: [alice, bob]): each target gets its own copy; lists and forwards on maildir domains'),
    forwardTo: NextHopSchema.optional().describe('next hop for delivery: forward'),
    verifyRecipients: z
      .boolean()
      .default(false)
      .describe(
        'forward domains: before accepting a recipient from a client that may not relay, ask forwardTo whether it takes it (MAIL FROM:<> and RCPT TO, no message), so mail for unknown users is refused at once (550 5.1.1) instead of bounced later to a sender that may be forged; answers are cached (a day, an hour for unknown users)',
      ),
    dmarcRejectPolicy: dmarcRejectPolicy.optional().describe('overrides inbound.dmarcRejectPolicy for mail to this domain'),
  })
  .strict()
  .superRefine((domain, ctx) => {
    if (domain.delivery === 'forward' && !domain.forwardTo) {
      ctx.addIssue({ code: 'custom', path: ['forwardTo'], message: 'required when delivery is forward' });
    }
    if (domain.verifyRecipients && domain.delivery !== 'forward') {
      ctx.addIssue({ code: 'custom', path: ['verifyRecipients'], message: 'applies only to delivery: forward (a maildir domain knows its mailboxes)' });
    }
    for (const [from, to] of Object.entries(domain.aliases)) {
      const targets = typeof to === 'string' ? [to] : to;
      targets.forEach((target, i) => {
        const path = typeof to === 'string' ? ['aliases', from] : ['aliases', from, i];
        const name = target.trim();
        if (name.includes('@')) {
          if (!isForwardAddress(name)) {
            ctx.addIssue({ code: 'custom', path, message: `expected a mailbox of this domain or an address such as ops@example.net, not ${JSON.stringify(target)}` });
          } else if (domain.delivery !== 'maildir') {
            ctx.addIssue({ code: 'custom', path, message: 'forwarding to an address applies only to delivery: maildir (a forward domain\'s next hop does its own aliases)' });
          }
        } else if (!isPlainMailboxName(name)) {
          ctx.addIssue({ code: 'custom', path, message: `expected a mailbox of this domain (letters, digits, . _ -) or an address such as ops@example.net, not ${JSON.stringify(target)}` });
        } else if (!isListedMailbox(domain, name)) {
          ctx.addIssue({ code: 'custom', path, message: `${name} is not in mailboxes (nor postmaster or abuse)` });
        }
      });
      if (targets.length > 1 && domain.delivery !== 'maildir') {
        ctx.addIssue({ code: 'custom', path: ['aliases', from], message: 'a list of mailboxes applies only to delivery: maildir (a forward domain\'s next hop expands its own lists)' });
      }
    }
  });

const SendingLimitSchema = z
  .object({
    messagesPerHour: z.number().int().positive().default(1000).describe('messages an authenticated user may send in any hour'),
    action: z
      .enum(['defer', 'hold'])
      .default('defer')
      .describe('over the limit: defer (450 4.7.1 at MAIL FROM: the application retries later) or hold (accept into the hold queue, not delivered until released, and log an alert)'),
  })
  .strict();

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
    sendingLimit: SendingLimitSchema.optional().describe('overrides limits.sending for this user'),
  })
  .strict();

export const DkimKeySchema = z
  .object({
    domain: hostname.describe('the signing domain (d=); signs mail whose From is this domain or one of its subdomains'),
    selector: z
      .string()
      .regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i, 'expected a DNS label such as s2026 (published at <selector>._domainkey.<domain>)')
      .describe('the selector (s=): the key is published at <selector>._domainkey.<domain>'),
    privateKeyFile: z.string().min(1).describe('PEM private key, RSA (2048 bits or more) or Ed25519; the algorithm follows the key'),
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
        reloadCheckIntervalMs: z.number().int().positive().default(30_000).describe('how often certFile and keyFile are checked for a renewed certificate, which new connections then get (no restart)'),
        acme: AcmeSettingsSchema.optional().describe('get and renew the certificate from an ACME CA such as Let\'s Encrypt (instead of certFile/keyFile)'),
        mtaStsPolicy: MtaStsPolicySettingsSchema.optional().describe('serve the domains\' MTA-STS policy over HTTPS at mta-sts.<domain> with this certificate'),
      })
      .strict()
      .prefault({})
      .superRefine((tls, ctx) => {
        if (Boolean(tls.certFile) !== Boolean(tls.keyFile)) {
          ctx.addIssue({ code: 'custom', path: [tls.certFile ? 'keyFile' : 'certFile'], message: 'certFile and keyFile must be set together' });
        }
        if (tls.acme && tls.certFile) ctx.addIssue({ code: 'custom', path: ['acme'], message: 'acme and certFile/keyFile exclude each other: the certificate comes from one or the other' });
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
        maxConnectionsPerIp: z
          .number()
          .int()
          .positive()
          .default(50)
          .describe('concurrent connections from one client address per listener; more get 421 4.7.0 (clients in relay.networks are exempt)'),
        idleTimeoutMs: z.number().int().positive().default(300_000).describe('close a connection that is silent this long'),
        bareLineEndings: z.enum(['reject', 'normalize']).default('normalize').describe('a bare CR or LF in DATA: reject the message (554) or turn it into CRLF'),
        spoolMinFreeBytes: z
          .number()
          .int()
          .nonnegative()
          .default(100 * 1024 * 1024)
          .describe('free space the spool\'s file system keeps for queued mail: MAIL FROM gets 452 4.3.1 while less than this plus the declared SIZE is free (0: only a full disk refuses)'),
        auth: z
          .object({
            maxFailuresPerConnection: z.number().int().positive().default(3).describe('failed AUTH attempts on one connection before 421 and disconnect'),
            maxFailuresPerIp: z.number().int().positive().default(10).describe('failed AUTH attempts from one IP within windowMs before its attempts get 454 without a password check'),
            windowMs: z.number().int().positive().default(900_000).describe('how long a failure counts'),
            baseDelayMs: z.number().int().nonnegative().default(500).describe('answer delay after the first failure of an IP or user; doubles with each further failure'),
            maxDelayMs: z.number().int().nonnegative().default(8_000).describe('the answer delay never grows past this'),
          })
          .strict()
          .prefault({})
          .describe('brute-force protection for SMTP AUTH (failures are logged for fail2ban too)'),
        sending: SendingLimitSchema.prefault({}).describe('per authenticated user: a leaked password must not burn the IP\'s reputation'),
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
        maxRecipientsPerTransaction: z
          .number()
          .int()
          .positive()
          .default(100)
          .describe('recipients named in one outbound transaction; more go in the next one (100: what RFC 5321 asks every server to take)'),
        connectTimeoutMs: z.number().int().positive().default(30_000).describe('TCP connect timeout per address'),
        commandTimeoutMs: z.number().int().positive().default(300_000).describe('wait this long for each reply of a remote server'),
        retry: z
          .object({
            minBackoffMs: z.number().int().positive().default(300_000).describe('first retry after this long (Postfix: 300 s)'),
            maxBackoffMs: z.number().int().positive().default(4_000_000).describe('retry interval never grows past this (Postfix: 4000 s)'),
            maxQueueLifetimeMs: z.number().int().positive().default(5 * 24 * 3600_000).describe('give up and bounce after this long in the queue (Postfix: 5 days)'),
            delayWarningAfterMs: z
              .number()
              .int()
              .nonnegative()
              .default(4 * 3600_000)
              .describe('tell the sender once (a DSN with Action: delayed) when a message is still undelivered after this long; 0: never (as Postfix by default)'),
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
        mtaSts: z
          .object({
            enabled: z.boolean().default(true).describe('apply the MTA-STS policies (RFC 8461) of destination domains: with mode enforce, only their listed MX hosts over verified TLS'),
            cacheDir: z.string().optional().describe('where fetched policies are kept across restarts (default <paths.state>/mta-sts)'),
          })
          .strict()
          .prefault({})
          .describe('MTA-STS for MX delivery; without a policy, STARTTLS stays opportunistic'),
        tlsReports: z
          .object({
            enabled: z.boolean().default(true).describe('count TLS sessions to domains with an MTA-STS policy, per domain and day (RFC 8460 report shape)'),
            dir: z.string().optional().describe('where the daily records are kept (default <paths.state>/tls-reports)'),
            send: z
              .boolean()
              .default(false)
              .describe("send each finished UTC day's report to the rua of the domain's _smtp._tls record (RFC 8460): an email to its mailto: addresses, an HTTPS POST to its https: URIs; needs a DKIM key for the domain of `from`"),
            from: z
              .string()
              .regex(/^[^\s@<>]+@[^\s@<>]+$/, 'an address like tlsrpt@example.com')
              .optional()
              .describe('From address of the reports (default noreply-tlsrpt@<hostname>); RFC 8460 requires them to be DKIM-signed by its domain'),
          })
          .strict()
          .prefault({})
          .describe('TLS reporting records of outbound sessions'),
      })
      .strict()
      .prefault({})
      .describe('sending mail on'),
    dns: z
      .object({
        servers: z
          .array(z.string().min(1))
          .default([])
          .describe('resolvers for MX/A/AAAA and blocklist lookups as ip or ip:port; empty uses the system resolver'),
      })
      .strict()
      .prefault({})
      .describe('name resolution for delivery'),
    inbound: z
      .object({
        authentication: z
          .boolean()
          .default(true)
          .describe('check SPF, DKIM, DMARC and ARC of mail from other servers on mx listeners and record the results in an Authentication-Results header (clients in relay.networks and authenticated users are not checked)'),
        dmarcRejectPolicy: dmarcRejectPolicy.default('refuse'),
        dnsbl: z
          .array(
            z.union([
              dnsZone,
              z
                .object({
                  zone: dnsZone,
                  codes: z
                    .array(z.string().regex(/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/, 'an answer in 127.0.0.0/8 such as 127.0.0.2'))
                    .min(1)
                    .describe('the answers that mean "listed" (default: any in 127.0.0.0/8 but the error codes 127.255.255.x)'),
                })
                .strict(),
            ]),
          )
          .default([])
          .describe('DNS blocklists such as zen.spamhaus.org, asked about each client of an mx listener: a listed client gets 554 5.7.1 for every recipient but postmaster and abuse (relay.networks are not asked); ask them through a resolver of your own (dns.servers), as lists refuse public ones'),
      })
      .strict()
      .prefault({})
      .describe('checks of mail arriving from the Internet'),
    dkim: z
      .object({
        keys: z
          .array(DkimKeySchema)
          .default([])
          .describe('signing keys; two keys of one domain (RSA and Ed25519) sign each message twice (RFC 8463)'),
      })
      .strict()
      .prefault({})
      .superRefine((dkim, ctx) => {
        const seen = new Set<string>();
        dkim.keys.forEach((key, index) => {
          const name = `${key.selector}._domainkey.${key.domain}`.toLowerCase();
          if (seen.has(name)) ctx.addIssue({ code: 'custom', path: ['keys', index, 'selector'], message: `${name} is listed twice` });
          seen.add(name);
        });
      })
      .describe('DKIM signing of mail sent on (not of mail stored in local Maildirs)'),
    doctor: DoctorSettingsSchema,
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
  .strict()
  .superRefine((config, ctx) => {
    // An alias is applied once per delivery attempt: a forward to this server's own
    // domains must name a mailbox there, or mail would go round between aliases.
    config.domains.forEach((domain, d) => {
      for (const [from, to] of Object.entries(domain.aliases)) {
        (typeof to === 'string' ? [to] : to).forEach((target, i) => {
          if (!target.includes('@')) return;
          const targetDomain = domainOf(target.trim());
          const path = ['domains', d, 'aliases', from, ...(typeof to === 'string' ? [] : [i])];
          if (targetDomain === domain.name.toLowerCase()) {
            ctx.addIssue({ code: 'custom', path, message: `name the mailbox (${localPartOf(target.trim())}), not an address of this domain` });
            return;
          }
          const local = config.domains.find((other) => other.name.toLowerCase() === targetDomain);
          if (local && aliasExpands(local, localPartOf(target.trim()))) {
            ctx.addIssue({ code: 'custom', path, message: `${target.trim()} is an alias of this server that lists or forwards again: name its mailboxes or addresses here` });
          }
        });
      }
    });
    // RFC 8460 5.3: a TLS report without a DKIM signature of its domain is ignored
    const { send, from } = config.delivery.tlsReports;
    if (!send) return;
    const domain = tlsReportFrom(config).split('@').pop()!.toLowerCase();
    const signed = config.dkim.keys.some((key) => domain === key.domain.toLowerCase() || domain.endsWith(`.${key.domain.toLowerCase()}`));
    if (!signed) {
      ctx.addIssue({
        code: 'custom',
        path: ['delivery', 'tlsReports', from === undefined ? 'send' : 'from'],
        message: `TLS reports must be DKIM-signed (RFC 8460), and no dkim.keys entry signs mail from ${domain}: add a key for it or set delivery.tlsReports.from to an address of a signed domain`,
      });
    }
  });

export type RelayConfig = z.output<typeof RelayConfigSchema>;
export type RelayConfigInput = z.input<typeof RelayConfigSchema>;
export type ListenerConfig = z.output<typeof ListenerSchema>;
export type DomainConfig = z.output<typeof DomainSchema>;
export type UserConfig = z.output<typeof UserSchema>;
export type NextHop = z.output<typeof NextHopSchema>;
export type DkimKeyConfig = z.output<typeof DkimKeySchema>;
