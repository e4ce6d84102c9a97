/**
 * The one module that reads a customer's stack config (Pulumi namespace `ownrelay`).
 *
 * Contract: `parseStackSettings` returns a complete, validated `StackSettings` or
 * throws a `StackConfigError` listing every problem, one line each, as
 * `ownrelay:<key>: <what was expected>`. The `relay` overrides are merged into the
 * relay config the infra renders and checked with the relay's own schema, so a bad
 * relay setting fails `pulumi preview` with the relay's message. On a real deploy,
 * placeholder values (example.com, .test, example SSH keys) are refused.
 *
 * MTA-STS is published (the `_mta-sts` TXT and `mta-sts.<domain>` address records,
 * the policy served by node 0 on port 443) only when the relay gets a
 * certificate senders trust from an ACME CA: `http01: true`, or a `relay.tls.acme`
 * override (DNS-01). A policy behind a self-signed certificate cannot be fetched
 * (RFC 8461 3.3), so publishing its id would only make senders report failures.
 */
import * as pulumi from '@pulumi/pulumi';
import ipaddr from 'ipaddr.js';
import { z } from 'zod';
import { ConfigError } from '../server/config/load';
import { isForwardAddress } from '../server/delivery/local-mailboxes';
import { domainOf } from '../server/queue/envelope';
import type { RelayConfig } from '../server/config/schema';
import { renderRelayConfig, type RelayConfigRenderInput } from './render/relay-config';
import { mailtoAddress, nodeHostnames, type DnsIdentityInput, type MailNode } from './render/dns-records';

