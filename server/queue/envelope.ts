/**
 * The envelope of a queued message: everything the relay knows about it besides
 * its bytes. It is stored as JSON at the head of the queue file (see queue-file.ts).
 */
import { domainToASCII } from 'node:url';
import { newQueueId } from './queue-id';

export type RecipientStatus = 'pending' | 'delivered' | 'failed';

/** What a recipient's RFC 3461 NOTIFY asks to be told of. */
export type NotifyCondition = 'SUCCESS' | 'FAILURE' | 'DELAY';

export interface RecipientState {
  /** the address as given at RCPT TO (parsed by smtp-server, never re-parsed from headers) */
  address: string;
  status: RecipientStatus;
  /** the last reply (or local error) for this recipient, as shown in logs and DSNs */
  reply?: string;
  /** the host that gave `reply` */
  remoteHost?: string;
  /**
   * The recipient's final DSN (a bounce, or a success notice) has been queued, or
   * was not wanted: it is not queued twice.
   */
  notified?: boolean;
  /**
   * RFC 3461 NOTIFY: the conditions the sender wants a DSN for; [] is NOTIFY=NEVER.
   * Absent: the client gave none, and failures and delays are reported.
   */
  notify?: NotifyCondition[];
  /** RFC 3461 ORCPT, decoded: "addr-type;address", e.g. "rfc822;alice@example.com" */
  orcpt?: string;
  /**
   * A success DSN is owed for this delivered recipient (it asked NOTIFY=SUCCESS):
   * 'delivered' into a mailbox here, or 'relayed' to a server that does not do DSN.
   */
  successAction?: 'delivered' | 'relayed';
}

/** A recipient's RFC 3461 parameters (NOTIFY, ORCPT) as its RCPT TO gave them. */
export type RecipientDsn = Pick<RecipientState, 'notify' | 'orcpt'>;

/** RFC 3461 parameters of MAIL FROM. */
export interface EnvelopeDsn {
  /** how much of the message a failure DSN returns; absent: the headers */
  ret?: 'FULL' | 'HDRS';
  /** the sender's id for this transaction, decoded; DSNs quote it as Original-Envelope-Id */
  envid?: string;
}

export interface ClientInfo {
  address: string;
  helo: string;
  /** the authenticated user, if any */
  user?: string;
  /** the listener that accepted the message, e.g. "submission:587" */
  listener: string;
}

export interface QueueEnvelope {
  version: 1;
  /** queue id: unique, sortable by arrival, safe as a file name */
  id: string;
  /** when the 250 was given (ms since epoch) */
  receivedAt: number;
  /** envelope sender; '' is the null sender (bounces), which never gets a bounce */
  from: string;
  recipients: RecipientState[];
  /** delivery attempts made so far */
  attempts: number;
  client: ClientInfo;
  /** RFC 3461 RET and ENVID, when the client gave them */
  dsn?: EnvelopeDsn;
  /** true for DSNs this relay generated */
  isBounce?: boolean;
  /**
   * A TLS report this relay generated (RFC 8460 5.3): it is delivered despite TLS
   * problems (no MTA-STS enforcement), and its sessions are not counted in reports.
   */
  tlsReport?: boolean;
  /** the sender has been told that the message is delayed (once per message) */
  delayWarned?: boolean;
  /**
   * Header fields this relay adds in front of the message when it passes it on
   * (Authentication-Results, Received-SPF), each ending in CRLF. They are kept
   * here because they are known only after the message bytes were spooled.
   */
  headers?: string;
  /**
   * Header fields this relay inserts `at` that many bytes into the message when it
   * passes it on: right after its own Received field (a Date or Message-ID the
   * customer's own mail lacked), so the trace fields stay one block at the top.
   */
  insertedHeaders?: { at: number; text: string };
  /**
   * Bytes of the message after the envelope, written at commit: a queue file whose
   * message is shorter or longer is corrupt (a truncated file is never delivered).
   * Absent in files written before this field existed.
   */
  size?: number;
}

/**
 * The envelope of a message the relay writes itself (a DSN, a TLS report): the
 * null sender, so it is never bounced, accepted now, from 127.0.0.1; `source`
 * names the part that wrote it (in place of a listener).
 */
export function ownMessageEnvelope(opts: { to: string[]; hostname: string; source: string }): QueueEnvelope {
  const now = Date.now();
  return {
    version: 1,
    id: newQueueId(now),
    receivedAt: now,
    from: '',
    recipients: opts.to.map((address) => ({ address, status: 'pending' })),
    attempts: 0,
    client: { address: '127.0.0.1', helo: opts.hostname, listener: opts.source },
  };
}

/** What the relay adds to a message when it passes it on: fields in front, and fields inserted at an offset. */
export interface AddedHeaders {
  before?: Buffer;
  inserted?: { at: number; bytes: Buffer };
  /** bytes added in all */
  length: number;
}

/** The header fields envelope.headers and envelope.insertedHeaders add, or undefined when there are none. */
export function addedHeaders(envelope: QueueEnvelope): AddedHeaders | undefined {
  const before = envelope.headers ? Buffer.from(envelope.headers, 'utf8') : undefined;
  const inserted = envelope.insertedHeaders ? { at: envelope.insertedHeaders.at, bytes: Buffer.from(envelope.insertedHeaders.text, 'utf8') } : undefined;
  if (!before && !inserted) return undefined;
  return { ...(before ? { before } : {}), ...(inserted ? { inserted } : {}), length: (before?.length ?? 0) + (inserted?.bytes.length ?? 0) };
}

export function pendingRecipients(envelope: QueueEnvelope): RecipientState[] {
  return envelope.recipients.filter((r) => r.status === 'pending');
}

/**
 * Whether the sender wants a DSN for `condition` about this recipient: as asked
 * with NOTIFY, or without NOTIFY for failures and delays (RFC 3461 4.1 leaves the
 * default to the MTA; this is what Postfix and sendmail do).
 */
export function wantsNotice(recipient: RecipientState, condition: NotifyCondition): boolean {
  if (recipient.notify === undefined) return condition !== 'SUCCESS';
  return recipient.notify.includes(condition);
}

/**
 * The domain of an address, lower case, as the config and the DNS know it: an
 * internationalized domain (RFC 6531 allows U-labels such as "bücher.example")
 * becomes its A-label form ("xn--bcher-kva.example", IDNA via the WHATWG URL
 * rules), so it matches the configured domains, senders and routes.
 */
export function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  if (at < 0) return '';
  const domain = address.slice(at + 1).toLowerCase();
  return /[^\x00-\x7f]/.test(domain) ? domainToASCII(domain) || domain : domain;
}

export function localPartOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? address : address.slice(0, at);
}

/** True for an address with characters outside ASCII (RFC 6531), which only SMTPUTF8 sessions may carry. */
export function isInternationalized(address: string): boolean {
  return /[^\x00-\x7f]/.test(address);
}
