/**
 * How the replies of an SMTP transaction become per-recipient results: each
 * recipient refused at RCPT gets its own reply, the others the reply to the
 * transaction; a 2xx is delivered, a 5xx failed (503 aside), anything else is
 * deferred and tried again.
 */
import type { OutboundMessage, RecipientOutcome, RecipientResult } from './types';
import { oneLine, type Session, type SmtpError } from './connection-cache';

/** Why a whole transaction did not happen, and where (when a host was reached). */
export type Failure = { reason: string; remoteHost?: string };

/** A refusal because the transaction already had as many recipients as the server takes (RFC 5321 4.5.3.1.10). */
export function isOverRecipientLimit(result: RecipientResult): boolean {
  if (result.outcome === 'delivered') return false;
  const reply = result.reply;
  if (!reply.startsWith('452') && !reply.startsWith('552')) return false;
  return /^[45]52[ -]+[45]\.5\.3\b/.test(reply) || /too many recipients/i.test(reply);
}

/** An over-limit refusal that will not be sent again now: deferred, whatever its code (a 552 of this kind is not permanent). */
export function deferOverLimit(result: RecipientResult): RecipientResult {
  return isOverRecipientLimit(result) ? { ...result, outcome: 'deferred' } : result;
}

/** 2xx delivered; 5xx failed, except 503 (bad sequence: the session, not the message); anything else deferred. */
export function outcomeOf(code: number | undefined): RecipientOutcome {
  if (code === undefined) return 'deferred';
  if (code >= 200 && code < 300) return 'delivered';
  if (code >= 500 && code < 600 && code !== 503) return 'failed';
  return 'deferred';
}

/** The same result for every recipient: a failure before any RCPT (no connection, a refused MAIL FROM, an unreadable message). */
export function everyone(message: OutboundMessage, outcome: RecipientOutcome, failure: Failure): RecipientResult[] {
  return message.recipients.map((address) => withHost({ address, outcome, reply: failure.reason }, failure.remoteHost));
}

/** Marks results of a destination that could not be reached at all (the scheduler then suspends it). */
export function unreachable(results: RecipientResult[]): RecipientResult[] {
  return results.map((result) => ({ ...result, unreachable: true }));
}

function withHost(result: RecipientResult, remoteHost: string | undefined): RecipientResult {
  return remoteHost === undefined ? result : { ...result, remoteHost };
}

/** Recipients refused at RCPT get their own reply; the others get `rest`. */
export function perRecipient(message: OutboundMessage, rejected: readonly SmtpError[], rest: Omit<RecipientResult, 'address' | 'remoteHost'>, remoteHost: string): RecipientResult[] {
  const byAddress = new Map(rejected.filter((err) => err.recipient !== undefined).map((err) => [err.recipient as string, err]));
  return message.recipients.map((address) => {
    const refusal = byAddress.get(address.trim());
    if (!refusal) return { address, ...rest, remoteHost };
    return { address, outcome: outcomeOf(refusal.responseCode), reply: oneLine(refusal.response ?? refusal.message), remoteHost };
  });
}

/** A transaction the server refused with a reply: MAIL FROM for everyone, otherwise per recipient. */
export function transactionFailure(message: OutboundMessage, err: SmtpError, rejected: readonly SmtpError[], remoteHost: string): RecipientResult[] {
  const whole = { outcome: outcomeOf(err.responseCode), reply: oneLine(err.response ?? err.message) };
  if (err.command === 'MAIL FROM') return message.recipients.map((address) => ({ address, ...whole, remoteHost }));
  return perRecipient(message, rejected, whole, remoteHost);
}

/**
 * The RCPT refusals of the failed transaction. nodemailer puts them on the error
 * only when every recipient was refused; after a refused DATA they are on the
 * connection's envelope (an internal field, read defensively).
 */
export function rejectedErrors(session: Session, err: SmtpError): SmtpError[] {
  if (err.rejectedErrors) return err.rejectedErrors;
  const envelope = (session.connection as unknown as { _envelope?: { rejectedErrors?: SmtpError[] } })._envelope;
  return Array.isArray(envelope?.rejectedErrors) ? envelope.rejectedErrors : [];
}
