/**
 * DKIM signing of mail that leaves over SMTP (mailauth's signer, relaxed/relaxed).
 *
 * Contract:
 * - A message is signed when its From header's domain is a signing domain or one
 *   of its subdomains (so the signature aligns for DMARC); the most specific
 *   signing domain wins, and every key of that domain signs (RSA and Ed25519 side
 *   by side, RFC 8463). Other messages pass through untouched.
 * - Signing happens at delivery, on the bytes as queued, and the signature time
 *   (t=) is the time the message was accepted. RSA (PKCS#1 v1.5) and Ed25519
 *   signatures are deterministic, so every attempt and every destination of one
 *   message carries the same signature: the message is signed once, in effect,
 *   and a key rotated while mail waits in the queue applies to its next attempt.
 * - The DKIM-Signature fields are prepended to the message; nothing after them
 *   is changed, so the signature covers exactly what the receiver gets.
 * - A signing error throws; the caller defers the message rather than sending
 *   unsigned mail that the domain's DMARC policy would quarantine.
 */
import type { dkimSign as DkimSign } from 'mailauth';
import { openWithAddedHeaders } from '../delivery/prefixed-message';
import type { OutboundMessage } from '../delivery/types';
import type { DkimSigningKey } from './keys';
import { fromDomain, readHeaderBlock } from './header-block';

export class DkimSigner {
  private readonly byDomain = new Map<string, DkimSigningKey[]>();

  constructor(keys: readonly DkimSigningKey[]) {
    for (const key of keys) {
      const list = this.byDomain.get(key.domain) ?? [];
      list.push(key);
      this.byDomain.set(key.domain, list);
    }
  }

  get enabled(): boolean {
    return this.byDomain.size > 0;
  }

  /** The keys that sign mail from `domain`: those of the most specific signing domain that contains it. */
  keysFor(domain: string): DkimSigningKey[] {
    const labels = domain.toLowerCase().replace(/\.$/, '').split('.');
    for (let i = 0; i < labels.length - 1; i++) {
      const keys = this.byDomain.get(labels.slice(i).join('.'));
      if (keys) return keys;
    }
    return [];
  }

  /**
   * The message with DKIM-Signature fields in front, or the same message when no
   * key applies. `receivedAt` (ms since epoch) becomes the signature's t=.
   */
  async sign(message: OutboundMessage, receivedAt: number): Promise<OutboundMessage> {
    if (!this.enabled) return message;
    const domain = fromDomain(await readHeaderBlock(message.open()));
    const keys = domain ? this.keysFor(domain) : [];
    if (keys.length === 0) return message;
    const signatureData = keys.map((key) => ({
      signingDomain: key.domain,
      selector: key.selector,
      privateKey: key.privateKeyPem,
      algorithm: key.algorithm,
      canonicalization: 'relaxed/relaxed',
    }));
    const result = await loadDkimSign()(message.open(), {
      ...signatureData[0]!,
      signatureData,
      signTime: new Date(receivedAt),
    });
    if (result.errors && result.errors.length > 0) {
      throw new Error(`DKIM signing failed: ${result.errors.map((err: unknown) => (err instanceof Error ? err.message : String(err))).join('; ')}`);
    }
    // without a signature mailauth returns a bare CRLF, which would end the header block
    if (!/^DKIM-Signature:/i.test(result.signatures)) throw new Error('DKIM signing produced no signature');
    const signatures = Buffer.from(result.signatures, 'latin1');
    return {
      ...message,
      size: message.size + signatures.length,
      open: openWithAddedHeaders({ before: signatures, length: signatures.length }, () => message.open()),
    };
  }
}

let dkimSignFunction: typeof DkimSign | undefined;

/**
 * mailauth's signer, loaded at the first message to sign: the library with its
 * dependencies costs tens of MiB of memory, which a relay without keys never needs.
 */
function loadDkimSign(): typeof DkimSign {
  dkimSignFunction ??= (require('mailauth/lib/dkim/sign') as { dkimSign: typeof DkimSign }).dkimSign;
  return dkimSignFunction;
}
