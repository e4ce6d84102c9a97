/**
 * Fetches a domain's MTA-STS policy file over HTTPS (RFC 8461 3.3):
 * `https://mta-sts.<domain>/.well-known/mta-sts.txt`.
 *
 * Contract: `fetch(domain)` resolves with the parsed policy or rejects with a
 * `PolicyFetchError` whose `kind` is the TLS-RPT result type:
 * - sts-webpki-invalid: the HTTPS certificate is not valid for mta-sts.<domain>;
 * - sts-policy-invalid: the server answered 200 but the body is not a policy
 *   (wrong media type, too large, bad syntax);
 * - sts-policy-fetch-error: anything else (no address, connection failures,
 *   timeouts, a status other than 200; redirects are never followed).
 *
 * The host name is resolved with the relay's resolver and each address passes
 * the AddressGuard, as SMTP delivery does: a policy host is chosen by whoever
 * controls the recipient domain's DNS. The certificate is checked against the
 * system CAs, or the given `ca` list.
 */
import https from 'node:https';
import net from 'node:net';
import type { AddressGuard } from './address-guard';
import { MAX_POLICY_BYTES, PolicyTextError, parsePolicyText, type StsPolicy } from './mta-sts-policy';
import { certificateResultType, type TlsResultType } from './tls-report-result';

export type FetchFailureKind = Extract<TlsResultType, 'sts-policy-fetch-error' | 'sts-policy-invalid' | 'sts-webpki-invalid'>;

export class PolicyFetchError extends Error {
  constructor(
    message: string,
    readonly kind: FetchFailureKind,
    /** true when the HTTPS server answered (so other addresses of the host are not tried) */
    readonly answered = false,
  ) {
    super(message);
  }
}

export type PolicyFetcher = (domain: string) => Promise<StsPolicy>;

export interface HttpsPolicyFetcherOptions {
  resolveHost(host: string): Promise<string[]>;
  guard: Pick<AddressGuard, 'check'>;
  /** trusted CA certificates (PEM); default: Node's bundled CA list */
  ca?: string[];
  /** HTTPS port; 443 on the Internet, other values exist for tests */
  port?: number;
  /** budget for one fetch from one address */
  timeoutMs?: number;
}

const POLICY_PATH = '/.well-known/mta-sts.txt';
const DEFAULT_TIMEOUT_MS = 15_000;

export function httpsPolicyFetcher(options: HttpsPolicyFetcherOptions): PolicyFetcher {
  return async (domain) => {
    const host = `mta-sts.${domain}`;
    let addresses: string[];
    try {
      addresses = await options.resolveHost(host);
    } catch (err) {
      throw new PolicyFetchError(`address lookup for ${host} failed: ${err instanceof Error ? err.message : String(err)}`, 'sts-policy-fetch-error');
    }
    if (addresses.length === 0) throw new PolicyFetchError(`${host} has no A or AAAA records`, 'sts-policy-fetch-error');
    let last: PolicyFetchError | undefined;
    for (const address of addresses) {
      const verdict = options.guard.check(address);
      if (!verdict.allowed) {
        last = new PolicyFetchError(`${host}[${address}]: ${verdict.reason}`, 'sts-policy-fetch-error');
        continue;
      }
      try {
        return parse(await get(host, address, options), host);
      } catch (err) {
        if (!(err instanceof PolicyFetchError)) throw err;
        // an answer (any status, any body) ends the search; only connection problems try the next address
        if (err.kind !== 'sts-policy-fetch-error' || err.answered) throw err;
        last = err;
      }
    }
    throw last ?? new PolicyFetchError(`no address of ${host} to fetch the policy from`, 'sts-policy-fetch-error');
  };
}

function get(host: string, address: string, options: HttpsPolicyFetcherOptions): Promise<string> {
  const port = options.port ?? 443;
  const where = `https://${host}${POLICY_PATH} (${net.isIPv6(address) ? `[${address}]` : address}:${port})`;
  return new Promise<string>((resolve, reject) => {
    const request = https.request({
      host: address,
      port,
      servername: host,
      path: POLICY_PATH,
      method: 'GET',
      headers: { host, accept: 'text/plain' },
      agent: false,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
      ...(options.ca ? { ca: options.ca } : {}),
    });
    const timer = setTimeout(() => request.destroy(new Error(`no answer within ${options.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms`)), options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    timer.unref();
    const fail = (err: PolicyFetchError): void => {
      clearTimeout(timer);
      request.destroy();
      reject(err);
    };
    request.on('error', (err: NodeJS.ErrnoException) => {
      const certificate = certificateResultType(err.code);
      if (certificate) fail(new PolicyFetchError(`${where}: certificate not valid for ${host}: ${err.message}`, 'sts-webpki-invalid'));
      else fail(new PolicyFetchError(`${where}: ${err.message}`, 'sts-policy-fetch-error'));
    });
    request.on('response', (response) => {
      if (response.statusCode !== 200) {
        response.resume();
        return fail(new PolicyFetchError(`${where}: HTTP status ${response.statusCode ?? '?'} (only 200 is a policy; redirects are not followed)`, 'sts-policy-fetch-error', true));
      }
      const type = (response.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
      if (type !== 'text/plain') return fail(new PolicyFetchError(`${where}: media type is "${type ?? ''}", not text/plain`, 'sts-policy-invalid', true));
      const chunks: Buffer[] = [];
      let bytes = 0;
      response.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        if (bytes > MAX_POLICY_BYTES) return fail(new PolicyFetchError(`${where}: policy is larger than ${MAX_POLICY_BYTES} bytes`, 'sts-policy-invalid', true));
        chunks.push(chunk);
      });
      response.on('end', () => {
        clearTimeout(timer);
        resolve(Buffer.concat(chunks).toString('utf8'));
      });
      response.on('error', (err) => fail(new PolicyFetchError(`${where}: ${err.message}`, 'sts-policy-fetch-error', true)));
    });
    request.end();
  });
}

function parse(body: string, host: string): StsPolicy {
  try {
    return parsePolicyText(body);
  } catch (err) {
    if (err instanceof PolicyTextError) {
      throw new PolicyFetchError(`policy at ${host} is invalid: ${err.message}`, 'sts-policy-invalid', true);
    }
    throw err;
  }
}
