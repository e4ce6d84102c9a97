/**
 * The ACME HTTP-01 responder: a plain HTTP server (port 80 in production) that
 * answers only GET/HEAD /.well-known/acme-challenge/<token> for tokens of orders
 * in progress, with the key authorization as text/plain. Everything else is 404;
 * it serves no files and no redirects. The relay runs it only when tls.acme uses
 * the http-01 challenge.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log/logger';

const PREFIX = '/.well-known/acme-challenge/';
/** RFC 8555 8.3: a token is base64url */
const TOKEN = /^[A-Za-z0-9_-]{1,256}$/;

export class Http01Responder {
  private readonly tokens = new Map<string, string>();
  private readonly server: http.Server;
  port = 0;

  constructor(private readonly logger: Logger) {
    this.server = http.createServer((req, res) => this.handle(req, res));
    this.server.requestTimeout = 10_000;
    this.server.headersTimeout = 10_000;
  }

  listen(port: number, address: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, address, () => {
        this.server.off('error', reject);
        this.port = (this.server.address() as AddressInfo).port;
        this.logger.info({ event: 'acme-http01-listening', address, port: this.port }, `ACME HTTP-01 responder on ${address}:${this.port}`);
        resolve(this.port);
      });
    });
  }

  set(token: string, keyAuthorization: string): void {
    if (!TOKEN.test(token)) throw new Error(`invalid ACME challenge token "${token}"`);
    this.tokens.set(token, keyAuthorization);
  }

  delete(token: string): void {
    this.tokens.delete(token);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const path = (req.url ?? '').split('?')[0] ?? '';
    const token = path.startsWith(PREFIX) ? path.slice(PREFIX.length) : undefined;
    const body = token !== undefined && (req.method === 'GET' || req.method === 'HEAD') ? this.tokens.get(token) : undefined;
    this.logger.debug({ event: 'acme-http01-request', client: req.socket.remoteAddress, method: req.method, path, answered: body !== undefined }, 'HTTP-01 request');
    if (body === undefined) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  }
}
