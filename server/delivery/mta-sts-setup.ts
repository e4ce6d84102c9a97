/**
 * Builds the outbound TLS policy parts of SMTP delivery from the config: the
 * MTA-STS policy cache (fetching through the relay's resolver and AddressGuard)
 * and the TLS report store, each under paths.state unless configured elsewhere.
 *
 * `OutboundTlsTestOptions` exist for tests and labs only: extra trusted CAs (a
 * private test CA, added to Node's bundled list) and the HTTPS port of policy
 * hosts (443 on the Internet).
 */
import { rootCertificates } from 'node:tls';
import { join } from 'node:path';
import type { RelayConfig } from '../config/schema';
import type { Logger } from '../log/logger';
import type { AddressGuard } from './address-guard';
import { MtaStsPolicies } from './mta-sts-cache';
import { httpsPolicyFetcher } from './mta-sts-fetch';
import type { MxResolver } from './mx-resolver';
import { TlsReportStore } from './tls-report-store';
import { tlsReportDir } from './tls-report';

export interface OutboundTlsTestOptions {
  /** PEM CA certificates trusted in addition to the bundled ones */
  extraCaPem?: string[];
  /** HTTPS port of mta-sts.<domain> hosts */
  mtaStsHttpsPort?: number;
}

export interface OutboundTlsParts {
  mtaSts?: MtaStsPolicies;
  tlsReports?: TlsReportStore;
  ca?: string[];
}

export function outboundTlsParts(config: RelayConfig, resolver: MxResolver, guard: AddressGuard, logger: Logger, test: OutboundTlsTestOptions = {}): OutboundTlsParts {
  const ca = test.extraCaPem && test.extraCaPem.length > 0 ? [...rootCertificates, ...test.extraCaPem] : undefined;
  const { mtaSts, tlsReports } = config.delivery;
  const reports = tlsReports.enabled ? new TlsReportStore(tlsReportDir(config), logger) : undefined;
  if (!mtaSts.enabled) return { ca, tlsReports: reports };
  const policies = new MtaStsPolicies({
    lookupTxt: (name) => resolver.resolveTxt(name),
    fetch: httpsPolicyFetcher({ resolveHost: (host) => resolver.resolveHost(host), guard, ca, port: test.mtaStsHttpsPort }),
    cacheDir: mtaSts.cacheDir ?? join(config.paths.state, 'mta-sts'),
    logger,
    onFetchFailure: (domain, error) =>
      reports?.recordFailure(
        { 'policy-type': 'sts', 'policy-string': [], 'policy-domain': domain, 'mx-host': [] },
        { 'result-type': error.kind, 'failure-reason-code': error.message.slice(0, 200) },
      ),
  });
  return { mtaSts: policies, tlsReports: reports, ca };
}
