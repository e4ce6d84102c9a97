/**
 * The relay's production config file (/etc/ownrelay/ownrelay.yaml), rendered from
 * the stack config: public listeners on 25, 587 (STARTTLS) and 465 (implicit TLS),
 * the customer's domains delivered to Maildirs, the spool on its own volume, then
 * the stack's `relay` overrides deep-merged on top.
 *
 * The base resolves through the host's own unbound first (HOST_RESOLVERS).
 *
 * What the stack adds beyond the base, each only when asked for:
 * - `dkim.keys`: one key per domain, the files the deploy step installs under
 *   DKIM_KEY_DIR. The relay refuses to start when a configured key file is
 *   missing, so the first-boot config (cloud-init user-data, written before any
 *   deploy, and never carrying a key) is rendered without `dkimSelector` and has
 *   no dkim section; the deployed config, shipped together with the key files,
 *   has it.
 * - `tls.acme`: the certificate from an ACME CA with HTTP-01 challenges on port 80.
 * - `tls.mtaStsPolicy`: the MTA-STS policy served on port 443 (by node 0), with
 *   the same mode, max_age and MX hosts as the policy whose id the DNS records publish.
 *
 * Contract: pure (no Pulumi, no I/O); the returned YAML text is exactly what was
 * validated with the relay's own `parseConfig`, so a bad override fails here with
 * the relay's messages (a ConfigError), never on the server. The text may carry
 * credentials from the overrides: callers treat it as a secret.
 */
import { stringify } from 'yaml';
import { parseConfig } from '../../server/config/load';
import type { RelayConfig } from '../../server/config/schema';
import { baseLocalPart, isPlainMailboxName } from '../../server/delivery/local-mailboxes';
import { domainOf, localPartOf } from '../../server/queue/envelope';

/** Where the relay config lives on the server. */
export const RELAY_CONFIG_PATH = '/etc/ownrelay/ownrelay.yaml';

/** Paths on the server; the spool is the mount point of the separate spool volume. */
export const SERVER_PATHS = {
  spool: '/var/spool/ownrelay',
  mail: '/var/lib/ownrelay/mail',
  state: '/var/lib/ownrelay/state',
} as const;

/** Where the deploy step installs the DKIM private keys (0640 root:ownrelay). */
export const DKIM_KEY_DIR = '/etc/ownrelay/dkim';

/** The file name of a domain's DKIM key in DKIM_KEY_DIR (and in the deploy's staging directory). */
export function dkimKeyFileName(domain: string, selector: string): string {
  const name = `${domain.toLowerCase()}.${selector}.pem`;
  if (!/^[a-z0-9][a-z0-9.-]*\.pem$/.test(name)) throw new Error(`dkimKeyFileName: ${JSON.stringify(name)} is not a safe file name`);
  return name;
}

/**
 * The relay's resolvers on the server (`dns.servers`): first the host's own
 * unbound (a HOST_PACKAGES package, listening on loopback only), a recursive
 * resolver with a cache of its own, which DNS blocklists require (they refuse
 * queries from shared resolvers, AWS's included); then AWS's resolver, reachable
 * from every VPC, for when unbound does not answer (on a host set up before it
 * was installed, a refused port moves on at once).
 */
export const HOST_RESOLVERS: readonly string[] = Object.freeze(['127.0.0.1', '169.254.169.253']);

/** Mailboxes every domain gets unless overridden (RFC 2142 and RFC 5321 want them). */
export const DEFAULT_MAILBOXES = ['postmaster', 'abuse'];

/** Names the rendered text in ConfigError messages. */
export const RENDERED_SOURCE = '<relay config rendered from the stack config>';

export interface RelayConfigRenderInput {
  hostname: string;
  domains: string[];
  /**
   * Selector of the DKIM key the deploy ships: `dkim.keys` gets one entry per
   * domain, its file at DKIM_KEY_DIR/<domain>.<selector>.pem. Omit it for the
   * first-boot config, which must not name key files that are not there yet.
   */
  dkimSelector?: string;
  /** Get the certificate by ACME with HTTP-01 challenges (port 80). */
  acme?: { email: string; directoryUrl?: string };
  /** Serve the MTA-STS policy on port 443; the same values as the published policy. */
  mtaStsPolicy?: { mode: 'testing' | 'enforce'; maxAgeSeconds: number; mx: string[] };
  /** stack overrides (`ownrelay:relay`): objects merge key by key, arrays and scalars replace */
  relay: Record<string, unknown>;
  /** listen on `::` (IPv6 and, on Linux, IPv4 too) instead of 0.0.0.0, SMTP and HTTP(S) alike; for nodes with an AAAA record */
  listenIpv6?: boolean;
  /**
   * The node's public addresses (its Elastic IP, and IPv6 address if any), written
   * to `doctor.publicAddresses`: an Elastic IP is not on any interface of the host,
   * so `ownrelay doctor` on the server would not find it otherwise.
   */
  publicAddresses?: string[];
  /** Forward postmaster@ and abuse@ of every domain here (aliases), instead of keeping them in Maildirs on the server. */
  roleMailTo?: string;
  /**
   * Addresses the domains' DNS records ask reports to be sent to (DMARC and TLS-RPT
   * `rua=mailto:`). One at a domain of this server is accepted there as a mailbox
   * of its own (and forwarded to roleMailTo with the role addresses), so reports are
   * not refused as mail for an unknown user.
   */
  reportAddresses?: string[];
}

