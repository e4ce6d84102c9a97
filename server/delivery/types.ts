/**
 * Contracts between the scheduler and the ways of delivering a message.
 *
 * A transport receives one message for a set of recipients that share a
 * destination and answers with exactly one result per recipient. It never
 * throws for a remote or network problem: those become `deferred` (4xx, timeouts,
 * unreachable hosts, anything unclassified) or `failed` (a definite 5xx or a
 * permanent condition such as a null MX). A wrong `failed` loses mail, so when in
 * doubt a transport answers `deferred`.
 */
import type { Readable } from 'node:stream';

export type RecipientOutcome = 'delivered' | 'deferred' | 'failed';

export interface RecipientResult {
  address: string;
  outcome: RecipientOutcome;
  /** the remote reply or a description of the local error, e.g. "550 5.1.1 no such user" */
  reply: string;
  /** the host that answered (MX name or next hop), if one was reached */
  remoteHost?: string;
  /**
   * The destination as a whole could not be used: its DNS failed, no host of it
   * answered, or its MTA-STS policy ruled out every host. Every message to it
   * would fare the same for now (the scheduler then suspends it; see Scheduler).
   */
  unreachable?: true;
}

export interface OutboundMessage {
  /** envelope sender, '' for the null sender */
  from: string;
  recipients: string[];
  /** size of the message in bytes */
  size: number;
  /** opens the message bytes (CRLF line endings, not dot-stuffed); may be called more than once */
  open(): Readable;
  /** queue id, for logs */
  queueId: string;
  /** when the message was accepted (ms since epoch): the DKIM signature time; default now */
  receivedAt?: number;
}

export interface Transport {
  deliver(message: OutboundMessage): Promise<RecipientResult[]>;
  /** closes cached connections; called on shutdown */
  close(): Promise<void>;
}
