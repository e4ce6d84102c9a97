/**
 * Applies a destination's MTA-STS policy (RFC 8461 4 and 5) to MX delivery,
 * and records each TLS session under the policy for TLS reporting (RFC 8460).
 *
 * Contract of `applyStsPolicy` (modes testing and enforce; `none` is no policy):
 * - enforce: only MX hosts matching the policy's mx patterns are used, over
 *   STARTTLS with a certificate valid for the MX host name; when no host
 *   matches, `refusal` says why and nothing is tried. A session that fails the
 *   TLS requirements is never continued in plain text or unverified: the
 *   transport moves on and finally defers (4xx), as for any setup failure;
 * - testing: delivery is unchanged (every MX, opportunistic TLS), and what
 *   enforce would have refused is recorded as a failure;
 * - every new session to a host of the domain counts once: a success, or a
 *   failure with its RFC 8460 result type. Failures that are not about TLS (a
 *   refused connection, a timeout) are not TLS sessions and are not counted.
 */
import type { TLSSocket } from 'node:tls';
import type { Logger } from '../log/logger';
import type { CachedPolicy } from './mta-sts-cache';
import { mxAllowed } from './mta-sts-policy';
import { type Endpoint, type Session, SessionError, type SmtpError, type TlsMode } from './connection-cache';
import { certificateResultType, type TlsResultType } from './tls-report-result';
import type { TlsFailure, TlsPolicyDescription, TlsReportStore } from './tls-report-store';

/** Told about each session the transport sets up (or fails to) for one delivery. */
export interface SessionObserver {
  opened(session: Session): void;
  failed(endpoint: Endpoint, err: unknown): void;
}

export interface StsPlan {
  mode: 'enforce' | 'testing';
  /** MX hosts to try, in order */
  hosts: string[];
  tls: TlsMode;
  verifyCertificate: boolean;
  /** why nothing may be tried (enforce with no matching MX) */
  refusal?: string;
  observer: SessionObserver;
  /** the reply of a deferred recipient, saying that the policy refused TLS when it did */
  explain(reply: string): string;
}

interface Problem {
  resultType: TlsResultType;
  /** TLS error code or short reason, for failure-reason-code */
  code: string;
  reason: string;
}

export function applyStsPolicy(entry: CachedPolicy, mxHosts: readonly string[], reports: TlsReportStore | undefined, logger: Logger): StsPlan {
  const mode = entry.policy.mode === 'enforce' ? 'enforce' : 'testing';
  const description: TlsPolicyDescription = {
    'policy-type': 'sts',
    'policy-string': entry.policy.text,
    'policy-domain': entry.domain,
    'mx-host': entry.policy.mx,
  };
  const matching = mxHosts.filter((host) => mxAllowed(host, entry.policy));
  let refusedTls = false;
  const explain = (reply: string): string => (mode === 'enforce' && refusedTls ? `MTA-STS policy of ${entry.domain} (enforce) requires STARTTLS with a valid certificate: ${reply}` : reply);

  const report = (endpoint: Pick<Endpoint, 'host' | 'address'>, problem: Problem, sendingMtaIp?: string): void => {
    const failure: TlsFailure = {
      'result-type': problem.resultType,
      ...(sendingMtaIp ? { 'sending-mta-ip': sendingMtaIp } : {}),
      'receiving-mx-hostname': endpoint.host,
      ...(endpoint.address ? { 'receiving-ip': endpoint.address } : {}),
      'failure-reason-code': problem.code,
    };
    reports?.recordFailure(description, failure);
    logger.warn(
      { event: 'mta-sts-failure', domain: entry.domain, mode, mx: endpoint.host, address: endpoint.address || undefined, resultType: problem.resultType, reason: problem.reason },
      `MTA-STS ${mode} for ${entry.domain}: ${endpoint.host} ${problem.reason}${mode === 'testing' ? ' (testing mode: delivered anyway)' : ''}`,
    );
  };

  const observer: SessionObserver = {
    opened(session) {
      const socket = session.connection._socket as TLSSocket | undefined;
      const local = socket?.localAddress;
      const problem = mode === 'testing' ? testingProblem(session, matching) : undefined;
      if (problem) report(session.endpoint, problem, local);
      else reports?.recordSuccess(description);
    },
    failed(endpoint, err) {
      const problem = tlsProblemOf(err);
      if (!problem) return;
      refusedTls = true;
      report(endpoint, problem);
    },
  };

  if (mode === 'testing') return { mode, hosts: [...mxHosts], tls: 'opportunistic', verifyCertificate: false, observer, explain };

  if (matching.length === 0) {
    for (const host of mxHosts) report({ host, address: '' }, { resultType: 'validation-failure', code: 'mx-mismatch', reason: 'is not listed in the policy' });
    const refusal = `MTA-STS policy of ${entry.domain} (enforce) allows mx ${entry.policy.mx.join(', ')}; none of its MX hosts (${mxHosts.join(', ')}) matches`;
    return { mode, hosts: [], tls: 'required', verifyCertificate: true, refusal, observer, explain };
  }
  return { mode, hosts: matching, tls: 'required', verifyCertificate: true, observer, explain };
}

/** What enforce would have refused about a session opened in testing mode. */
function testingProblem(session: Session, matching: readonly string[]): Problem | undefined {
  if (!matching.includes(session.endpoint.host)) return { resultType: 'validation-failure', code: 'mx-mismatch', reason: 'is not listed in the policy' };
  if (!session.connection.secure) return { resultType: 'starttls-not-supported', code: 'starttls-not-supported', reason: 'did not offer STARTTLS' };
  const socket = session.connection._socket as TLSSocket;
  if (socket.authorized) return undefined;
  const code = String(socket.authorizationError ?? 'unverified');
  return { resultType: certificateResultType(code) ?? 'validation-failure', code, reason: `has a certificate that is not valid for it (${code})` };
}

/** The RFC 8460 result type of a failed session setup, or undefined when it was not about TLS. */
export function tlsProblemOf(err: unknown): Problem | undefined {
  if (!(err instanceof SessionError)) return undefined;
  const cause = err.cause as SmtpError | undefined;
  const code = cause?.originalCode ?? cause?.code;
  const certificate = certificateResultType(code);
  if (certificate) return { resultType: certificate, code: code as string, reason: `failed the certificate check: ${err.message}` };
  if (cause?.command === 'STARTTLS' && cause.code === 'ETLS' && cause.responseCode !== undefined) {
    return { resultType: 'starttls-not-supported', code: 'starttls-not-supported', reason: `refused STARTTLS: ${err.message}` };
  }
  if (/TLS is required but the session is not encrypted/.test(err.message)) return { resultType: 'starttls-not-supported', code: 'starttls-not-supported', reason: err.message };
  if (err.tlsHandshake) return { resultType: 'validation-failure', code: code ?? 'tls-handshake', reason: `TLS handshake failed: ${err.message}` };
  return undefined;
}
