/**
 * The notices an attempt owes the sender (RFC 3464 DSNs), queued as messages of
 * their own before the attempt's envelope is written, so a crash can send one
 * twice but never lose it: the bounce for failed recipients, the success notice
 * for NOTIFY=SUCCESS, and the one delay warning of a message that is overdue.
 */
import type { RelayConfig } from '../config/schema';
import { queueBounce, queueDelayWarning, queueSuccessNotice } from '../delivery/bounce';
import type { Logger } from '../log/logger';
import { wantsNotice, type QueueEnvelope, type RecipientState } from './envelope';
import type { QueueFileInfo } from './queue-file';
import type { QueueEntry, Spool } from './spool';

export interface NoticeDeps {
  spool: Spool;
  /** the running config (hostname, delay warning) */
  config: RelayConfig;
  logger: Logger;
  /** hands a queued notice to the scheduler */
  enqueue(entry: QueueEntry): void;
}

/**
 * The bounce for failed recipients not yet reported, for those that want one
 * (NOTIFY); false when it could not be queued (e.g. a full spool): the message
 * then stays queued, and its next attempt queues the DSN.
 */
export async function queueOwedBounce(deps: NoticeDeps, entry: QueueEntry, info: QueueFileInfo, envelope: QueueEnvelope): Promise<boolean> {
  const { spool, config, logger } = deps;
  const unnotified = envelope.recipients.filter((r) => r.status === 'failed' && !r.notified);
  if (unnotified.length === 0) return true;
  const reported = unnotified.filter((r) => wantsNotice(r, 'FAILURE'));
  try {
    const bounce = await queueBounce({ spool, hostname: config.hostname, entry, bodyOffset: info.bodyOffset, size: info.size, envelope, failed: reported });
    for (const r of unnotified) r.notified = true;
    const why = envelope.from === '' || envelope.isBounce ? 'null sender or a bounce itself' : 'the sender asked for none (NOTIFY)';
    logger.warn(
      { event: 'bounced', queueId: envelope.id, from: envelope.from, to: unnotified.map((r) => r.address), bounceId: bounce?.id, reply: unnotified[0]?.reply },
      bounce ? `bounced ${envelope.id}: DSN ${bounce.id} to <${envelope.from}>` : `bounced ${envelope.id}: no DSN (${why})`,
    );
    if (bounce) deps.enqueue(bounce);
    return true;
  } catch (err) {
    logger.error(
      { event: 'bounce-error', queueId: envelope.id, from: envelope.from, to: unnotified.map((r) => r.address), err: String(err) },
      `could not queue the DSN for ${envelope.id}; the message stays queued and the DSN is tried again at its next attempt`,
    );
    return false;
  }
}

/**
 * The success DSN (RFC 3461 NOTIFY=SUCCESS) for delivered recipients that asked
 * for one and that no next server reports on; false when it could not be
 * queued (the message stays queued, as for a bounce).
 */
export async function queueOwedSuccessNotice(deps: NoticeDeps, entry: QueueEntry, info: QueueFileInfo, envelope: QueueEnvelope): Promise<boolean> {
  const { spool, config, logger } = deps;
  const owed = envelope.recipients.filter((r) => r.status === 'delivered' && r.successAction !== undefined && !r.notified);
  if (owed.length === 0) return true;
  try {
    const notice = await queueSuccessNotice({ spool, hostname: config.hostname, entry, bodyOffset: info.bodyOffset, size: info.size, envelope, delivered: owed });
    for (const r of owed) r.notified = true;
    if (notice) {
      logger.info({ event: 'success-notice', queueId: envelope.id, from: envelope.from, to: owed.map((r) => r.address), noticeId: notice.id }, `success notice ${notice.id} for ${envelope.id} to <${envelope.from}>`);
      deps.enqueue(notice);
    }
    return true;
  } catch (err) {
    logger.error(
      { event: 'success-notice-error', queueId: envelope.id, from: envelope.from, to: owed.map((r) => r.address), err: String(err) },
      `could not queue the success notice for ${envelope.id}; the message stays queued and the notice is tried again at its next attempt`,
    );
    return false;
  }
}

/**
 * Once per message, when it is still undelivered `delayWarningAfterMs` after it
 * arrived: a DSN with Action: delayed to the sender, queued before the envelope
 * (rewritten next by the caller) records that it was sent. A crash in between
 * can send the warning twice, never lose it; a failure to queue it is logged and
 * tried again after the next attempt.
 */
export async function warnIfDelayed(deps: NoticeDeps, entry: QueueEntry, info: QueueFileInfo, envelope: QueueEnvelope, pending: readonly RecipientState[], now: number): Promise<void> {
  const { spool, config, logger } = deps;
  const after = config.delivery.retry.delayWarningAfterMs;
  if (after === 0 || envelope.delayWarned || now - envelope.receivedAt < after) return;
  try {
    const wanted = pending.filter((r) => wantsNotice(r, 'DELAY'));
    const warning = await queueDelayWarning({ spool, hostname: config.hostname, entry, bodyOffset: info.bodyOffset, size: info.size, envelope, pending: wanted });
    envelope.delayWarned = true;
    if (!warning) return;
    logger.info(
      { event: 'delay-warning', queueId: envelope.id, from: envelope.from, to: wanted.map((r) => r.address), warningId: warning.id, delayMs: now - envelope.receivedAt },
      `${envelope.id} still undelivered after ${Math.round((now - envelope.receivedAt) / 60_000)} min: delay warning ${warning.id} to <${envelope.from}>`,
    );
    deps.enqueue(warning);
  } catch (err) {
    logger.error({ event: 'delay-warning-error', queueId: envelope.id, err: String(err) }, `could not queue the delay warning for ${envelope.id}; trying again after the next attempt`);
  }
}
