/**
 * The certificate and key the listeners start with. A configured pair is read and
 * checked (the key must belong to the certificate); without one, a self-signed
 * certificate for the hostname is generated once into <paths.state>/tls/ and
 * reused on later starts (clients that pin it keep working), and the log says so.
 * smtp-server's bundled certificate, whose key is public, is never used. What
 * replaces the pair later (renewed files, ACME) is server/tls/'s business.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { join } from 'node:path';
import type { RelayConfig } from '../config/schema';
import type { Logger } from '../log/logger';

export interface TlsCredentials {
  key: Buffer;
  cert: Buffer;
  source: 'configured' | 'self-signed' | 'acme';
  /** for status output: when the certificate expires */
  validTo: Date;
}

/**
 * Checks that `key` is the private key of the first certificate in `cert` and
 * returns the pair as credentials; throws an error that says what is wrong
 * otherwise (a renewal caught between writing the two files, a truncated file).
 */
export function credentialsFromPem(cert: Buffer, key: Buffer, source: TlsCredentials['source']): TlsCredentials {
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new Error(`not a PEM certificate: ${(err as Error).message}`);
  }
  let privateKey: ReturnType<typeof createPrivateKey>;
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    throw new Error(`not a PEM private key: ${(err as Error).message}`);
  }
  if (!x509.checkPrivateKey(privateKey)) throw new Error('the private key does not belong to the certificate');
  return { cert, key, source, validTo: new Date(x509.validTo) };
}

/** What logs and tests identify a certificate by. */
export function describeCertificate(cert: Buffer): { serial: string; fingerprint256: string; issuer: string; subjectAltName: string; validTo: string } {
  const x509 = new X509Certificate(cert);
  return { serial: x509.serialNumber, fingerprint256: x509.fingerprint256, issuer: x509.issuer.replace(/\n/g, ', '), subjectAltName: x509.subjectAltName ?? '', validTo: new Date(x509.validTo).toISOString() };
}

export async function loadTlsCredentials(config: RelayConfig, logger: Logger): Promise<TlsCredentials> {
  if (config.tls.certFile && config.tls.keyFile) {
    const { certFile, keyFile } = config.tls;
    const [cert, key] = await Promise.all([readFile(certFile), readFile(keyFile)]);
    try {
      return credentialsFromPem(cert, key, 'configured');
    } catch (err) {
      throw new Error(`tls.certFile ${certFile} / tls.keyFile ${keyFile}: ${(err as Error).message}`);
    }
  }
  const dir = join(config.paths.state, 'tls');
  const certPath = join(dir, 'self-signed-cert.pem');
  const keyPath = join(dir, 'self-signed-key.pem');
  try {
    const [cert, key] = await Promise.all([readFile(certPath), readFile(keyPath)]);
    const validTo = expiryOf(cert);
    if (validTo.getTime() > Date.now() + 7 * 24 * 3600_000) {
      logger.warn(
        { event: 'tls-self-signed', certFile: certPath },
        config.tls.acme ? 'using the self-signed certificate until the first ACME certificate arrives' : 'using the self-signed certificate generated earlier; set tls.certFile and tls.keyFile for a trusted one',
      );
      return { cert, key, source: 'self-signed', validTo };
    }
  } catch {
    // none yet: generate below
  }
  const notBefore = new Date(Date.now() - 3600_000);
  const notAfter = new Date(notBefore.getTime() + 825 * 24 * 3600_000);
  // loaded only when needed: the X.509 libraries behind it cost ~20 MB of memory
  const { generate } = await import('selfsigned');
  const pems = await generate([{ name: 'commonName', value: config.hostname }], {
    keySize: 2048,
    algorithm: 'sha256',
    notBeforeDate: notBefore,
    notAfterDate: notAfter,
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: [{ type: 2, value: config.hostname }] },
    ],
  });
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFile(`${keyPath}.tmp`, pems.private, { mode: 0o600 });
  await writeFile(`${certPath}.tmp`, pems.cert, { mode: 0o644 });
  await rename(`${keyPath}.tmp`, keyPath);
  await rename(`${certPath}.tmp`, certPath);
  logger.warn(
    { event: 'tls-self-signed', certFile: certPath, hostname: config.hostname },
    config.tls.acme
      ? 'generated a self-signed certificate for use until the first ACME certificate arrives'
      : 'no tls.certFile configured: generated a self-signed certificate; set tls.certFile and tls.keyFile for a trusted one',
  );
  const cert = Buffer.from(pems.cert);
  return { cert, key: Buffer.from(pems.private), source: 'self-signed', validTo: expiryOf(cert) };
}

function expiryOf(cert: Buffer): Date {
  return new Date(new X509Certificate(cert).validTo);
}
