/**
 * Turning failed recipients into a DSN for the sender, queued durably before the
 * original message leaves the queue; and, for a message still being retried long
 * after it arrived, one delay warning (a DSN with Action: delayed) queued before
 * the envelope records that it was sent. Never for the null sender (RFC 5321 6.1:
 * a bounce is not bounced), nor for our own bounces.
 */
import { open } from 'node:fs/promises';
import type { QueueEnvelope, RecipientState } from '../queue/envelope';
import { newQueueId } from '../queue/queue-id';
import type { QueueEntry, Spool } from '../queue/spool';
import { buildDsn, headerBlock, statusFromReply } from './dsn';

export interface BounceInput {
  spool: Spool;
  hostname: string;
  entry: QueueEntry;
  bodyOffset: number;
  envelope: QueueEnvelope;
  failed: RecipientState[];
}

/** Returns the bounce's queue entry, or undefined when no bounce is due. */
export function queueBounce(input: BounceInput): Promise<QueueEntry | undefined> {
  return queueDsn(input, input.failed, 'failed');
}

export interface DelayWarningInput extends Omit<BounceInput, 'failed'> {
  /** the recipients still being retried */
  pending: RecipientState[];
}

/** Returns the warning's queue entry, or undefined when none is due (null sender, a bounce, nothing pending). */
export function queueDelayWarning(input: DelayWarningInput): Promise<QueueEntry | undefined> {
  return queueDsn(input, input.pending, 'delayed');
}

async function queueDsn(input: Omit<BounceInput, 'failed'>, recipients: RecipientState[], action: 'failed' | 'delayed'): Promise<QueueEntry | undefined> {
  const { spool, hostname, envelope } = input;
  if (envelope.from === '' || envelope.isBounce || recipients.length === 0) return undefined;
  const originalHeaders = await readHeaderBlock(spool.pathOf(input.entry), input.bodyOffset);
  const dsn = buildDsn({
    reportingMta: hostname,
    queueId: envelope.id,
    originalFrom: envelope.from,
    arrivalDate: new Date(envelope.receivedAt),
    recipients: recipients.map((r) => ({
      address: r.address,
      action,
      status: statusFromReply(r.reply ?? '', action === 'failed' ? '5.0.0' : '4.0.0'),
      diagnostic: r.reply,
      remoteMta: r.remoteHost,
    })),
    originalHeaders,
  });
  const now = Date.now();
  const bounce: QueueEnvelope = {
    version: 1,
    id: newQueueId(now),
    receivedAt: now,
    from: '',
    recipients: [{ address: envelope.from, status: 'pending' }],
    attempts: 0,
    client: { address: '127.0.0.1', helo: hostname, listener: 'bounce' },
    isBounce: true,
  };
  return spool.enqueue(bounce, dsn);
}

async function readHeaderBlock(path: string, bodyOffset: number): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(64 * 1024);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, bodyOffset);
    return headerBlock(buffer.subarray(0, bytesRead));
  } finally {
    await handle.close();
  }
}