export class StackConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid stack config:\n${problems.map((p) => `  ${p}`).join('\n')}`);
    this.name = 'StackConfigError';
  }
}

const dnsName = z
  .string()
  .transform((s) => s.toLowerCase())
  .pipe(z.string().regex(/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$/, 'expected a fully qualified DNS name such as acme.org'));

const mailtoUri = z.string().regex(/^mailto:[\x21-\x2b\x2d-\x3a\x3c-\x3f\x41-\x7e]+@[a-zA-Z0-9.-]+(![0-9]+[kmgt]?)?$/, 'expected a mailto: URI such as mailto:dmarc@acme.org');
const dkimSelector = z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'expected a DNS label such as ownrelay1');

const SSH_KEY_TYPES = ['ssh-ed25519', 'ssh-rsa', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521', 'sk-ssh-ed25519@openssh.com', 'sk-ecdsa-sha2-nistp256@openssh.com'];
const sshKeyLine = new RegExp(`^(${SSH_KEY_TYPES.map((t) => t.replace(/\./g, '\\.')).join('|')}) AAAA[A-Za-z0-9+/]+={0,3}( [^\\r\\n]*)?$`);

/** A CIDR in canonical form (host bits zero); /0 is refused: SSH is never open to the world. */
function cidrProblem(text: string): string | undefined {
  if (!text.includes('/') || !ipaddr.isValidCIDR(text)) return 'expected a CIDR range such as 203.0.113.0/24 or 2001:db8::/48';
  const [address, bits] = ipaddr.parseCIDR(text);
  if (bits === 0) return 'SSH must not be open to the whole Internet (0.0.0.0/0 or ::/0): list the admins\' own networks, and use SSM Session Manager from elsewhere';
  const network = address.kind() === 'ipv4' ? ipaddr.IPv4.networkAddressFromCIDR(text) : ipaddr.IPv6.networkAddressFromCIDR(text);
  if (network.toString() !== address.toString()) return `expected the network address of the range: ${network.toString()}/${bits}`;
  return undefined;
}

const StackSchema = z
  .object({
    domains: z.array(dnsName).min(1, 'expected at least one domain; the first is the primary'),
    hostname: dnsName.optional(),
    dns: z.discriminatedUnion('mode', [
      z
        .object({ mode: z.literal('route53'), zoneId: z.string().regex(/^Z[A-Z0-9]{1,31}$/, 'expected a Route 53 hosted zone id such as Z0123456789ABC').optional(), zoneName: dnsName.optional() })
        .strict()
        .refine((dns) => dns.zoneId !== undefined || dns.zoneName !== undefined, 'expected zoneId or zoneName with mode route53 (or mode manual to print the records instead)'),
      z.object({ mode: z.literal('manual') }).strict(),
    ]),
    region: z.string().regex(/^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]+$/, 'expected an AWS region such as eu-west-1').default('eu-west-1'),
    instanceType: z.string().regex(/^[a-z0-9-]+\.[a-z0-9]+$/, 'expected an EC2 instance type such as t3.small').default('t3.small'),
    ami: z.string({ error: 'expected a pinned AMI id (ami-...); it is never looked up at deploy, so a new image cannot replace the server by surprise' }).regex(/^ami-[0-9a-f]{8,17}$/, 'expected an AMI id such as ami-0123456789abcdef0'),
    adminSshKeys: z.array(z.string().regex(sshKeyLine, 'expected one OpenSSH public key line such as "ssh-ed25519 AAAA... alice@laptop"')).min(1, 'expected at least one admin SSH public key'),
    adminCidrs: z
      .array(z.string().superRefine((text, ctx) => {
        const problem = cidrProblem(text);
        if (problem) ctx.addIssue({ code: 'custom', message: problem });
      }))
      .min(1, 'expected at least one admin network in CIDR form; SSH never defaults to 0.0.0.0/0'),
    nodes: z.number().int().min(1).max(10).default(1),
    dkimSelector: dkimSelector.default('ownrelay1'),
    // selectors of earlier keys: still published (mail signed before the switch keeps verifying), no longer used to sign
    dkimRetiredSelectors: z.array(dkimSelector).default([]),
    dmarc: z.object({ policy: z.enum(['none', 'quarantine', 'reject']).default('quarantine'), rua: mailtoUri.optional() }).strict().prefault({}),
    mtaSts: z.object({ mode: z.enum(['testing', 'enforce']).default('testing'), maxAgeSeconds: z.number().int().min(1).max(31_557_600).default(604_800) }).strict().prefault({}),
    // where postmaster@ and abuse@ of every domain are forwarded (complaints, TLS and DMARC reports); unset: kept in Maildirs on the server
    roleMailTo: z.string().refine(isForwardAddress, 'expected an address such as ops@acme-corp.example').optional(),
    tlsRptRua: z.union([mailtoUri, z.string().regex(/^https:\/\/[^\s,;!]+$/)], { error: 'expected a mailto: or https: URI' }).optional(),
    http01: z.boolean().default(false),
    // contact address of the ACME account (expiry notices); required with http01
    acmeEmail: z.email('expected an email address such as hostmaster@acme.org').optional(),
    // the ACME directory; default Let's Encrypt production (use its staging directory to try things out)
    acmeDirectoryUrl: z.url({ protocol: /^https$/, error: 'expected an https:// URL of an ACME directory' }).optional(),
    spoolVolumeGiB: z.number().int().min(1).max(16_384).default(20),
    useDefaultVpc: z.boolean().default(false),
    relay: z.record(z.string(), z.unknown()).default({}),
    // the private key of one of adminSshKeys, for the deploy over SSH (set it with `pulumi config set --secret`);
    // without it the hosts are created and the relay is deployed by hand
    deployPrivateKey: z.string().regex(/-----BEGIN [A-Z ]*PRIVATE KEY-----/, 'expected a PEM or OpenSSH private key').optional(),
    // the relay bundle to deploy, relative to the project root (`npm run bundle` builds it)
    bundlePath: z.string().default('dist/ownrelay.js'),
  })
  .strict()
  .superRefine((stack, ctx) => {
    const roleDomain = stack.roleMailTo === undefined ? undefined : domainOf(stack.roleMailTo);
    if (roleDomain !== undefined && stack.domains.includes(roleDomain)) {
      ctx.addIssue({ code: 'custom', path: ['roleMailTo'], message: `expected an address at a domain this server does not receive for: mail for ${roleDomain} comes back to this server` });
    }
    stack.dkimRetiredSelectors.forEach((selector, i) => {
      if (selector === stack.dkimSelector) ctx.addIssue({ code: 'custom', path: ['dkimRetiredSelectors', i], message: `expected an earlier selector, not the current one (ownrelay:dkimSelector is ${selector})` });
      else if (stack.dkimRetiredSelectors.indexOf(selector) !== i) ctx.addIssue({ code: 'custom', path: ['dkimRetiredSelectors', i], message: `${selector} is listed twice` });
    });
  });

type ParsedStack = z.output<typeof StackSchema>;

export type StackSettings = Omit<ParsedStack, 'hostname'> & {
  /** the mail host name (node 0); default mail.<first domain> */
  hostname: string;
  /** the relay config that the stack's overrides produce, validated by the relay's schema */
  relayConfig: RelayConfig;
  /** its YAML text as shipped to the server; may carry credentials, so treat it as a secret */
  relayYaml: string;
  /** whether MTA-STS is published and served (see the module comment) */
  mtaStsPublished: boolean;
};

/** What a stack puts into a node's relay config (renderRelayConfig's input). */
type RelayConfigSource = Pick<ParsedStack, 'domains' | 'dkimSelector' | 'relay' | 'http01' | 'acmeEmail' | 'acmeDirectoryUrl' | 'mtaSts' | 'nodes' | 'useDefaultVpc' | 'roleMailTo' | 'dmarc' | 'tlsRptRua'> & { hostname: string; mtaStsPublished: boolean };

/**
 * The input of a node's relay config. `deployed`: what the deploy ships (stack
 * overrides, DKIM keys, certificate and MTA-STS settings). `first-boot`: what the
 * user-data carries, readable through the instance metadata and limited to 16 KB,
 * so only the base: no overrides (they may hold credentials), no DKIM keys (the
 * relay refuses to start without their files, which arrive with the first deploy)
 * and no certificate settings. The relay never runs on it: the unit waits for the
 * bundle, which the deploy installs together with the deployed config.
 */
export function relayConfigInput(s: RelayConfigSource, nodeHostname: string, kind: 'deployed' | 'first-boot', publicAddresses: string[] = []): RelayConfigRenderInput {
  const base: RelayConfigRenderInput = {
    hostname: nodeHostname,
    domains: s.domains,
    reportAddresses: reportAddresses(s),
    relay: {},
    // hosts in our own VPC have an IPv6 address and AAAA records (RelayNetwork.hasIpv6): listen on it too
    listenIpv6: !s.useDefaultVpc,
  };
  if (kind === 'first-boot') return base;
  return {
    ...base,
    relay: s.relay,
    dkimSelector: s.dkimSelector,
    ...(s.roleMailTo === undefined ? {} : { roleMailTo: s.roleMailTo }),
    ...(publicAddresses.length > 0 ? { publicAddresses } : {}),
    ...(s.http01 && s.acmeEmail !== undefined ? { acme: { email: s.acmeEmail, ...(s.acmeDirectoryUrl === undefined ? {} : { directoryUrl: s.acmeDirectoryUrl }) } } : {}),
    ...(servesMtaStsPolicy(s, nodeHostname) ? { mtaStsPolicy: { mode: s.mtaSts.mode, maxAgeSeconds: s.mtaSts.maxAgeSeconds, mx: nodeHostnames(s.hostname, s.nodes) } } : {}),
  };
}

/** The addresses of the DMARC and TLS-RPT `rua=mailto:` URIs the stack publishes (without `mailto:` and a `!size` limit). */
function reportAddresses(s: Pick<ParsedStack, 'dmarc' | 'tlsRptRua'>): string[] {
  return [s.dmarc.rua, s.tlsRptRua].flatMap((uri) => {
    const address = uri === undefined ? undefined : mailtoAddress(uri);
    return address === undefined ? [] : [address];
  });
}

/**
 * Whether this node serves the MTA-STS policy (and opens port 443): node 0 only,
 * the one `mta-sts.<domain>` points to. Its certificate then covers those names,
 * which an HTTP-01 challenge can only prove on the node the name resolves to.
 * Senders cache the policy for max_age and keep a cached one when a refresh fails.
 */
export function servesMtaStsPolicy(s: { mtaStsPublished: boolean; hostname: string }, nodeHostname: string): boolean {
  return s.mtaStsPublished && nodeHostname === s.hostname;
}

/** ACME from the stack (http01) or from a `relay.tls.acme` override. */
function relayGetsAcmeCertificate(parsed: ParsedStack): boolean {
  const tls = parsed.relay.tls;
  return parsed.http01 || (typeof tls === 'object' && tls !== null && typeof (tls as Record<string, unknown>).acme === 'object' && (tls as Record<string, unknown>).acme !== null);
}

/** The keys of the `ownrelay` namespace, with how Pulumi stores them (string, or JSON for the rest). */
export const STACK_KEYS: Record<keyof ParsedStack, 'string' | 'object'> = {
  domains: 'object', hostname: 'string', dns: 'object', region: 'string', instanceType: 'string', ami: 'string',
  adminSshKeys: 'object', adminCidrs: 'object', nodes: 'object', dkimSelector: 'string', dkimRetiredSelectors: 'object', dmarc: 'object',
  mtaSts: 'object', roleMailTo: 'string', tlsRptRua: 'string', http01: 'object', acmeEmail: 'string', acmeDirectoryUrl: 'string', spoolVolumeGiB: 'object', useDefaultVpc: 'object', relay: 'object',
  deployPrivateKey: 'string', bundlePath: 'string',
};

const PLACEHOLDER_DOMAIN = /(^|\.)(example\.(com|net|org))$|\.(example|invalid|test|localhost)$|^localhost$/;

export function parseStackSettings(raw: Record<string, unknown>, opts: { realDeploy: boolean }): StackSettings {
  const result = StackSchema.safeParse(raw);
  if (!result.success) throw new StackConfigError(result.error.issues.flatMap((issue) => describeIssue(issue, raw)));
  const parsed = result.data;
  const hostname = parsed.hostname ?? `mail.${parsed.domains[0] ?? ''}`;
  const problems: string[] = [];
  const problem = (key: string, text: string): void => void problems.push(`ownrelay:${key}: ${text}`);

  if (parsed.dns.mode === 'route53') {
    const { zoneName } = parsed.dns;
    if (zoneName !== undefined) {
      for (const name of [...parsed.domains, hostname]) {
        if (name !== zoneName && !name.endsWith(`.${zoneName}`)) problem('dns.zoneName', `expected a zone that contains ${name}; use mode manual for names outside ${zoneName}`);
      }
    }
  }
  if (new Set(parsed.domains).size !== parsed.domains.length) problem('domains', 'expected each domain once');
  if (parsed.http01 && parsed.acmeEmail === undefined) {
    problem('acmeEmail', 'required when http01 is true: the contact address of the ACME account (set it with `pulumi config set ownrelay:acmeEmail hostmaster@<domain>`)');
  }
  if (!parsed.http01 && (parsed.acmeEmail !== undefined || parsed.acmeDirectoryUrl !== undefined)) {
    problem(parsed.acmeEmail !== undefined ? 'acmeEmail' : 'acmeDirectoryUrl', 'only used with http01: true (set ownrelay:http01 to get the certificate by ACME)');
  }
  const mtaStsPublished = relayGetsAcmeCertificate(parsed);
  if (opts.realDeploy) {
    parsed.domains.forEach((domain, i) => {
      if (PLACEHOLDER_DOMAIN.test(domain)) problem(`domains.${i}`, `expected a real domain, not the placeholder ${domain}`);
    });
    if (PLACEHOLDER_DOMAIN.test(hostname)) problem('hostname', `expected a real host name, not the placeholder ${hostname}`);
    const roleDomain = parsed.roleMailTo === undefined ? undefined : domainOf(parsed.roleMailTo);
    if (roleDomain !== undefined && PLACEHOLDER_DOMAIN.test(roleDomain)) problem('roleMailTo', `expected a real address, not one at the placeholder ${roleDomain}`);
    parsed.adminSshKeys.forEach((key, i) => {
      if (key.includes('AAAAexample')) problem(`adminSshKeys.${i}`, 'expected a real SSH public key, not the example one');
    });
  }

  let relayConfig: RelayConfig | undefined;
  let relayYaml = '';
  try {
    ({ config: relayConfig, yaml: relayYaml } = renderRelayConfig(relayConfigInput({ ...parsed, hostname, mtaStsPublished }, hostname, 'deployed')));
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const text of err.problems) {
      const withoutLine = text.replace(/^line \d+: /, '');
      const match = /^([\w.]+): (.*)$/.exec(withoutLine);
      problems.push(match ? `ownrelay:relay.${match[1]}: ${match[2]}` : `ownrelay:relay: ${withoutLine}`);
    }
  }
  if (relayConfig) {
    if (relayConfig.hostname !== hostname) problem('relay.hostname', `expected ${hostname} (the PTR name) or nothing; set ownrelay:hostname to change it`);
    const served = new Set(relayConfig.domains.map((d) => d.name.toLowerCase()));
    for (const domain of parsed.domains) {
      if (!served.has(domain)) problem('relay.domains', `expected an entry for ${domain}: its MX points to this server`);
    }
  }
  if (problems.length > 0 || !relayConfig) throw new StackConfigError(problems);
  return { ...parsed, hostname, relayConfig, relayYaml, mtaStsPublished };
}

/**
 * A real deploy unless the stack's name starts with `test` or `dev`. Previews of a
 * real stack are checked as strictly as `pulumi up` (a placeholder should fail the
 * preview, not the deploy), so this does not depend on pulumi.runtime.isDryRun().
 */
export function isRealDeployStack(stackName: string): boolean {
  return !/^(test|dev)/.test(stackName);
}

/** Reads and validates the current stack's `ownrelay:*` config. */
export function readStackSettings(): StackSettings {
  const config = new pulumi.Config('ownrelay');
  const raw: Record<string, unknown> = {};
  for (const [key, kind] of Object.entries(STACK_KEYS)) {
    const value = kind === 'string' ? config.get(key) : config.getObject<unknown>(key);
    if (value !== undefined) raw[key] = value;
  }
  return parseStackSettings(raw, { realDeploy: isRealDeployStack(pulumi.getStack()) });
}

/**
 * The `ownrelay:*` entries of a stack file's `config:` map, read the way Pulumi
 * reads them: the prefix dropped, and non-string keys that hold a string (as
 * `pulumi config set` stores them) parsed as JSON like `Config.getObject` does.
 */
export function rawSettingsFromStackFile(config: Record<string, unknown>): Record<string, unknown> {
  const raw: Record<string, unknown> = {};
  for (const [fullKey, value] of Object.entries(config)) {
    if (!fullKey.startsWith('ownrelay:')) continue;
    const key = fullKey.slice('ownrelay:'.length);
    const kind = (STACK_KEYS as Record<string, string | undefined>)[key];
    raw[key] = kind === 'object' && typeof value === 'string' ? parseJsonOr(value) : value;
  }
  return raw;
}

function parseJsonOr(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

function describeIssue(issue: z.core.$ZodIssue, raw: Record<string, unknown>): string[] {
  const path = issue.path.map(String);
  if (issue.code === 'unrecognized_keys') return issue.keys.map((k) => `ownrelay:${[...path, k].join('.')}: unknown key`);
  const key = path.length > 0 ? path.join('.') : '(top level)';
  const missing = valueAt(raw, path) === undefined;
  return [`ownrelay:${key}: ${missing ? 'required: ' : ''}${describeExpected(issue, missing)}`];
}

function describeExpected(issue: z.core.$ZodIssue, missing: boolean): string {
  if (issue.message.startsWith('expected') || issue.code === 'custom') return issue.message;
  switch (issue.code) {
    case 'invalid_type':
      return missing ? `expected ${issue.expected}` : `expected ${issue.expected}, ${issue.message.slice(issue.message.indexOf('received'))}`;
    case 'invalid_value':
      return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'invalid_union':
      return 'expected mode "route53" (with zoneId or zoneName) or "manual"';
    case 'too_small':
      return `expected at least ${String(issue.minimum)}`;
    case 'too_big':
      return `expected at most ${String(issue.maximum)}`;
    default:
      return `expected ${issue.message.replace(/^Invalid input: /, '')}`;
  }
}

function valueAt(root: unknown, path: string[]): unknown {
  let value = root;
  for (const key of path) {
    if (typeof value !== 'object' || value === null) return undefined;
    value = (value as Record<string, unknown>)[key];
  }
  return value;
}

/**
 * The DNS identity the stack publishes, for the given nodes and DKIM public keys:
 * the current selector's, and one per retired selector in the order of
 * `dkimRetiredSelectors` (the current one stands in for any not given).
 */
export function dnsIdentity(settings: StackSettings, nodes: MailNode[], dkimPublicKeyPem: string, retiredDkimPublicKeyPems: string[] = []): DnsIdentityInput {
  return {
    domains: settings.domains,
    hostname: settings.hostname,
    nodes,
    dkim: { selector: settings.dkimSelector, publicKeyPem: dkimPublicKeyPem },
    ...(settings.dkimRetiredSelectors.length > 0
      ? { retiredDkim: settings.dkimRetiredSelectors.map((selector, i) => ({ selector, publicKeyPem: retiredDkimPublicKeyPems[i] ?? dkimPublicKeyPem })) }
      : {}),
    dmarc: settings.dmarc,
    ...(settings.mtaStsPublished ? { mtaSts: settings.mtaSts } : {}),
    ...(settings.tlsRptRua === undefined ? {} : { tlsRptRua: settings.tlsRptRua }),
  };
}
