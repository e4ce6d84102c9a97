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
import type { EnvelopeDsn, RecipientDsn } from '../queue/envelope';

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
  /**
   * For a delivered recipient, what a success DSN would say (RFC 3464 Action):
   * 'delivered' into a mailbox here, 'relayed' to a server that was not asked to
   * report because it does not offer DSN. Absent when the next server offered DSN
   * and got the recipient's NOTIFY: reporting is its job from then on.
   */
  successAction?: 'delivered' | 'relayed';
}

/** RFC 3461 parameters to pass on to servers that offer DSN. */
export interface OutboundDsn {
  /** RET and ENVID of MAIL FROM */
  envelope?: EnvelopeDsn;
  /** NOTIFY and ORCPT by recipient address, for recipients that gave any */
  recipients: ReadonlyMap<string, RecipientDsn>;
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
  /** the client's DSN parameters, when it gave any */
  dsn?: OutboundDsn;
  /** a TLS report (RFC 8460 5.3): delivered despite TLS problems, so without MTA-STS enforcement */
  tlsReport?: boolean;
}

export interface Transport {
  deliver(message: OutboundMessage): Promise<RecipientResult[]>;
  /** closes cached connections; called on shutdown */
  close(): Promise<void>;
}
