/**
 * DKIM: for every key the relay signs the domain's mail with, the public key
 * published at <selector>._domainkey.<domain> is the one that belongs to the
 * relay's private key (RSA as SubjectPublicKeyInfo, Ed25519 as the raw 32 bytes
 * of RFC 8463), so receivers can verify what the relay signs.
 *
 * `dkimKeysFromConfig` is the one place that reads the relay's `dkim` section.
 */
import { readFileSync } from 'node:fs';
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import type { RelayConfig } from '../../config/schema';
import { publish } from '../fixes';
import type { Check, DoctorContext } from '../types';

export interface DkimKey {
  selector: string;
  domain: string;
  privateKeyPem: string;
}

/**
 * The relay's DKIM signing keys: `dkim.keys[]` with `selector`, `domain` and
 * `privateKeyFile` (PEM). An absent section is no keys. Throws when a key file
 * cannot be read, naming the file.
 */
export function dkimKeysFromConfig(config: RelayConfig): DkimKey[] {
  return config.dkim.keys.map((key) => {
    let privateKeyPem: string;
    try {
      privateKeyPem = readFileSync(key.privateKeyFile, 'utf8');
    } catch (err) {
      throw new Error(`cannot read the DKIM key of ${key.selector}._domainkey.${key.domain} (${key.privateKeyFile}): ${(err as Error).message}`);
    }
    return { selector: key.selector, domain: key.domain.toLowerCase(), privateKeyPem };
  });
}

export const dkimCheck: Check = {
  id: 'dkim',
  title: 'the published DKIM key matches the relay\'s private key',
  async run(context) {
    const keys = dkimKeysFromConfig(context.config).filter((key) => key.domain === context.domain);
    if (keys.length === 0) {
      return {
        status: 'fail',
        detail: `no DKIM key configured for ${context.domain}: the relay does not sign its mail, and receivers that want DKIM (Gmail, Yahoo) file it as spam or refuse it`,
        fix: `generate a key (openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out /etc/ownrelay/dkim-${context.domain}.pem), add it to the relay config under dkim.keys with domain ${context.domain} and a selector, then publish the record the doctor prints`,
      };
    }
    const results = await Promise.all(keys.map((key) => keyProblem(context, key)));
    const problems = results.filter((r) => r.problem);
    const detail = results.map((r) => r.problem ?? r.fact).join('\n');
    if (problems.length === 0) return { status: 'pass', detail };
    return { status: 'fail', detail, fix: problems.map((r) => r.fix).join('\n') };
  },
};

async function keyProblem({ dns }: DoctorContext, key: DkimKey): Promise<{ problem?: string; fact: string; fix: string }> {
  const name = `${key.selector}._domainkey.${key.domain}`;
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey(createPrivateKey(key.privateKeyPem));
  } catch (err) {
    return { problem: `the private key for ${name} is not a PEM private key: ${(err as Error).message}`, fact: '', fix: 'configure a PEM private key (RSA or Ed25519)' };
  }
  const type = publicKey.asymmetricKeyType;
  if (type !== 'rsa' && type !== 'ed25519') return { problem: `the key for ${name} is ${String(type)}; DKIM signs with RSA or Ed25519`, fact: '', fix: 'configure an RSA (2048 bits) or Ed25519 key' };
  const expected = dkimPublicValue(publicKey);
  const record = `v=DKIM1; k=${type}; p=${expected}`;
  const fix = publish(`publish ${name}`, [{ name, type: 'TXT', values: [record] }]);
  const txt = await dns.txt(name);
  if (txt.kind === 'error') return { problem: txt.message, fact: '', fix: 'make sure the resolver answers; then run the doctor again' };
  const published = (txt.kind === 'records' ? txt.records : []).map(parseTags).filter((tags) => tags.has('p'));
  if (published.length === 0) return { problem: `no DKIM key published at ${name}`, fact: '', fix };
  if (published.length > 1) return { problem: `${name} has ${published.length} DKIM records; receivers may pick either`, fact: '', fix: `${fix}\nand delete the others` };
  const tags = published[0]!;
  const p = (tags.get('p') ?? '').replace(/\s+/g, '');
  if (p === '') return { problem: `the key at ${name} is revoked (empty p=)`, fact: '', fix };
  const k = (tags.get('k') ?? 'rsa').toLowerCase();
  if (k !== type) return { problem: `${name} publishes a k=${k} key, the relay signs with ${type}`, fact: '', fix };
  if (normalizedPublished(p, type) !== expected) return { problem: `the key published at ${name} does not match the relay's private key: receivers will fail every signature`, fact: '', fix };
  return { fact: `${name}: ${type} key matches`, fix };
}

/** DKIM's p= for a public key: base64 SPKI DER for RSA, the raw 32 bytes for Ed25519 */
export function dkimPublicValue(publicKey: KeyObject): string {
  const der = publicKey.export({ type: 'spki', format: 'der' });
  return (publicKey.asymmetricKeyType === 'ed25519' ? der.subarray(der.length - 32) : der).toString('base64');
}

/** a published RSA p= in SPKI form (some tools publish PKCS#1, which receivers accept too) */
function normalizedPublished(p: string, type: 'rsa' | 'ed25519'): string {
  if (type !== 'rsa') return p;
  for (const format of ['spki', 'pkcs1'] as const) {
    try {
      return dkimPublicValue(createPublicKey({ key: Buffer.from(p, 'base64'), format: 'der', type: format }));
    } catch {
      // try the next form
    }
  }
  return p;
}

/** "v=DKIM1; k=rsa; p=..." -> tag map (RFC 6376 3.2) */
export function parseTags(text: string): Map<string, string> {
  const tags = new Map<string, string>();
  for (const part of text.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) tags.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim());
  }
  return tags;
}
