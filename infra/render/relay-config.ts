/**
 * The relay's production config file (/etc/ownrelay/ownrelay.yaml), rendered from
 * the stack config: public listeners on 25, 587 (STARTTLS) and 465 (implicit TLS),
 * the customer's domains delivered to Maildirs, the spool on its own volume, then
 * the stack's `relay` overrides deep-merged on top.
 *
 * Contract: pure (no Pulumi, no I/O); the returned YAML text is exactly what was
 * validated with the relay's own `parseConfig`, so a bad override fails here with
 * the relay's messages (a ConfigError), never on the server. The text may carry
 * credentials from the overrides: callers treat it as a secret.
 */
import { stringify } from 'yaml';
import { parseConfig } from '../../server/config/load';
import type { RelayConfig } from '../../server/config/schema';

/** Where the relay config lives on the server. */
export const RELAY_CONFIG_PATH = '/etc/ownrelay/ownrelay.yaml';

/** Paths on the server; the spool is the mount point of the separate spool volume. */
export const SERVER_PATHS = {
  spool: '/var/spool/ownrelay',
  mail: '/var/lib/ownrelay/mail',
  state: '/var/lib/ownrelay/state',
} as const;

/** Mailboxes every domain gets unless overridden (RFC 2142 and RFC 5321 want them). */
export const DEFAULT_MAILBOXES = ['postmaster', 'abuse'];

/** Names the rendered text in ConfigError messages. */
export const RENDERED_SOURCE = '<relay config rendered from the stack config>';

export interface RelayConfigRenderInput {
  hostname: string;
  domains: string[];
  /**
   * Selector of the DKIM key handed to the server. The relay's schema has no DKIM
   * setting yet, so it is recorded in the header comment only.
   */
  dkimSelector: string;
  /** stack overrides (`ownrelay:relay`): objects merge key by key, arrays and scalars replace */
  relay: Record<string, unknown>;
  /** listen on `::` (IPv6 and, on Linux, IPv4 too) instead of 0.0.0.0; for nodes with an AAAA record */
  listenIpv6?: boolean;
}

export function renderRelayConfig(input: RelayConfigRenderInput): { yaml: string; config: RelayConfig } {
  const merged = deepMerge(baseConfig(input), input.relay);
  const header = [
    `# ownrelay relay config for ${input.hostname}, rendered by the infra program`,
    '# (infra/render/relay-config.ts) from the stack config. Edits made here on the',
    '# server are replaced at the next deploy: change `ownrelay:relay` in the stack',
    '# config (Pulumi.<stack>.yaml) and run `pulumi up` instead.',
    `# DKIM selector: ${input.dkimSelector}`,
  ];
  const yaml = `${header.join('\n')}\n${stringify(merged, { lineWidth: 0 })}`;
  return { yaml, config: parseConfig(yaml, RENDERED_SOURCE) };
}

function baseConfig(input: RelayConfigRenderInput): Record<string, unknown> {
  const address = input.listenIpv6 === true ? '::' : '0.0.0.0';
  return {
    hostname: input.hostname,
    listeners: [
      { role: 'mx', address, port: 25, tls: 'starttls' },
      { role: 'submission', address, port: 587, tls: 'starttls' },
      { role: 'submission', address, port: 465, tls: 'implicit' },
    ],
    domains: input.domains.map((name) => ({ name, delivery: 'maildir', mailboxes: [...DEFAULT_MAILBOXES] })),
    paths: { ...SERVER_PATHS },
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
