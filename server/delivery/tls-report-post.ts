/**
 * Submits a TLS report to an https: destination of a domain's `rua` (RFC 8460
 * 5.3.2): one POST of the gzipped JSON report, `Content-Type:
 * application/tlsrpt+gzip`, to the URI as published.
 *
 * Contract: the returned function resolves when the receiver answered 2xx, and
 * rejects with a one-line reason otherwise (no usable address, connection
 * failures, timeouts, a certificate not valid for the host, any other status;
 * redirects are never followed). The host is resolved with the relay's resolver
 * and each address must pass the AddressGuard, as for SMTP delivery: the URI is
 * chosen by whoever controls the domain's DNS. Only connection failures move on
 * to the host's next address; an answer ends the attempt. The certificate is
 * checked against the system CAs, or the given `ca` list.
 */
import https from 'node:https';
import net from 'node:net';
import type { AddressGuard } from './address-guard';

/** `signal` aborts the submission (it then rejects), e.g. when the relay stops. */
export type ReportPoster = (uri: string, gzippedReport: Buffer, signal?: AbortSignal) => Promise<void>;

export interface HttpsReportPosterOptions {
  /** answers an address literal as it is (MxResolver does) */
  resolver: { resolveHost(host: string): Promise<string[]> };
  guard: Pick<AddressGuard, 'usableAddresses'>;
  /** sent as User-Agent, so a receiver knows who submits */
  userAgent: string;
  /** trusted CA certificates (PEM); default: Node's bundled CA list */
  ca?: string[];
  /** budget for one POST to one address */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 30_000;
/** at most this much of a refusal's body is quoted in the reason */
const QUOTED_BODY_CHARS = 200;

/** Why a submission failed; `answered` when the receiver replied (its other addresses are not tried). */
class PostFailure extends Error {
  constructor(
    message: string,
    readonly answered: boolean,
  ) {
    super(message);
  }
}

export function httpsReportPoster(options: HttpsReportPosterOptions): ReportPoster {
  return async (uri, gzippedReport, signal) => {
    let url: URL;
    try {
      url = new URL(uri);
    } catch {
      throw new Error(`${uri} is not a URI`);
    }
    if (url.protocol !== 'https:') throw new Error(`${uri} is not an https: URI`);
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    // the resolver returns an address literal as it is, so the guard judges it too
    const { addresses, refused, failure } = await options.guard.usableAddresses(host, options.resolver);
    if (addresses.length === 0) throw new Error(failure ?? refused.join('; '));
    let last: PostFailure | undefined;
    for (const address of addresses) {
      try {
        return await post(url, host, address, gzippedReport, options, signal);
      } catch (err) {
        if (!(err instanceof PostFailure) || err.answered) throw err;
        last = err;
      }
    }
    throw last!;
  };
}

/** One POST to one address of `host` (the URI's host, an IPv6 literal without its brackets). */
function post(url: URL, host: string, address: string, body: Buffer, options: HttpsReportPosterOptions, signal?: AbortSignal): Promise<void> {
  const port = url.port ? Number(url.port) : 443;
  const where = `${url.href} (${net.isIPv6(address) ? `[${address}]` : address}:${port})`;
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return new Promise<void>((resolve, reject) => {
    const request = https.request({
      host: address,
      port,
      // SNI and the certificate check name the host; an address literal is checked as that address
      servername: net.isIP(host) ? undefined : host,
      path: `${url.pathname}${url.search}`,
      method: 'POST',
      headers: { host: url.host, 'content-type': 'application/tlsrpt+gzip', 'content-length': body.length, 'user-agent': options.userAgent },
      agent: false,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
      ...(options.ca ? { ca: options.ca } : {}),
      ...(signal ? { signal } : {}),
    });
    const timer = setTimeout(() => request.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    timer.unref();
    let settled = false;
    const finish = (err?: PostFailure): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) {
        request.destroy();
        reject(err);
      } else {
        resolve();
      }
    };
    // an abort answers like a receiver would: no other address is tried
    request.on('error', (err) => finish(new PostFailure(`${where}: ${err.message}`, signal?.aborted === true)));
    request.on('response', (response) => {
      const status = response.statusCode ?? 0;
      const chunks: Buffer[] = [];
      let quoted = 0;
      response.on('data', (chunk: Buffer) => {
        if (quoted < QUOTED_BODY_CHARS) chunks.push(chunk);
        quoted += chunk.length;
      });
      response.on('end', () => {
        if (status >= 200 && status < 300) return finish();
        const text = Buffer.concat(chunks).toString('utf8').replace(/\s+/g, ' ').trim().slice(0, QUOTED_BODY_CHARS);
        finish(new PostFailure(`${where}: HTTP status ${status}${status >= 300 && status < 400 ? ' (redirects are not followed)' : ''}${text ? `: ${text}` : ''}`, true));
      });
      response.on('error', (err) => finish(new PostFailure(`${where}: ${err.message}`, true)));
    });
    request.end(body);
  });
}
