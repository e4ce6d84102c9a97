/**
 * Each stage answers with a named verdict. Accept carries a short reason for the
 * trail; reject (5xx) and defer (4xx) carry the SmtpError the client receives.
 */
import { SmtpError } from './smtp-error';

export type StageName = 'connect' | 'auth' | 'sender' | 'recipient' | 'data';

export type Verdict =
  | { action: 'accept'; stage: StageName; reason: string }
  | { action: 'reject' | 'defer'; stage: StageName; error: SmtpError };

export function accept(stage: StageName, reason: string): Verdict {
  return { action: 'accept', stage, reason };
}

export function refuse(stage: StageName, code: number, enhancedStatus: string, clientText: string, reason?: string): Verdict {
  const error = new SmtpError(code, enhancedStatus, clientText, reason ?? clientText);
  return { action: error.isTemporary ? 'defer' : 'reject', stage, error };
}

/** A compact form of a verdict for the message's log line. */
export function trailItem(verdict: Verdict): string {
  return verdict.action === 'accept'
    ? `${verdict.stage}:accept(${verdict.reason})`
    : `${verdict.stage}:${verdict.action}(${verdict.error.reason})`;
}
