/**
 * The RFC 8461 MTA-STS policy text, rendered by one pure function that both sides
 * use: the infra program (which publishes `_mta-sts.<domain>` TXT with the policy's
 * id) and the relay (which serves the text at
 * https://mta-sts.<domain>/.well-known/mta-sts.txt). Same input, same bytes, same id.
 */
import { createHash } from 'node:crypto';

export type MtaStsMode = 'testing' | 'enforce';

/**
 * The policy file (CRLF lines). `id` is the first 32 hex digits of the SHA-256 of
 * the text: it changes exactly when the policy text changes, and fits the RFC's
 * 1-32 alphanumerics.
 */
export function renderMtaStsPolicy(input: { mode: MtaStsMode; maxAgeSeconds: number; mxHosts: string[] }): { text: string; id: string } {
  const lines = ['version: STSv1', `mode: ${input.mode}`, ...[...new Set(input.mxHosts)].map((host) => `mx: ${host}`), `max_age: ${input.maxAgeSeconds}`];
  const text = lines.map((line) => `${line}\r\n`).join('');
  const id = createHash('sha256').update(text, 'utf8').digest('hex').slice(0, 32);
  return { text, id };
}