export function renderRelayConfig(input: RelayConfigRenderInput): { yaml: string; config: RelayConfig } {
  const merged = deepMerge(baseConfig(input), input.relay);
  // short: the first-boot copy of this text shares EC2's 16 KB of user-data with up to ten admin keys
  const header = [
    `# ownrelay config for ${input.hostname}, rendered by the infra program`,
    '# (infra/render/relay-config.ts) from the stack config. Edits here are lost at',
    '# the next deploy: change `ownrelay:relay` in Pulumi.<stack>.yaml, then `pulumi up`.',
  ];
  const yaml = `${header.join('\n')}\n${stringify(merged, { lineWidth: 0 })}`;
  return { yaml, config: parseConfig(yaml, RENDERED_SOURCE) };
}

function baseConfig(input: RelayConfigRenderInput): Record<string, unknown> {
  const address = input.listenIpv6 === true ? '::' : '0.0.0.0';
  const tls = tlsSection(input, address);
  const selector = input.dkimSelector;
  return {
    hostname: input.hostname,
    listeners: [
      { role: 'mx', address, port: 25, tls: 'starttls' },
      { role: 'submission', address, port: 587, tls: 'starttls' },
      { role: 'submission', address, port: 465, tls: 'implicit' },
    ],
    domains: input.domains.map((name) => {
      const mailboxes = [...new Set([...DEFAULT_MAILBOXES, ...reportMailboxes(name, input.reportAddresses ?? [])])];
      return {
        name,
        delivery: 'maildir',
        mailboxes,
        ...(input.roleMailTo === undefined ? {} : { aliases: Object.fromEntries(mailboxes.map((mailbox) => [mailbox, input.roleMailTo])) }),
      };
    }),
    paths: { ...SERVER_PATHS },
    dns: { servers: [...HOST_RESOLVERS] },
    ...(tls === undefined ? {} : { tls }),
    ...(selector === undefined ? {} : { dkim: { keys: input.domains.map((domain) => ({ domain, selector, privateKeyFile: dkimKeyPath(domain, selector) })) } }),
    ...(input.publicAddresses?.length ? { doctor: { publicAddresses: input.publicAddresses } } : {}),
  };
}

/** The mailboxes of `domain` that report addresses name (a "+detail" dropped, as the relay does). */
function reportMailboxes(domain: string, addresses: readonly string[]): string[] {
  return addresses.flatMap((address) => {
    if (domainOf(address) !== domain.toLowerCase()) return [];
    const mailbox = baseLocalPart(localPartOf(address));
    return isPlainMailboxName(mailbox) ? [mailbox] : [];
  });
}

/** Where a domain's DKIM key is on the server. */
export function dkimKeyPath(domain: string, selector: string): string {
  return `${DKIM_KEY_DIR}/${dkimKeyFileName(domain, selector)}`;
}

function tlsSection(input: RelayConfigRenderInput, address: string): Record<string, unknown> | undefined {
  if (input.acme === undefined && input.mtaStsPolicy === undefined) return undefined;
  const { acme, mtaStsPolicy } = input;
  return {
    ...(acme === undefined
      ? {}
      : { acme: { email: acme.email, challenge: 'http-01', http01: { address }, ...(acme.directoryUrl === undefined ? {} : { directoryUrl: acme.directoryUrl }) } }),
    ...(mtaStsPolicy === undefined
      ? {}
      : { mtaStsPolicy: { address, mode: mtaStsPolicy.mode, maxAgeSeconds: mtaStsPolicy.maxAgeSeconds, mx: [...mtaStsPolicy.mx] } }),
  };
}

/**
 * `override` on top of `base`: plain objects merge key by key; arrays, scalars and
 * null replace. Neither argument is modified.
 */
export function deepMerge(base: Record<string, unknown>, override: Record<string, unknown>): Record<string, unknown> {
  const result: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(override)) {
    const current = result[key];
    result[key] = isPlainObject(current) && isPlainObject(value) ? deepMerge(current, value) : value;
  }
  return result;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
