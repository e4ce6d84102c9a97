/**
 * Serves the customer's MTA-STS policy (RFC 8461 3.2) over HTTPS:
 * GET https://mta-sts.<domain>/.well-known/mta-sts.txt for each configured domain,
 * with the relay's certificate and TLS profile. The body is exactly what
 * `renderMtaStsPolicy` gives for tls.mtaStsPolicy (the text whose id the infra
 * program publishes in `_mta-sts.<domain>`), as text/plain.
 *
 * Contract: any other host or path is 404, any other method 405; no redirects
 * (RFC 8461 3.3 forbids following them). A renewed certificate is used for new
 * connections at once (the store's change event).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log/logger';
import type { CertificateStore } from './certificate-store';
import { renderMtaStsPolicy } from './mta-sts-policy';
import type { MtaStsPolicySettings } from './settings-schema';

export const MTA_STS_PATH = '/.well-known/mta-sts.txt';

export interface MtaStsServerOptions {
  settings: MtaStsPolicySettings;
  /** the domains the relay receives mail for: the server answers for mta-sts.<each> */
  domains: string[];
  /** the relay's host name: the policy's mx when settings.mx is empty */
  hostname: string;
}

export class MtaStsPolicyServer {
  private readonly server: https.Server;
  private readonly hosts: Set<string>;
  private readonly unsubscribe: () => void;
  readonly policy: { text: string; id: string };
  port = 0;

  constructor(
    private readonly options: MtaStsServerOptions,
    store: CertificateStore,
    private readonly logger: Logger,
  ) {
    const { settings } = options;
    this.policy = renderMtaStsPolicy({ mode: settings.mode, maxAgeSeconds: settings.maxAgeSeconds, mxHosts: settings.mx.length > 0 ? settings.mx : [options.hostname] });
    this.hosts = new Set(options.domains.map((domain) => `mta-sts.${domain.toLowerCase()}`));
    this.server = https.createServer(store.secureContextOptions(), (req, res) => this.handle(req, res));
    this.server.requestTimeout = 10_000;
    this.server.headersTimeout = 10_000;
    this.unsubscribe = store.onChange(() => this.server.setSecureContext(store.secureContextOptions()));
  }

  listen(): Promise<number> {
    const { address, port } = this.options.settings;
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, address, () => {
        this.server.off('error', reject);
        this.port = (this.server.address() as AddressInfo).port;
        this.logger.info(
          { event: 'mta-sts-listening', address, port: this.port, hosts: [...this.hosts], policyId: this.policy.id },
          `serving the MTA-STS policy (id ${this.policy.id}) on ${address}:${this.port}`,
        );
        resolve(this.port);
      });
    });
  }

  close(): Promise<void> {
    this.unsubscribe();
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const host = (req.headers.host ?? '').toLowerCase().replace(/:\d+$/, '').replace(/\.$/, '');
    const path = (req.url ?? '').split('?')[0];
    if (!this.hosts.has(host) || path !== MTA_STS_PATH) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    // no cache headers: RFC 8461 3.3 has senders ignore HTTP caching (max_age rules)
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(this.policy.text) });
    res.end(req.method === 'HEAD' ? undefined : this.policy.text);
  }
}
