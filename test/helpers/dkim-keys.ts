/**
 * DKIM keys for tests: fresh RSA-2048 and Ed25519 private keys written to PEM
 * files, and a mailauth-style resolver that asks a DNS server on loopback.
 */
import { generateKeyPairSync } from 'node:crypto';
import { promises as dnsPromises } from 'node:dns';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface TestKeyFiles {
  rsaFile: string;
  ed25519File: string;
}

export async function writeTestDkimKeys(dir: string): Promise<TestKeyFiles> {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ed = generateKeyPairSync('ed25519');
  const rsaFile = join(dir, 'dkim-rsa.pem');
  const ed25519File = join(dir, 'dkim-ed25519.pem');
  await writeFile(rsaFile, rsa.privateKey.export({ format: 'pem', type: 'pkcs1' }), { mode: 0o600 });
  await writeFile(ed25519File, ed.privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
  return { rsaFile, ed25519File };
}

/** `resolver(name, rrtype)` as mailauth calls it, answered by the given servers only. */
export function loopbackResolver(servers: string[]): (name: string, rrtype: string) => Promise<unknown> {
  const resolver = new dnsPromises.Resolver({ timeout: 2000, tries: 2 });
  resolver.setServers(servers);
  return (name, rrtype) => resolver.resolve(name, rrtype as 'TXT');
}
