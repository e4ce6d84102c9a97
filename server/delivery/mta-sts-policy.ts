/**
 * MTA-STS (RFC 8461) policy text: the `_mta-sts` TXT record, the policy file
 * and its MX patterns. Pure functions, no I/O.
 *
 * Contract:
 * - `policyIdOf` takes the TXT strings of `_mta-sts.<domain>` and answers the
 *   policy id, or undefined when there is not exactly one valid STSv1 record
 *   (RFC 8461 3.1: then the domain has no available policy);
 * - `parsePolicyText` parses a policy file with mailauth's parser and adds the
 *   checks it leaves out (MX pattern syntax); it throws `PolicyTextError` with
 *   a reason for anything invalid;
 * - `mxMatches` applies an MX pattern as RFC 8461 4.1 says: exact names, or a
 *   leading "*." that stands for exactly one label.
 */
import { domainToASCII } from 'node:url';
import { parsePolicy } from 'mailauth/lib/mta-sts';

export type StsMode = 'enforce' | 'testing' | 'none';

export interface StsPolicy {
  mode: StsMode;
  /** MX patterns, lower case, e.g. "mx1.example.org" or "*.mail.example.org" */
  mx: string[];
  maxAgeS: number;
  /** the policy file as lines, for TLS reports ("policy-string") */
  text: string[];
}

export class PolicyTextError extends Error {}

/** RFC 8461 3.1: sts-id = 1*32(ALPHA / DIGIT) */
const POLICY_ID = /^[A-Za-z0-9]{1,32}$/;
const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** policy files are a few hundred bytes; anything this large is not one */
export const MAX_POLICY_BYTES = 64 * 1024;

export function policyIdOf(records: readonly (readonly string[])[]): string | undefined {
  const sts = records.map((chunks) => chunks.join('')).filter((text) => /^v=STSv1\s*(;|$)/.test(text.trim()));
  if (sts.length !== 1) return undefined;
  const fields = new Map<string, string>();
  for (const field of (sts[0] as string).split(';')) {
    const eq = field.indexOf('=');
    if (eq < 0) continue;
    const name = field.slice(0, eq).trim();
    if (!fields.has(name)) fields.set(name, field.slice(eq + 1).trim());
  }
  const id = fields.get('id');
  return id !== undefined && POLICY_ID.test(id) ? id : undefined;
}

export function parsePolicyText(body: string): StsPolicy {
  if (Buffer.byteLength(body, 'utf8') > MAX_POLICY_BYTES) throw new PolicyTextError(`policy is larger than ${MAX_POLICY_BYTES} bytes`);
  let parsed: ReturnType<typeof parsePolicy>;
  try {
    parsed = parsePolicy(body);
  } catch (err) {
    throw new PolicyTextError(err instanceof Error ? err.message : String(err));
  }
  const mode = parsed.mode as StsMode;
  const mx = (parsed.mx ?? []).map((pattern) => pattern.toLowerCase().replace(/\.$/, ''));
  const bad = mx.find((pattern) => !validPattern(pattern));
  if (bad !== undefined) throw new PolicyTextError(`invalid mx pattern "${bad}"`);
  const maxAgeS = Number(parsed.maxAge);
  if (!Number.isInteger(maxAgeS)) throw new PolicyTextError('invalid max_age field');
  const text = body.split(/\r?\n/).map((line) => line.trim()).filter((line) => line !== '');
  return { mode, mx, maxAgeS, text };
}

/** True when the MX host name matches the pattern (RFC 8461 4.1). */
export function mxMatches(host: string, pattern: string): boolean {
  const name = asciiName(host);
  if (!pattern.startsWith('*.')) return name === pattern;
  const suffix = pattern.slice(1); // ".mail.example.org"
  if (!name.endsWith(suffix)) return false;
  const first = name.slice(0, name.length - suffix.length);
  return first.length > 0 && !first.includes('.');
}

export function mxAllowed(host: string, policy: Pick<StsPolicy, 'mx'>): boolean {
  return policy.mx.some((pattern) => mxMatches(host, pattern));
}

/** Lower-case A-label form of a host or domain name, without a trailing dot; '' when it is not a valid name. */
export function asciiName(name: string): string {
  const trimmed = name.trim().replace(/\.$/, '').toLowerCase();
  const ascii = /^[\x21-\x7e]*$/.test(trimmed) ? trimmed : domainToASCII(trimmed);
  return ascii.split('.').every((label) => LABEL.test(label)) ? ascii : '';
}

function validPattern(pattern: string): boolean {
  const name = pattern.startsWith('*.') ? pattern.slice(2) : pattern;
  return name !== '' && name.split('.').every((label) => LABEL.test(label));
}
