/**
 * DKIM signing keys, read from the files the config names.
 *
 * Contract: loadDkimKeys either returns every configured key, checked (a readable
 * PEM private key, RSA of at least 2048 bits or Ed25519), or throws a DkimKeyError
 * naming the key and what is wrong, so a bad key stops the relay at start, not
 * at the first delivery. The algorithm follows the key's type.
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { DkimKeyConfig } from '../config/schema';

export type DkimAlgorithm = 'rsa-sha256' | 'ed25519-sha256';

export interface DkimSigningKey {
  /** the signing domain (d=), lower case */
  domain: string;
  /** the selector (s=) */
  selector: string;
  algorithm: DkimAlgorithm;
  /** PEM (PKCS#8) private key */
  privateKeyPem: string;
  /** the TXT record this key needs at <selector>._domainkey.<domain> */
  dnsRecord: string;
}

/** RFC 8301: signers must use RSA keys of at least 1024 bits; receivers now expect 2048. */
export const MIN_RSA_BITS = 2048;

export class DkimKeyError extends Error {
  constructor(
    readonly key: Pick<DkimKeyConfig, 'domain' | 'selector' | 'privateKeyFile'>,
    detail: string,
  ) {
    super(`dkim key ${key.selector}._domainkey.${key.domain} (${key.privateKeyFile}): ${detail}`);
    this.name = 'DkimKeyError';
  }
}

export async function loadDkimKeys(keys: readonly DkimKeyConfig[]): Promise<DkimSigningKey[]> {
  return Promise.all(keys.map(loadKey));
}

async function loadKey(config: DkimKeyConfig): Promise<DkimSigningKey> {
  let pem: string;
  try {
    pem = await readFile(config.privateKeyFile, 'utf8');
  } catch (err) {
    throw new DkimKeyError(config, `cannot read the key file: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: 'pem' });
  } catch (err) {
    throw new DkimKeyError(config, `not a PEM private key (${err instanceof Error ? err.message : String(err)})`);
  }
  return { domain: config.domain.toLowerCase(), selector: config.selector, ...describeKey(config, key) };
}

function describeKey(config: DkimKeyConfig, key: KeyObject): Pick<DkimSigningKey, 'algorithm' | 'privateKeyPem' | 'dnsRecord'> {
  const privateKeyPem = key.export({ format: 'pem', type: 'pkcs8' }).toString();
  if (key.asymmetricKeyType === 'rsa') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < MIN_RSA_BITS) throw new DkimKeyError(config, `an RSA key of ${bits} bits is too short; use ${MIN_RSA_BITS} bits or more`);
    const spki = createPublicKey(key).export({ format: 'der', type: 'spki' });
    return { algorithm: 'rsa-sha256', privateKeyPem, dnsRecord: `v=DKIM1; k=rsa; p=${spki.toString('base64')}` };
  }
  if (key.asymmetricKeyType === 'ed25519') {
    // RFC 8463: p= is the bare 32-byte public key, not the SPKI structure
    const spki = createPublicKey(key).export({ format: 'der', type: 'spki' });
    return { algorithm: 'ed25519-sha256', privateKeyPem, dnsRecord: `v=DKIM1; k=ed25519; p=${spki.subarray(spki.length - 32).toString('base64')}` };
  }
  throw new DkimKeyError(config, `a ${key.asymmetricKeyType ?? 'unknown'} key cannot sign DKIM; use RSA or Ed25519`);
}
