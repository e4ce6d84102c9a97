/**
 * What the stages remember about one connection and its current transaction.
 * smtp-server keeps the parsed envelope; we keep our normalized recipients,
 * the verdict trail and the error count (too many errors -> 421).
 */
import type { DnsblVerdict } from '../inbound/dnsbl';
import type { RecipientDsn } from '../queue/envelope';
import type { Verdict } from './verdict';

export interface Transaction {
  /** normalized recipients in RCPT order (domainless postmaster made explicit) */
  recipients: string[];
  trail: Verdict[];
  /** DSN parameters by recipient, only for recipients that gave any */
  dsn?: Map<string, RecipientDsn>;
  /** set when the message goes to the hold queue instead of delivery (why) */
  hold?: string;
}

export interface SessionState {
  errors: number;
  /** failed AUTH attempts on this connection */
  authFailures: number;
  transaction: Transaction;
  /** the DNS blocklists' verdict on the client, asked at connect (mx listeners, strangers only) */
  blocklisted?: Promise<DnsblVerdict>;
}

export function newTransaction(): Transaction {
  return { recipients: [], trail: [] };
}

export class SessionRegistry {
  private readonly sessions = new Map<string, SessionState>();

  get(id: string): SessionState {
    let state = this.sessions.get(id);
    if (!state) {
      state = { errors: 0, authFailures: 0, transaction: newTransaction() };
      this.sessions.set(id, state);
    }
    return state;
  }

  delete(id: string): void {
    this.sessions.delete(id);
  }
}
