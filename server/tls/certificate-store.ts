/**
 * The certificate the relay presents right now, and the one place that changes it.
 * Listeners (SMTP and HTTPS) subscribe and build a new secure context from the new
 * pair; connections that are already open keep the context they were made with,
 * so a renewal touches only new connections and needs no restart.
 *
 * Contract: `replace()` accepts only a certificate with its own private key (it
 * throws otherwise and the current pair stays); subscribers are called in order,
 * synchronously, and one that throws does not stop the others (it is logged).
 */
import type { SecureContextOptions } from 'node:tls';
import type { Logger } from '../log/logger';
import { credentialsFromPem, describeCertificate, type TlsCredentials } from '../listener/tls-credentials';
import { tlsProfileOptions, type TlsMinVersion, type TlsProfileOptions } from './profile';

export type CertificateListener = (credentials: TlsCredentials) => void;

export class CertificateStore {
  private current: TlsCredentials;
  private readonly subscribers = new Set<CertificateListener>();
  readonly profile: TlsProfileOptions;

  constructor(
    initial: TlsCredentials,
    minVersion: TlsMinVersion,
    private readonly logger: Logger,
  ) {
    this.current = credentialsFromPem(initial.cert, initial.key, initial.source);
    this.profile = tlsProfileOptions(minVersion);
  }

  get credentials(): TlsCredentials {
    return this.current;
  }

  /** Everything a secure context needs: the profile and the current pair. */
  secureContextOptions(): SecureContextOptions & TlsProfileOptions & { key: Buffer; cert: Buffer } {
    return { ...this.profile, key: this.current.key, cert: this.current.cert };
  }

  /** Makes `next` the certificate for new connections; throws if key and certificate do not match. */
  replace(next: Pick<TlsCredentials, 'cert' | 'key' | 'source'>): void {
    const checked = credentialsFromPem(next.cert, next.key, next.source);
    if (checked.cert.equals(this.current.cert) && checked.key.equals(this.current.key)) return;
    const previous = describeCertificate(this.current.cert);
    this.current = checked;
    const now = describeCertificate(checked.cert);
    this.logger.info(
      { event: 'tls-certificate-changed', source: checked.source, serial: now.serial, fingerprint256: now.fingerprint256, issuer: now.issuer, validTo: now.validTo, previousSerial: previous.serial },
      `new connections get certificate ${now.serial} (${checked.source}, valid to ${now.validTo})`,
    );
    for (const subscriber of this.subscribers) {
      try {
        subscriber(checked);
      } catch (err) {
        this.logger.error({ event: 'tls-certificate-apply-failed', err: (err as Error).message }, 'a listener could not apply the new certificate');
      }
    }
  }

  /** Calls `listener` on every change; returns the unsubscribe function. */
  onChange(listener: CertificateListener): () => void {
    this.subscribers.add(listener);
    return () => this.subscribers.delete(listener);
  }
}
