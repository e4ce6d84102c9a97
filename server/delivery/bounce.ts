/**
 * Turning failed recipients into a DSN for the sender, queued durably before the
 * original message leaves the queue; for a message still being retried long
 * after it arrived, one delay warning (a DSN with Action: delayed) queued before
 * the envelope records that it was sent; and the success notices recipients asked
 * for with RFC 3461 NOTIFY=SUCCESS. Never for the null sender (RFC 5321 6.1: a
 * bounce is not bounced), nor for our own bounces.
 *
 * Which recipients are reported is the caller's choice (see wantsNotice); the
 * sender's ENVID, each recipient's ORCPT and, for failures, RET=FULL are honoured
 * here.
 */
import { open } from 'node:fs/promises';
import { ownMessageEnvelope, type QueueEnvelope, type RecipientState } from '../queue/envelope';
import type { QueueEntry, Spool } from '../queue/spool';
import { FALLBACK_STATUS, buildDsn, headerBlock, statusFromReply, type DsnAction } from './dsn';

/** RET=FULL returns a message up to this size whole; a larger one comes back as its headers. */
export const FULL_RETURN_MAX_BYTES = 1024 * 1024;

export interface BounceInput {
  spool: Spool;
  hostname: string;
  entry: QueueEntry;
  bodyOffset: number;
  /** the message's size in bytes (after bodyOffset) */
  size: number;
  envelope: QueueEnvelope;
  failed: RecipientState[];
}

/** Returns the bounce's queue entry, or undefined when no bounce is due. */
export function queueBounce(input: BounceInput): Promise<QueueEntry | undefined> {
  return queueDsn(input, input.failed.map((recipient) => ({ recipient, action: 'failed' })));
}

export interface SuccessNoticeInput extends Omit<BounceInput, 'failed'> {
  /** delivered recipients with their successAction set */
  delivered: RecipientState[];
}

/** A success DSN (Action: delivered or relayed); undefined when none is due. */
export function queueSuccessNotice(input: SuccessNoticeInput): Promise<QueueEntry | undefined> {
  const reported = input.delivered.filter((r) => r.successAction !== undefined);
  return queueDsn(input, reported.map((recipient) => ({ recipient, action: recipient.successAction! })));
}

export interface DelayWarningInput extends Omit<BounceInput, 'failed'> {
  /** the recipients still being retried */
  pending: RecipientState[];
}

/** Returns the warning's queue entry, or undefined when none is due (null sender, a bounce, nothing pending). */
export function queueDelayWarning(input: DelayWarningInput): Promise<QueueEntry | undefined> {
  return queueDsn(input, input.pending.map((recipient) => ({ recipient, action: 'delayed' })));
}

async function queueDsn(input: Omit<BounceInput, 'failed'>, reported: Array<{ recipient: RecipientState; action: DsnAction }>): Promise<QueueEntry | undefined> {
  const { spool, hostname, envelope } = input;
  if (envelope.from === '' || envelope.isBounce || reported.length === 0) return undefined;
  const path = spool.pathOf(input.entry);
  const returnWhole = envelope.dsn?.ret === 'FULL' && reported.some((r) => r.action === 'failed') && input.size <= FULL_RETURN_MAX_BYTES;
  const originalMessage = returnWhole ? await readBytes(path, input.bodyOffset, input.size) : undefined;
  const originalHeaders = headerBlock(originalMessage ?? (await readBytes(path, input.bodyOffset, 64 * 1024)));
  const dsn = buildDsn({
    reportingMta: hostname,
    queueId: envelope.id,
    originalFrom: envelope.from,
    arrivalDate: new Date(envelope.receivedAt),
    recipients: reported.map(({ recipient: r, action }) => ({
      address: r.address,
      action,
      status: statusFromReply(r.reply ?? '', FALLBACK_STATUS[action]),
      diagnostic: r.reply,
      remoteMta: r.remoteHost,
      originalRecipient: r.orcpt,
    })),
    originalHeaders,
    originalMessage,
    envelopeId: envelope.dsn?.envid,
  });
  const bounce: QueueEnvelope = { ...ownMessageEnvelope({ to: [envelope.from], hostname, source: 'bounce' }), isBounce: true };
  return spool.enqueue(bounce, dsn);
}

/** Up to `length` bytes of the file from `position` (fewer at its end). */
async function readBytes(path: string, position: number, length: number): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(length);
    let filled = 0;
    while (filled < length) {
      const { bytesRead } = await handle.read(buffer, filled, length - filled, position + filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    return buffer.subarray(0, filled);
  } finally {
    await handle.close();
  }
}
