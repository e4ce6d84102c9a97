/**
 * Everything about the relay's certificate, composed: where the first certificate
 * comes from (ACME's stored one, tls.certFile/keyFile, or a self-signed one), what
 * replaces it later (a renewed file on disk, or an ACME renewal), and the HTTPS
 * server for the MTA-STS policy. Listeners only see the certificate store.
 *
 * Contract: `start` resolves once the store holds a usable certificate and the
 * HTTP-01 responder and MTA-STS server listen; a first ACME order runs in the
 * background (mail flows meanwhile with the self-signed certificate). `stop`
 * closes what `start` opened.
 */
import type { RelayConfig } from '../config/schema';
import type { Logger } from '../log/logger';
import { loadTlsCredentials } from '../listener/tls-credentials';
import { AcmeManager, loadStoredAcmeCertificate } from './acme';
import { CertificateStore } from './certificate-store';
import type { Dns01Provider } from './dns01';
import { CertificateFileWatcher } from './file-watcher';
import { MtaStsPolicyServer } from './mta-sts-server';

export interface TlsServiceOptions {
  /** a DNS-01 provider given in code instead of tls.acme.dns01 */
  dns01Provider?: Dns01Provider;
}

export class TlsService {
  private constructor(
    readonly store: CertificateStore,
    readonly acme: AcmeManager | undefined,
    readonly mtaSts: MtaStsPolicyServer | undefined,
    private readonly watcher: CertificateFileWatcher | undefined,
  ) {}

  static async start(config: RelayConfig, logger: Logger, options: TlsServiceOptions = {}): Promise<TlsService> {
    const { tls } = config;
    const stored = tls.acme ? await loadStoredAcmeCertificate(config.paths.state) : undefined;
    const store = new CertificateStore(stored ?? (await loadTlsCredentials(config, logger)), tls.minVersion, logger);
    const parts: { acme?: AcmeManager; mtaSts?: MtaStsPolicyServer; watcher?: CertificateFileWatcher } = {};
    try {
      if (tls.certFile && tls.keyFile) {
        parts.watcher = new CertificateFileWatcher({ certFile: tls.certFile, keyFile: tls.keyFile }, store, tls.reloadCheckIntervalMs, logger);
        await parts.watcher.start();
      }
      if (tls.mtaStsPolicy) {
        parts.mtaSts = new MtaStsPolicyServer({ settings: tls.mtaStsPolicy, domains: config.domains.map((d) => d.name), hostname: config.hostname }, store, logger);
        await parts.mtaSts.listen();
      }
      if (tls.acme) {
        parts.acme = new AcmeManager({ settings: tls.acme, names: certificateNames(config), stateDir: config.paths.state, store, logger, dns01Provider: options.dns01Provider });
        await parts.acme.start();
      }
    } catch (err) {
      await new TlsService(store, parts.acme, parts.mtaSts, parts.watcher).stop();
      throw err;
    }
    return new TlsService(store, parts.acme, parts.mtaSts, parts.watcher);
  }

  /** Checks the certificate files now instead of at the next interval (a reload asks for this). */
  async recheck(): Promise<void> {
    await this.watcher?.poll();
  }

  async stop(): Promise<void> {
    await Promise.all([this.acme?.stop(), this.mtaSts?.close(), this.watcher?.stop()]);
  }
}

/** The names an ACME certificate covers: hostname, tls.acme.domains, and mta-sts.<domain> when the policy is served. */
export function certificateNames(config: RelayConfig): string[] {
  const names = [config.hostname, ...(config.tls.acme?.domains ?? [])];
  if (config.tls.mtaStsPolicy) names.push(...config.domains.map((d) => `mta-sts.${d.name}`));
  return [...new Set(names.map((n) => n.toLowerCase()))];
}
