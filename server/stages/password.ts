/**
 * Password hashes for SMTP AUTH users: scrypt with a random salt, encoded as
 * `$scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt b64>$<hash b64>`.
 * Verification takes the same time whether the user exists or not (see
 * `verifyPassword` with a dummy hash) and compares in constant time.
 */
import { randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';

const DEFAULT_LOG_N = 15;
const DEFAULT_R = 8;
const DEFAULT_P = 1;
const KEY_BYTES = 32;

function scrypt(password: string, salt: Buffer, keyBytes: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scryptCb(password, salt, keyBytes, options, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

function scryptOptions(logN: number, r: number, p: number): ScryptOptions {
  // maxmem must cover 128 * N * r bytes, with headroom
  return { N: 2 ** logN, r, p, maxmem: 256 * 2 ** logN * r + 1024 * 1024 };
}

export async function hashPassword(plain: string, logN = DEFAULT_LOG_N): Promise<string> {
  const salt = randomBytes(16);
  const key = await scrypt(plain, salt, KEY_BYTES, scryptOptions(logN, DEFAULT_R, DEFAULT_P));
  return `$scrypt$ln=${logN},r=${DEFAULT_R},p=${DEFAULT_P}$${salt.toString('base64')}$${key.toString('base64')}`;
}

interface ParsedHash {
  logN: number;
  r: number;
  p: number;
  salt: Buffer;
  key: Buffer;
}

export function parseHash(hash: string): ParsedHash | undefined {
  const match = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(hash);
  if (!match) return undefined;
  const [, logN, r, p, salt, key] = match as unknown as [string, string, string, string, string, string];
  const parsed = { logN: Number(logN), r: Number(r), p: Number(p), salt: Buffer.from(salt, 'base64'), key: Buffer.from(key, 'base64') };
  if (parsed.logN < 10 || parsed.logN > 20 || parsed.key.length < 16 || parsed.salt.length < 8) return undefined;
  return parsed;
}

/** A well-formed hash that no password matches, to spend the same time on unknown users. */
export const UNMATCHABLE_HASH = `$scrypt$ln=${DEFAULT_LOG_N},r=${DEFAULT_R},p=${DEFAULT_P}$${Buffer.alloc(16).toString('base64')}$${Buffer.alloc(KEY_BYTES).toString('base64')}`;

export async function verifyPassword(plain: string, hash: string): Promise<boolean> {
  const parsed = parseHash(hash);
  if (!parsed) return false;
  const key = await scrypt(plain, parsed.salt, parsed.key.length, scryptOptions(parsed.logN, parsed.r, parsed.p));
  return timingSafeEqual(key, parsed.key);
}
