/**
 * The one error type for SMTP replies. `message` is what the client sees and must
 * leak nothing internal; `reason` is for the log. Codes always come with an
 * enhanced status (RFC 3463), which the listener sends verbatim.
 *
 * Rule: an error nobody classified is temporary (451 4.3.0), never permanent,
 * because a wrong 5xx loses mail.
 */
import { isOutOfSpace } from '../queue/spool-space';

export class SmtpError extends Error {
  readonly responseCode: number;

  constructor(
    code: number,
    readonly enhancedStatus: string,
    clientText: string,
    readonly reason: string = clientText,
  ) {
    // smtp-server sends `${responseCode} ${message}`; the listener keeps its own
    // enhanced code out when the message already starts with one
    super(`${enhancedStatus} ${clientText}`);
    this.responseCode = code;
    this.name = 'SmtpError';
  }

  get isTemporary(): boolean {
    return this.responseCode >= 400 && this.responseCode < 500;
  }

  /** "554 5.7.1 Relay access denied" */
  toReply(): string {
    return `${this.responseCode} ${this.message}`;
  }
}

/**
 * Wraps anything thrown into an SmtpError: a full disk becomes 452 4.3.1
 * (insufficient system storage), any other unknown failure 451 4.3.0.
 */
export function asSmtpError(err: unknown, context: string): SmtpError {
  if (err instanceof SmtpError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  if (isOutOfSpace(err)) return new SmtpError(452, '4.3.1', 'Insufficient system storage, try again later', `${context}: ${detail}`);
  return new SmtpError(451, '4.3.0', 'Local error in processing, try again later', `${context}: ${detail}`);
}
