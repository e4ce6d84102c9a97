/**
 * Certificates from an ACME CA (Let's Encrypt by default) with acme-client: the
 * account key and the certificate live in <paths.state>/acme/ (keys 0600), the
 * certificate covers every name in `names`, and it is renewed when fewer than
 * tls.acme.renewBeforeDays remain (checked at start and every checkIntervalMs).
 * A new certificate goes to the certificate store, so listeners use it for new
 * connections at once; open sessions keep theirs.
 *
 * Contract: a failed order is logged and retried an hour later (or at the next
 * check if sooner); it never stops the relay, which keeps serving the previous
 * certificate (or the self-signed one before the first issue). Renewals never run
 * twice at once. The files are written to temporary names and renamed, key first.
 */
import { mkdir, readFile, rename, writeFile, open } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import https from 'node:https';
import { rootCertificates } from 'node:tls';
import { join } from 'node:path';
import type { Logger } from '../log/logger';
import { credentialsFromPem, describeCertificate, type TlsCredentials } from '../listener/tls-credentials';
import type { CertificateStore } from './certificate-store';
import { createDns01Provider, dns01RecordName, type Dns01Provider } from './dns01';
import { Http01Responder } from './http01-server';
import type { AcmeSettings } from './settings-schema';

const DAY_MS = 24 * 3600_000;
const RETRY_AFTER_FAILURE_MS = 3600_000;
const CERTIFICATE_KEY_BITS = 2048;

export interface AcmeManagerOptions {
  settings: AcmeSettings;
  /** names the certificate must cover; the first is its common name */
  names: string[];
  /** paths.state: the files go to <stateDir>/acme/ */
  stateDir: string;
  store: CertificateStore;
  logger: Logger;
  /** a DNS-01 provider given in code; otherwise tls.acme.dns01 chooses one */
  dns01Provider?: Dns01Provider;
}

