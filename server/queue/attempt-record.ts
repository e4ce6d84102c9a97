/**
 * What an attempt's results do to a queued message, and the log lines they make.
 */
import type { RecipientResult } from '../delivery/types';
import type { Logger } from '../log/logger';
import { wantsNotice, type QueueEnvelope } from './envelope';

/** Sees every recipient result as it is recorded (metrics, status); must be cheap and must not throw. */
export interface DeliveryObserver {
  recipientResult(envelope: QueueEnvelope, result: RecipientResult): void;
}

/**
 * Applies an attempt's per-recipient results to the envelope (delivered and
 * failed recipients leave the pending set; each keeps the last reply and host)
 * and writes one log line per outcome, host and reply: `delivered` at info,
 * `deferred` and `failed` at warn, each with the queue id, sender, recipients,
 * size, attempts and the time since the message arrived.
 */
export function recordResults(envelope: QueueEnvelope, results: readonly RecipientResult[], size: number, logger: Logger, observer?: DeliveryObserver): void {
  const byOutcome = new Map<string, RecipientResult[]>();
  for (const result of results) {
    const recipient = envelope.recipients.find((r) => r.address === result.address && r.status === 'pending');
    if (!recipient) continue;
    recipient.reply = result.reply;
    recipient.remoteHost = result.remoteHost;
    observer?.recipientResult(envelope, result);
    if (result.outcome === 'delivered') {
      recipient.status = 'delivered';
      if (result.successAction && wantsNotice(recipient, 'SUCCESS')) recipient.successAction = result.successAction;
    }
    if (result.outcome === 'failed') recipient.status = 'failed';
    const key = `${result.outcome}|${result.remoteHost ?? ''}|${result.reply}`;
    byOutcome.set(key, [...(byOutcome.get(key) ?? []), result]);
  }
  for (const group of byOutcome.values()) {
    const first = group[0]!;
    const event = first.outcome === 'delivered' ? 'delivered' : first.outcome === 'failed' ? 'failed' : 'deferred';
    const level = event === 'delivered' ? 'info' : 'warn';
    logger[level](
      {
        event,
        queueId: envelope.id,
        from: envelope.from,
        to: group.map((r) => r.address),
        size,
        remoteHost: first.remoteHost,
        reply: first.reply,
        attempts: envelope.attempts,
        delayMs: Date.now() - envelope.receivedAt,
      },
      `${event} ${envelope.id} to ${group.map((r) => `<${r.address}>`).join(', ')}: ${first.reply}`,
    );
  }
}
