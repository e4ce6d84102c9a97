/**
 * Connections the doctor opens: TCP with a timeout, host names resolved through
 * the doctor's own resolver (so a run is about one consistent view of DNS), HTTPS
 * GETs for the MTA-STS policy, and `--connect-to` overrides in curl's syntax
 * (HOST:PORT:ADDRESS:PORT), which send a connection meant for HOST:PORT to
 * ADDRESS:PORT while TLS still checks the certificate against HOST. Overrides let
 * a server be checked before its DNS is live, and tests use them to point port 25
 * and 443 at loopback listeners.
 *
 * Contract: every method settles within the timeout (plus one DNS lookup);
 * `trustedCa` adds certificates to Node's trusted roots, it never removes any.
 */
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import type { DoctorDns } from './dns-client';

export interface Endpoint {
  host: string;
  port: number;
}

export class ConnectError extends Error {
  constructor(
    message: string,
    readonly reason: 'timeout' | 'refused' | 'unresolved' | 'other',
  ) {
    super(message);
    this.name = 'ConnectError';
  }
}

const MAX_HTTP_BODY_BYTES = 64 * 1024;

export class DoctorNet {
  private readonly overrides: Map<string, Endpoint>;

  constructor(
    private readonly dns: DoctorDns,
    readonly timeoutMs: number,
    overrides: readonly string[] = [],
    private readonly trustedCa: readonly string[] = [],
  ) {
    this.overrides = new Map(overrides.map(parseConnectTo));
  }

  /** CA certificates for verifying peers: Node's roots (with NODE_EXTRA_CA_CERTS) plus `trustedCa` */
  caList(): string[] | undefined {
    return this.trustedCa.length > 0 ? [...tls.rootCertificates, ...this.trustedCa] : undefined;
  }

  /** where a connection to host:port actually goes */
  target(host: string, port: number): Endpoint {
    return this.overrides.get(endpointKey(host, port)) ?? { host, port };
  }

  async connect(host: string, port: number): Promise<net.Socket> {
    const target = this.target(host, port);
    let address = target.host.replace(/^\[(.*)\]$/, '$1');
    if (net.isIP(address) === 0) {
      const found = await this.dns.addresses(address);
      if (found.kind !== 'records') {
        throw new ConnectError(`cannot resolve ${address}: ${found.kind === 'error' ? found.message : 'no A or AAAA record'}`, 'unresolved');
      }
      address = found.records[0]!;
    }
    const shown = `${host}:${port}${target.host !== host || target.port !== port ? ` (via ${target.host}:${target.port})` : ''}`;
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: address, port: target.port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new ConnectError(`connecting to ${shown} timed out after ${this.timeoutMs} ms`, 'timeout'));
      }, this.timeoutMs);
      const onError = (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        const reason = err.code === 'ECONNREFUSED' ? 'refused' : err.code === 'ETIMEDOUT' ? 'timeout' : 'other';
        reject(new ConnectError(`connecting to ${shown} failed: ${err.code ?? err.message}`, reason));
      };
      socket.once('error', onError);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.off('error', onError);
        // a reset after the caller has stopped listening must not end the process
        socket.on('error', () => undefined);
        resolve(socket);
      });
    });
  }

  /** GET over HTTPS with the certificate checked against the URL's host; no redirects followed */
  async httpsGet(url: string): Promise<{ status: number; contentType: string; body: string }> {
    const parsed = new URL(url);
    if (parsed.protocol !== 'https:') throw new Error(`not an https URL: ${url}`);
    const port = parsed.port ? Number(parsed.port) : 443;
    const socket = await this.connect(parsed.hostname, port);
    return new Promise((resolve, reject) => {
      const secure = tls.connect({ socket, servername: parsed.hostname, ca: this.caList(), rejectUnauthorized: true, minVersion: 'TLSv1.2' });
      const timer = setTimeout(() => {
        secure.destroy();
        reject(new Error(`GET ${url} timed out after ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      const fail = (err: Error) => {
        clearTimeout(timer);
        secure.destroy();
        reject(new Error(`GET ${url} failed: ${err.message}`));
      };
      secure.once('error', fail);
      const request = http.request(
        { host: parsed.hostname, port, path: `${parsed.pathname}${parsed.search}`, method: 'GET', createConnection: () => secure, headers: { host: port === 443 ? parsed.hostname : `${parsed.hostname}:${port}`, connection: 'close' } },
        (response) => {
          const chunks: Buffer[] = [];
          let size = 0;
          response.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_HTTP_BODY_BYTES) fail(new Error(`the response is larger than ${MAX_HTTP_BODY_BYTES} bytes`));
            else chunks.push(chunk);
          });
          response.once('error', fail);
          response.once('end', () => {
            clearTimeout(timer);
            secure.destroy();
            resolve({ status: response.statusCode ?? 0, contentType: String(response.headers['content-type'] ?? ''), body: Buffer.concat(chunks).toString('utf8') });
          });
        },
      );
      request.once('error', fail);
      request.end();
    });
  }
}

/** "HOST:PORT:ADDRESS:PORT" (IPv6 in brackets) -> ["host:port", {host: address, port}] */
export function parseConnectTo(text: string): [string, Endpoint] {
  const match = /^(\[[^\]]+\]|[^:[\]]+):([0-9]{1,5}):(\[[^\]]+\]|[^:[\]]+):([0-9]{1,5})$/.exec(text.trim());
  if (!match) throw new Error(`--connect-to: expected HOST:PORT:ADDRESS:PORT (IPv6 in brackets), got "${text}"`);
  const [, host, port, address, targetPort] = match as unknown as [string, string, string, string, string];
  return [endpointKey(host, Number(port)), { host: address.replace(/^\[(.*)\]$/, '$1'), port: Number(targetPort) }];
}

function endpointKey(host: string, port: number): string {
  return `${host.replace(/^\[(.*)\]$/, '$1').toLowerCase().replace(/\.$/, '')}:${port}`;
}