export function acmeFiles(stateDir: string): { dir: string; accountKey: string; cert: string; key: string } {
  const dir = join(stateDir, 'acme');
  return { dir, accountKey: join(dir, 'account-key.pem'), cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') };
}

/** The certificate issued earlier, if there is a usable one on disk. */
export async function loadStoredAcmeCertificate(stateDir: string): Promise<TlsCredentials | undefined> {
  const files = acmeFiles(stateDir);
  try {
    const [cert, key] = await Promise.all([readFile(files.cert), readFile(files.key)]);
    return credentialsFromPem(cert, key, 'acme');
  } catch {
    return undefined;
  }
}

export class AcmeManager {
  private readonly files: ReturnType<typeof acmeFiles>;
  private readonly names: string[];
  private responder?: Http01Responder;
  private dns01?: Dns01Provider;
  private timer?: NodeJS.Timeout;
  private running?: Promise<boolean>;
  private stopped = false;

  constructor(private readonly options: AcmeManagerOptions) {
    this.files = acmeFiles(options.stateDir);
    this.names = [...new Set(options.names.map((name) => name.toLowerCase()))];
    if (this.names.length === 0) throw new Error('tls.acme: no names for the certificate');
  }

  /** Starts the challenge responder and the checks; the first check runs in the background. */
  async start(): Promise<void> {
    const { settings } = this.options;
    if (settings.challenge === 'http-01') {
      this.responder = new Http01Responder(this.options.logger);
      await this.responder.listen(settings.http01.port, settings.http01.address);
    } else {
      this.dns01 = this.options.dns01Provider ?? createDns01Provider(settings.dns01!, this.options.logger);
    }
    this.schedule(0);
  }

  /** Port of the HTTP-01 responder (0 when it does not run). */
  get http01Port(): number {
    return this.responder?.port ?? 0;
  }

  /** Renews if the certificate is missing, does not cover the names, or expires within renewBeforeDays. Resolves true when it renewed. */
  check(): Promise<boolean> {
    return this.exclusive(async () => {
      const reason = await this.renewalReason();
      if (!reason) return false;
      await this.issue(reason);
      return true;
    });
  }

  /** Orders a new certificate now, whatever the current one's expiry. */
  renewNow(): Promise<boolean> {
    return this.exclusive(async () => {
      await this.issue('renewal requested');
      return true;
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running?.catch(() => undefined);
    await this.responder?.close();
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.check().then(
        () => this.schedule(this.options.settings.checkIntervalMs),
        (err: unknown) => {
          this.options.logger.error(
            { event: 'acme-failed', names: this.names, err: err instanceof Error ? err.message : String(err) },
            `could not get a certificate from ${this.options.settings.directoryUrl}; the current certificate stays, next attempt in ${Math.round(Math.min(RETRY_AFTER_FAILURE_MS, this.options.settings.checkIntervalMs) / 60_000)} min`,
          );
          this.schedule(Math.min(RETRY_AFTER_FAILURE_MS, this.options.settings.checkIntervalMs));
        },
      );
    }, delayMs);
    this.timer.unref();
  }

  private exclusive(work: () => Promise<boolean>): Promise<boolean> {
    this.running ??= work().finally(() => (this.running = undefined));
    return this.running;
  }

  private async renewalReason(): Promise<string | undefined> {
    const stored = await loadStoredAcmeCertificate(this.options.stateDir);
    if (!stored) return 'no certificate yet';
    const covered = new Set((new X509Certificate(stored.cert).subjectAltName ?? '').split(', ').filter((n) => n.startsWith('DNS:')).map((n) => n.slice(4).toLowerCase()));
    const missing = this.names.filter((name) => !covered.has(name));
    if (missing.length > 0) return `the certificate does not cover ${missing.join(', ')}`;
    const daysLeft = (stored.validTo.getTime() - Date.now()) / DAY_MS;
    if (daysLeft < this.options.settings.renewBeforeDays) return `${Math.floor(daysLeft)} days left`;
    // the store may hold another certificate (the self-signed one from before this start)
    if (!this.options.store.credentials.cert.equals(stored.cert)) this.options.store.replace(stored);
    return undefined;
  }

  private async issue(reason: string): Promise<void> {
    const { settings, logger } = this.options;
    const acme = await import('acme-client');
    acme.setLogger((message: string) => logger.debug({ event: 'acme-client' }, message));
    if (settings.caFile) {
      const extra = await readFile(settings.caFile, 'utf8');
      acme.axios.defaults.httpsAgent = new https.Agent({ ca: [...rootCertificates, extra] });
    }
    logger.info({ event: 'acme-order', names: this.names, reason, directoryUrl: settings.directoryUrl }, `ordering a certificate for ${this.names.join(', ')} (${reason})`);
    await mkdir(this.files.dir, { recursive: true, mode: 0o700 });
    const client = new acme.Client({ directoryUrl: settings.directoryUrl, accountKey: await this.accountKey(() => acme.crypto.createPrivateKey(2048)), backoffMin: 1000, backoffMax: 20_000 });
    const [key, csr] = await acme.crypto.createCsr({ commonName: this.names[0], altNames: this.names }, await acme.crypto.createPrivateKey(CERTIFICATE_KEY_BITS));
    const chain = await client.auto({
      csr,
      email: settings.email,
      termsOfServiceAgreed: true,
      challengePriority: [settings.challenge],
      // the CA validates anyway; a check from this host of its own name proves little and fails behind NAT
      skipChallengeVerification: true,
      challengeCreateFn: (authz, challenge, keyAuthorization) => this.presentChallenge(authz.identifier.value, challenge, keyAuthorization),
      challengeRemoveFn: (authz, challenge, keyAuthorization) => this.withdrawChallenge(authz.identifier.value, challenge, keyAuthorization),
    });
    const credentials = credentialsFromPem(Buffer.from(chain), key, 'acme');
    await writePrivate(this.files.key, key);
    await writeAtomically(this.files.cert, Buffer.from(chain), 0o644);
    const issued = describeCertificate(credentials.cert);
    logger.info({ event: 'acme-issued', names: this.names, serial: issued.serial, issuer: issued.issuer, validTo: issued.validTo }, `got certificate ${issued.serial} from ${issued.issuer}`);
    const daysLeft = (credentials.validTo.getTime() - Date.now()) / DAY_MS;
    if (daysLeft < settings.renewBeforeDays) {
      logger.warn(
        { event: 'acme-window-too-long', renewBeforeDays: settings.renewBeforeDays, daysLeft: Math.floor(daysLeft) },
        `tls.acme.renewBeforeDays (${settings.renewBeforeDays}) is longer than the CA's certificates live (${Math.floor(daysLeft)} days): every check will order a new one`,
      );
    }
    this.options.store.replace(credentials);
  }

  private async accountKey(create: () => Promise<Buffer>): Promise<Buffer> {
    try {
      return await readFile(this.files.accountKey);
    } catch {
      const key = await create();
      await writePrivate(this.files.accountKey, key);
      return key;
    }
  }

  private async presentChallenge(domain: string, challenge: { type: string; token?: string }, keyAuthorization: string): Promise<void> {
    if (challenge.type === 'http-01') return this.responder!.set(challenge.token ?? '', keyAuthorization);
    if (challenge.type === 'dns-01') return this.dns01!.publish(dns01RecordName(domain), keyAuthorization);
    throw new Error(`unexpected ACME challenge type ${challenge.type}`);
  }

  private async withdrawChallenge(domain: string, challenge: { type: string; token?: string }, keyAuthorization: string): Promise<void> {
    if (challenge.type === 'http-01') return this.responder!.delete(challenge.token ?? '');
    if (challenge.type === 'dns-01') return this.dns01!.withdraw(dns01RecordName(domain), keyAuthorization);
  }
}

/** A key file: 0600 from the moment it exists. */
function writePrivate(path: string, data: Buffer): Promise<void> {
  return writeAtomically(path, data, 0o600);
}

async function writeAtomically(path: string, data: Buffer, mode: number): Promise<void> {
  const tmp = `${path}.tmp`;
  await writeFile(tmp, data, { mode });
  const handle = await open(tmp, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, path);
}
