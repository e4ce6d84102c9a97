/**
 * The HTTP endpoint Prometheus scrapes: GET /metrics, in the text exposition
 * format; anything else is 404. It is not essential to mail: when its port
 * cannot be bound the relay logs why and runs on without it.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log/logger';
import type { RelayMetrics } from './relay-metrics';

export class MetricsServer {
  private constructor(
    private readonly server: http.Server,
    readonly address: string,
    readonly port: number,
  ) {}

  /** Resolves with the server, or undefined (logged) when it could not listen. */
  static async start(metrics: RelayMetrics, address: string, port: number, logger: Logger): Promise<MetricsServer | undefined> {
    const server = http.createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
        return;
      }
      metrics.text().then(
        (body) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body),
        (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics unavailable: ${String(err)}\n`),
      );
    });
    server.keepAliveTimeout = 5_000;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, address, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      logger.error({ event: 'metrics-error', address, port, err: String(err) }, `metrics endpoint not started: cannot listen on ${address}:${port} (${String(err)})`);
      return undefined;
    }
    const actual = (server.address() as AddressInfo).port;
    logger.info({ event: 'metrics-listening', address, port: actual }, `metrics on http://${address.includes(':') ? `[${address}]` : address}:${actual}/metrics`);
    return new MetricsServer(server, address, actual);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}
