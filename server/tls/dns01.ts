/**
 * The seam for ACME DNS-01 challenges: something that can publish and withdraw
 * the TXT record `_acme-challenge.<name>`. The ACME manager calls `publish` and
 * waits for it to resolve before it asks the CA to validate, so a provider
 * resolves only once the record is served by the zone's name servers (Route 53:
 * the change is INSYNC).
 *
 * Providers: `route53` (tls.acme.dns01.provider, route53-dns01.ts). Others can
 * be passed in code.
 */
import type { Logger } from '../log/logger';

export interface Dns01Provider {
  /** Publishes TXT `value` at `recordName` (e.g. `_acme-challenge.mail.example.org`). */
  publish(recordName: string, value: string): Promise<void>;
  /** Withdraws what `publish` added (the same name and value). */
  withdraw(recordName: string, value: string): Promise<void>;
}

export interface Dns01ProviderConfig {
  provider: 'route53';
  hostedZoneId?: string;
}

/** The record name DNS-01 uses for `domain` (RFC 8555 8.4); a wildcard's `*.` is dropped. */
export function dns01RecordName(domain: string): string {
  return `_acme-challenge.${domain.replace(/^\*\./, '')}`;
}

export function createDns01Provider(config: Dns01ProviderConfig, logger: Logger): Dns01Provider {
  switch (config.provider) {
    case 'route53': {
      // loaded only when used: the AWS SDK is large and most relays never need it
      const { Route53Dns01Provider } = require('./route53-dns01') as typeof import('./route53-dns01');
      return Route53Dns01Provider.create(config, logger);
    }
  }
}
