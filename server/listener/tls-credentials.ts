/**
 * The certificate and key the listeners present. A configured pair is read as
 * is; without one, a self-signed certificate for the hostname is generated once
 * into <paths.state>/tls/ and reused on later starts (clients that pin it keep
 * working), and the log says so. smtp-server's bundled certificate, whose key is
 * public, is never used.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import type { RelayConfig } from '../config/schema';
import type { Logger } from '../log/logger';

export interface TlsCredentials {
  key: Buffer;
  cert: Buffer;
  source: 'configured' | 'self-signed';
  /** for status output: when the certificate expires */
  validTo: Date;
}

export async function loadTlsCredentials(config: RelayConfig, logger: Logger): Promise<TlsCredentials> {
  if (config.tls.certFile && config.tls.keyFile) {
    const [cert, key] = await Promise.all([readFile(config.tls.certFile), readFile(config.tls.keyFile)]);
    return { cert, key, source: 'configured', validTo: expiryOf(cert) };
  }
  const dir = join(config.paths.state, 'tls');
  const certPath = join(dir, 'self-signed-cert.pem');
  const keyPath = join(dir, 'self-signed-key.pem');
  try {
    const [cert, key] = await Promise.all([readFile(certPath), readFile(keyPath)]);
    const validTo = expiryOf(cert);
    if (validTo.getTime() > Date.now() + 7 * 24 * 3600_000) {
      logger.warn({ event: 'tls-self-signed', certFile: certPath }, 'using the self-signed certificate generated earlier; set tls.certFile and tls.keyFile for a trusted one');
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
    'no tls.certFile configured: generated a self-signed certificate; set tls.certFile and tls.keyFile for a trusted one',
  );
  const cert = Buffer.from(pems.cert);
  return { cert, key: Buffer.from(pems.private), source: 'self-signed', validTo: expiryOf(cert) };
}

function expiryOf(cert: Buffer): Date {
  return new Date(new X509Certificate(cert).validTo);
}
