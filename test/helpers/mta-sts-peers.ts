/**
 * Real parts for MTA-STS tests: a private test CA that issues certificates for
 * given host names (made with `selfsigned`), and an HTTPS server on 127.0.0.1
 * port 0 that serves `/.well-known/mta-sts.txt` with a certificate of that CA.
 */
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import selfsigned from 'selfsigned';

export interface TestCa {
  cert: string;
  key: string;
  /** a certificate for the names, signed by this CA */
  issue(names: string[], options?: { notAfter?: Date; notBefore?: Date }): Promise<{ key: string; cert: string }>;
}

export async function createTestCa(): Promise<TestCa> {
  const ca = await selfsigned.generate([{ name: 'commonName', value: 'ownrelay test CA' }], {
    keyType: 'ec',
    algorithm: 'sha256',
    extensions: [
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    ],
  });
  return {
    cert: ca.cert,
    key: ca.private,
    async issue(names, options = {}) {
      const pems = await selfsigned.generate([{ name: 'commonName', value: names[0] ?? 'unnamed' }], {
        keyType: 'ec',
        algorithm: 'sha256',
        ...(options.notBefore ? { notBeforeDate: options.notBefore } : {}),
        ...(options.notAfter ? { notAfterDate: options.notAfter } : {}),
        extensions: [
          { name: 'basicConstraints', cA: false },
          { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
          { name: 'extKeyUsage', serverAuth: true },
          { name: 'subjectAltName', altNames: names.map((value) => ({ type: 2 as const, value })) },
        ],
        ca: { key: ca.private, cert: ca.cert },
      });
      return { key: pems.private, cert: pems.cert };
    },
  };
}

export interface PolicyServer {
  port: number;
  /** requests answered so far */
  requests: number;
  /** replaces what is served: the body, its media type and status */
  serve(body: string, options?: { contentType?: string; status?: number }): void;
  close(): Promise<void>;
}

export async function startPolicyServer(credentials: { key: string; cert: string }, body: string): Promise<PolicyServer> {
  let current = { body, contentType: 'text/plain', status: 200 };
  const server = https.createServer({ ...credentials, minVersion: 'TLSv1.2' }, (request, response) => {
    state.requests++;
    if (request.url !== '/.well-known/mta-sts.txt') {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(current.status, { 'content-type': current.contentType }).end(current.body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const state: PolicyServer = {
    port: (server.address() as AddressInfo).port,
    requests: 0,
    serve(next, options = {}) {
      current = { body: next, contentType: options.contentType ?? 'text/plain', status: options.status ?? 200 };
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return state;
}

/** An MTA-STS policy file. */
export function policyText(mode: 'enforce' | 'testing' | 'none', mx: string[], maxAgeS = 86400): string {
  return ['version: STSv1', `mode: ${mode}`, ...mx.map((pattern) => `mx: ${pattern}`), `max_age: ${maxAgeS}`, ''].join('\r\n');
}
