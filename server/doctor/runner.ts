/**
 * Runs the doctor's checks against one mail domain and the server that sends
 * for it, and returns one result per check in a fixed order.
 *
 * Contract: `runDoctor` throws only for bad options (no address, an unknown
 * --skip id, a bad --connect-to); anything a check trips over becomes that
 * check's `fail`. `ok` is false exactly when some result is `fail`: warnings do
 * not fail a deploy.
 */
import net from 'node:net';
import type { RelayConfig } from '../config/schema';
import { addressCheck, mxCheck, ptrCheck } from './checks/address';
import { blocklistCheck, inboundBlocklistCheck } from './checks/blocklists';
import { certificateCheck } from './checks/certificate';
import { dkimCheck } from './checks/dkim';
import { mtaStsCheck } from './checks/mta-sts';
import { openRelayCheck } from './checks/open-relay';
import { roleAddressesCheck } from './checks/role-addresses';
import { outboundCheck } from './checks/outbound';
import { dmarcCheck, tlsRptCheck } from './checks/policy-records';
import { spfCheck } from './checks/spf';
import { DoctorDns, normalizeName } from './dns-client';
import { DoctorNet } from './net-client';
import { CHECK_IDS, DEFAULT_TIMEOUT_MS, type Check, type CheckResult, type DoctorContext } from './types';

export const CHECKS: readonly Check[] = [
  mxCheck,
  addressCheck,
  ptrCheck,
  spfCheck,
  dkimCheck,
  dmarcCheck,
  mtaStsCheck,
  tlsRptCheck,
  roleAddressesCheck,
  certificateCheck,
  outboundCheck,
  blocklistCheck,
  inboundBlocklistCheck,
  openRelayCheck,
];

if (CHECKS.map((c) => c.id).join() !== CHECK_IDS.join()) throw new Error('doctor: CHECKS and CHECK_IDS disagree');

const DOMAIN_NAME = /^(?=.{1,253}\.?$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.?$/;

export interface DoctorOptions {
  domain: string;
  config: RelayConfig;
  /** the server's public addresses */
  ips: string[];
  /** resolvers ("ip" or "ip:port"); default the config's dns.servers, else the system's */
  dnsServers?: string[];
  /** the port senders reach the server on; default 25 */
  smtpPort?: number;
  timeoutMs?: number;
  /** HOST:PORT:ADDRESS:PORT overrides for connections */
  connectTo?: string[];
  /** extra trusted CA certificates (PEM) for the server's and the MTA-STS host's certificates */
  trustedCa?: string[];
  /** check ids not to run */
  skip?: string[];
}

export interface DoctorReport {
  domain: string;
  hostname: string;
  ips: string[];
  resolvers: string;
  ok: boolean;
  results: CheckResult[];
  skipped: string[];
}

export async function runDoctor(options: DoctorOptions): Promise<DoctorReport> {
  const ids: readonly string[] = CHECK_IDS;
  const unknown = (options.skip ?? []).filter((id) => !ids.includes(id));
  if (unknown.length) throw new Error(`unknown check ${unknown.join(', ')} to skip; the checks are ${ids.join(', ')}`);
  if (!DOMAIN_NAME.test(options.domain)) throw new Error(`"${options.domain}" is not a domain name`);
  if (options.ips.length === 0) throw new Error('no public address to check: pass the server\'s addresses with --ip');
  const badIp = options.ips.find((ip) => net.isIP(ip) === 0);
  if (badIp !== undefined) throw new Error(`--ip ${badIp}: not an IP address`);

  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const dns = new DoctorDns(options.dnsServers ?? options.config.dns.servers, timeoutMs);
  const context: DoctorContext = {
    domain: normalizeName(options.domain),
    hostname: normalizeName(options.config.hostname),
    ips: [...new Set(options.ips)].sort((a, b) => net.isIP(a) - net.isIP(b)),
    config: options.config,
    dns,
    net: new DoctorNet(dns, timeoutMs, options.connectTo, options.trustedCa),
    smtpPort: options.smtpPort ?? 25,
    timeoutMs,
  };
  const skipped = ids.filter((id) => options.skip?.includes(id));
  const results = await Promise.all(CHECKS.filter((check) => !skipped.includes(check.id)).map((check) => runCheck(check, context)));
  return {
    domain: context.domain,
    hostname: context.hostname,
    ips: context.ips,
    resolvers: dns.describeServers(),
    ok: results.every((r) => r.status !== 'fail'),
    results,
    skipped,
  };
}

async function runCheck(check: Check, context: DoctorContext): Promise<CheckResult> {
  try {
    const outcome = await check.run(context);
    return { id: check.id, title: check.title, ...outcome };
  } catch (err) {
    return { id: check.id, title: check.title, status: 'fail', detail: `the check could not run: ${err instanceof Error ? err.message : String(err)}` };
  }
}
