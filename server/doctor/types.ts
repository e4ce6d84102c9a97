/**
 * The doctor's vocabulary: what a check gets (the server's identity and the ways to
 * reach DNS and the network) and what it answers (one result per check).
 *
 * Contract: a check never throws for something it finds wrong; it answers `fail`
 * with what is wrong in `detail` and what to do in `fix`. `warn` is for what needs a
 * look but does not stop mail (a p=none DMARC policy, a blocklist that would not
 * answer). The runner turns an unexpected exception into a `fail`.
 */
import type { RelayConfig } from '../config/schema';
import type { DoctorDns } from './dns-client';
import type { DoctorNet } from './net-client';

export type CheckStatus = 'pass' | 'fail' | 'warn';

/** per connection and per DNS query, unless told otherwise */
export const DEFAULT_TIMEOUT_MS = 10_000;

/** every check, in the order they are reported (the runner's CHECKS follow it) */
export const CHECK_IDS = ['mx', 'address', 'ptr', 'spf', 'dkim', 'dmarc', 'mta-sts', 'tls-rpt', 'role-addresses', 'certificate', 'outbound-25', 'blocklists', 'inbound-blocklists', 'open-relay'] as const;

export interface CheckResult {
  /** stable, kebab-case: what --skip takes and scripts match on */
  id: string;
  title: string;
  status: CheckStatus;
  /** what was found, one fact per line */
  detail: string;
  /** what to do about a fail or warn: the exact records or settings to change */
  fix?: string;
}

/** The server being checked, and the settings the checks read. */
export interface DoctorContext {
  /** the mail domain under test (the command's argument), lower case */
  domain: string;
  /** the server's host name (config.hostname), lower case */
  hostname: string;
  /** the server's public addresses, IPv4 first */
  ips: string[];
  config: RelayConfig;
  dns: DoctorDns;
  net: DoctorNet;
  /** the server's SMTP port that senders use (25), for the certificate and open-relay tests */
  smtpPort: number;
  /** per connection and per DNS query */
  timeoutMs: number;
}

export interface Check {
  id: string;
  title: string;
  run(context: DoctorContext): Promise<Omit<CheckResult, 'id' | 'title'>>;
}
