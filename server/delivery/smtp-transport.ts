/**
 * Delivery over SMTP, to the MX hosts of a domain or to a configured next hop.
 *
 * Contract (see types.ts): one result per recipient, never a throw for a remote
 * or network problem. Hosts are tried in MX preference order and each host's
 * addresses in order (IPv4 first); an address refused by the AddressGuard is
 * skipped. Failing to set a session up (connection errors, timeouts, a 421, a
 * bad greeting, failed TLS or AUTH) moves on to the next address; once every
 * address is used up the recipients are deferred with the last error. Replies
 * inside a transaction decide per recipient: 2xx delivered, 5xx failed (503, a
 * sequencing error, is deferred), anything else deferred.
 *
 * MX delivery applies the destination's MTA-STS policy when it has one (see
 * mta-sts-enforcement.ts): with `enforce`, only the policy's MX hosts, over
 * STARTTLS with a verified certificate, else the recipients are deferred. TLS
 * reports are the exception (RFC 8460 5.3): they go with opportunistic TLS.
 *
 * A server that greets with this relay's own name is a mail loop (a wrong MX or
 * route): its recipients fail at once with 5.4.6, without trying other hosts.
 *
 * A connection lost after message bytes were sent is deferred rather than tried
 * on the next host: the first host may have taken the message, and a later
 * retry is less harmful than a certain duplicate.
 *
 * Sessions are reused (see connection-cache.ts). A reused session that fails
 * before the server answered anything of the new transaction was closed by the
 * server while idle; the transaction is repeated on a fresh connection.
 *
 * A transaction names at most `maxRecipientsPerTransaction` recipients; more go
 * in the transactions that follow. Recipients a server refuses because the
 * transaction has too many (452, or 552 from older servers, with 4.5.3/5.5.3 or
 * "too many recipients": RFC 5321 4.5.3.1.10) are sent in the next transaction
 * at once, as long as each transaction gets some recipient through; a 552 of
 * that kind never fails a recipient.
 */
import type { Readable } from 'node:stream';
import type SMTPConnection from 'nodemailer/lib/smtp-connection';
import type { NextHop } from '../config/schema';
import type { Logger } from '../log/logger';
import type { AddressGuard } from './address-guard';
import type { MtaStsPolicies } from './mta-sts-cache';
import { applyStsPolicy, type SessionObserver } from './mta-sts-enforcement';
import type { TlsReportStore } from './tls-report-store';
import type { MxResolver } from './mx-resolver';
import type { OutboundMessage, RecipientResult } from './types';
import { isInternationalized } from '../queue/envelope';
import { mailParameters } from './dsn-passing';
import { deferOverLimit, everyone, isOverRecipientLimit, perRecipient, rejectedErrors, transactionFailure, unreachable, type Failure } from './recipient-results';
import {
  ConnectionCache,
  type Endpoint,
  type Session,
  SessionError,
  type SmtpError,
  describeError,
  endpointName,
  MailLoopError,
  oneLine,
  openSession,
  sessionKey,
} from './connection-cache';

export interface SmtpDeliveryOptions {
  /** EHLO name */
  hostname: string;
  resolver: MxResolver;
  guard: AddressGuard;
  connectTimeoutMs: number;
  commandTimeoutMs: number;
  logger: Logger;
  /** how long a session stays open for the next message to the same place (default 2000) */
  idleConnectionMs?: number;
  /** transactions per connection before it is closed (default 100) */
  maxMessagesPerConnection?: number;
  /** recipients named in one transaction (default 100, what RFC 5321 4.5.3.1.8 asks every server to take) */
  maxRecipientsPerTransaction?: number;
  /** TCP port of MX hosts; always 25 on the Internet, exists for tests and labs that run MX servers on other ports */
  mxPort?: number;
  /** MTA-STS policies of destination domains; without it MX delivery is opportunistic only */
  mtaSts?: MtaStsPolicies;
  /** where TLS sessions under an MTA-STS policy are counted */
  tlsReports?: TlsReportStore;
  /** CA certificates (PEM) trusted for certificate checks instead of Node's bundled list */
  ca?: string[];
  /** told of each new outbound session, encrypted or not (metrics) */
  onSessionOpened?: (secure: boolean) => void;
}

type Route = Omit<Endpoint, 'host' | 'address'>;
type AttemptOutcome = { kind: 'done'; results: RecipientResult[] } | { kind: 'next'; failure: Failure };
type TransactionOutcome = AttemptOutcome | { kind: 'stale' };

export class SmtpDelivery {
  private readonly cache: ConnectionCache;
  private readonly mxPort: number;
  private readonly logger: Logger;

  constructor(private readonly opts: SmtpDeliveryOptions) {
    this.cache = new ConnectionCache(opts.idleConnectionMs ?? 2000, opts.maxMessagesPerConnection ?? 100);
    this.mxPort = opts.mxPort ?? 25;
    this.logger = opts.logger;
  }

  async deliverViaMx(domain: string, message: OutboundMessage): Promise<RecipientResult[]> {
    const [plan, sts] = await Promise.all([this.opts.resolver.resolveDomain(domain), message.tlsReport ? undefined : this.opts.mtaSts?.policyFor(domain)]);
    if (plan.kind === 'permanent') return everyone(message, 'failed', { reason: plan.reason });
    if (plan.kind === 'temporary') return unreachable(everyone(message, 'deferred', { reason: plan.reason }));
    const hosts = plan.hosts.map((host) => host.name);
    // sts is undefined for a TLS report (RFC 8460 5.3: delivered despite TLS problems, and not counted in the next one)
    if (sts && sts.policy.mode !== 'none') {
      const applied = applyStsPolicy(sts, hosts, this.opts.tlsReports, this.logger);
      if (applied.refusal !== undefined) return unreachable(everyone(message, 'deferred', { reason: applied.refusal }));
      const route: Route = { port: this.mxPort, tls: applied.tls, verifyCertificate: applied.verifyCertificate };
      const results = await this.deliverToHosts(applied.hosts, route, message, applied.observer);
      return results.map((result) => (result.outcome === 'deferred' ? { ...result, reply: applied.explain(result.reply) } : result));
    }
    // MX delivery: STARTTLS when offered, never a certificate check, never AUTH
    const route: Route = { port: this.mxPort, tls: 'opportunistic', verifyCertificate: false };
    return this.deliverToHosts(hosts, route, message);
  }

  async deliverViaNextHop(hop: NextHop, message: OutboundMessage): Promise<RecipientResult[]> {
    if (hop.auth && hop.tls === 'none') {
      const reason = `next hop ${hop.host}: AUTH is configured but tls is none; credentials are only sent over TLS`;
      return everyone(message, 'deferred', { reason });
    }
    const route: Route = { port: hop.port, tls: hop.tls, verifyCertificate: hop.verifyCertificate, auth: hop.auth };
    return this.deliverToHosts([hop.host], route, message);
  }

  async close(): Promise<void> {
    await this.cache.close();
    await this.opts.tlsReports?.close();
  }

  /**
   * Delivers the recipients in transactions of at most maxRecipientsPerTransaction,
   * one after the other (each reuses the session the one before left). Recipients
   * refused as too many go first in the next transaction. Once a transaction gets
   * no recipient through, or a destination could not be reached at all, the
   * recipients still waiting share that transaction's outcome.
   */
  private async deliverToHosts(hosts: readonly string[], route: Route, message: OutboundMessage, observer?: SessionObserver): Promise<RecipientResult[]> {
    const limit = this.opts.maxRecipientsPerTransaction ?? 100;
    const results: RecipientResult[] = [];
    let waiting = message.recipients;
    while (waiting.length > 0) {
      const batch = waiting === message.recipients && waiting.length <= limit ? message : { ...message, recipients: waiting.slice(0, limit) };
      const outcome = await this.deliverTransaction(hosts, route, batch, observer);
      const overLimit = outcome.filter(isOverRecipientLimit);
      if (overLimit.length === 0 && waiting.length <= limit) return results.length === 0 ? outcome : [...results, ...outcome];
      waiting = [...overLimit.map((result) => result.address), ...waiting.slice(limit)];
      if (overLimit.length < outcome.length) {
        results.push(...outcome.filter((result) => !isOverRecipientLimit(result)));
        if (!outcome.some((result) => result.unreachable || result.remoteHost === undefined)) continue;
      } else {
        // not one recipient got through: sending the rest now would fare the same
        results.push(...outcome.map(deferOverLimit));
        waiting = waiting.slice(overLimit.length);
      }
      const example = results[results.length - 1]!;
      results.push(...waiting.map((address) => ({ ...example, address, outcome: 'deferred' as const })));
      break;
    }
    return results;
  }

  private async deliverTransaction(hosts: readonly string[], route: Route, message: OutboundMessage, observer?: SessionObserver): Promise<RecipientResult[]> {
    if (message.recipients.length === 0) return [];
    const refused: string[] = [];
    let last: Failure | undefined;
    for (const host of hosts) {
      const usable = await this.opts.guard.usableAddresses(host, this.opts.resolver);
      refused.push(...usable.refused);
      if (usable.failure) last = { reason: usable.failure };
      for (const address of usable.addresses) {
        const outcome = await this.attempt({ ...route, host, address }, message, observer);
        if (outcome.kind === 'done') return outcome.results;
        last = outcome.failure;
      }
    }
    const skipped = refused.length > 0 ? `skipped ${refused.join('; ')}` : undefined;
    const failure: Failure = last ? { ...last, reason: [last.reason, skipped].filter(Boolean).join('; ') } : { reason: skipped ?? 'no address to deliver to' };
    this.logger.debug({ queueId: message.queueId, hosts, reason: failure.reason }, 'no SMTP destination took the message');
    const results = everyone(message, 'deferred', failure);
    // a host that answered (say, 421 at the greeting) is alive: only silence counts as unreachable
    return failure.remoteHost === undefined ? unreachable(results) : results;
  }

  /** Delivers over a cached session to the endpoint, or a new one. */
  private async attempt(endpoint: Endpoint, message: OutboundMessage, observer?: SessionObserver): Promise<AttemptOutcome> {
    const key = sessionKey(endpoint);
    for (let session = this.cache.take(key); session; session = this.cache.take(key)) {
      session.logger.debug({ queueId: message.queueId, transactions: session.transactions }, 'reusing SMTP session');
      const outcome = await this.transact(session, message, true);
      if (outcome.kind !== 'stale') return outcome;
      session.logger.debug({ queueId: message.queueId }, 'cached SMTP session was closed by the server, using a new connection');
    }

    let session: Session;
    try {
      session = await this.open(endpoint, observer);
    } catch (err) {
      if (err instanceof MailLoopError) return done(everyone(message, 'failed', { reason: `554 5.4.6 ${err.message}`, remoteHost: endpoint.host }));
      const failure: Failure = { reason: err instanceof Error ? err.message : String(err) };
      if (err instanceof SessionError && err.replied) failure.remoteHost = endpoint.host;
      return { kind: 'next', failure };
    }
    this.opts.onSessionOpened?.(session.connection.secure === true);
    const outcome = await this.transact(session, message, false);
    return outcome.kind === 'stale' ? { kind: 'next', failure: { reason: `${endpointName(endpoint)}: connection lost` } } : outcome;
  }

  /**
   * openSession, retried once in plain text when opportunistic TLS fails in the
   * handshake (RFC 7435). The observer hears of the first try only.
   */
  private async open(endpoint: Endpoint, observer?: SessionObserver): Promise<Session> {
    const settings = { hostname: this.opts.hostname, connectTimeoutMs: this.opts.connectTimeoutMs, commandTimeoutMs: this.opts.commandTimeoutMs, logger: this.logger, ca: this.opts.ca };
    try {
      const session = await openSession(endpoint, settings);
      observer?.opened(session);
      return session;
    } catch (err) {
      observer?.failed(endpoint, err);
      if (!(err instanceof SessionError && err.tlsHandshake && endpoint.tls === 'opportunistic')) throw err;
      this.logger.debug({ remote: endpointName(endpoint), reason: err.message }, 'TLS handshake failed, retrying in plain text');
      return openSession(endpoint, settings, true);
    }
  }

  /** One mail transaction on `session`. */
  private transact(session: Session, message: OutboundMessage, reused: boolean): Promise<TransactionOutcome> {
    const { connection } = session;
    const remoteHost = session.endpoint.host;
    session.transactions++;
    // tells "the server answered something of this transaction" apart from a connection that was already gone
    connection.lastServerResponse = false;
    if (needsSmtpUtf8(message) && !offersExtension(connection, 'SMTPUTF8')) {
      // RFC 6531: non-ASCII addresses never go to a server that did not offer SMTPUTF8
      this.cache.put(session);
      return Promise.resolve(done(everyone(message, 'failed', { reason: `553 5.6.7 ${remoteHost} does not offer SMTPUTF8, which the non-ASCII addresses of this message need`, remoteHost })));
    }
    let stream: Readable;
    try {
      stream = message.open();
    } catch (err) {
      this.cache.put(session);
      return Promise.resolve(done(everyone(message, 'deferred', { reason: `could not open the queued message: ${String(err)}` })));
    }

    // RFC 3461: a server that offers DSN gets the parameters and the duty to report;
    // for mail handed to one that does not, a success notice says "relayed"
    const offersDsn = offersExtension(connection, 'DSN');
    connection.recipientDsn = offersDsn ? message.dsn?.recipients : undefined;
    const dsn = mailParameters(message.dsn?.envelope);
    const envelope = { from: message.from, to: message.recipients, size: message.size, use8BitMime: true, ...(dsn ? { dsn } : {}) };
    const delivered = { outcome: 'delivered' as const, ...(offersDsn ? {} : { successAction: 'relayed' as const }) };
    return new Promise<TransactionOutcome>((resolve) => {
      connection.send(envelope, stream, (err, info) => {
        // the message's memory may hold another message once this attempt ends
        connection.dropUnsentData();
        const dataSent = stream.readableDidRead;
        if (!stream.destroyed) stream.destroy();
        if (!err) {
          const rejected = (info as { rejectedErrors?: SmtpError[] }).rejectedErrors ?? [];
          const results = perRecipient(message, rejected, { ...delivered, reply: oneLine(info.response) }, remoteHost);
          session.logger.debug({ queueId: message.queueId, reply: info.response, rejected: rejected.length }, 'SMTP transaction done');
          this.cache.put(session);
          return resolve(done(results));
        }
        resolve(this.afterError(session, message, err as SmtpError, reused, dataSent));
      });
    });
  }

  private afterError(session: Session, message: OutboundMessage, err: SmtpError, reused: boolean, dataSent: boolean): TransactionOutcome {
    const { connection, endpoint } = session;
    const remoteHost = endpoint.host;
    const code = err.responseCode;
    session.logger.debug({ queueId: message.queueId, code: err.code, command: err.command, reply: err.response }, 'SMTP transaction failed');

    // local refusals first: nothing was sent, so they say nothing about the connection
    if (err.code === 'ESTREAM') {
      connection.close();
      return done(everyone(message, 'deferred', { reason: `reading the queued message failed: ${err.message}` }));
    }
    if (err.code === 'EMESSAGE' && err.command === 'MAIL FROM' && code === undefined) {
      // the message is larger than the SIZE the server announced (RFC 1870); it would answer 552
      this.cache.put(session);
      return done(everyone(message, 'failed', { reason: `552 5.3.4 message of ${message.size} bytes is larger than ${remoteHost} accepts (${err.message})`, remoteHost }));
    }
    if (err.code === 'EENVELOPE' && err.command === 'API') {
      // an address nodemailer will not put into a command (CR, LF, < or >): no retry can fix it
      this.cache.put(session);
      return done(everyone(message, 'failed', { reason: `invalid envelope: ${err.message}` }));
    }

    const noReply = connection.lastServerResponse === false;
    if (reused && !dataSent && (noReply || (code === 421 && err.command === 'MAIL FROM'))) {
      connection.close();
      return { kind: 'stale' };
    }
    if (code === 421) {
      connection.close();
      return { kind: 'next', failure: { reason: `${endpointName(endpoint)} said: ${describeError(err)}`, remoteHost } };
    }
    if ((err.code === 'EENVELOPE' || err.code === 'EMESSAGE') && code !== undefined) {
      const results = transactionFailure(message, err, rejectedErrors(session, err), remoteHost);
      this.resetAndKeep(session);
      return done(results);
    }

    connection.close();
    if (dataSent) {
      const reason = `${endpointName(endpoint)}: ${describeError(err)} after the message was sent; not trying other hosts to avoid a duplicate`;
      return done(everyone(message, 'deferred', { reason, remoteHost }));
    }
    return { kind: 'next', failure: { reason: `${endpointName(endpoint)}: ${describeError(err)}`, remoteHost: err.response ? remoteHost : undefined } };
  }

  /** Ends a refused transaction with RSET so the session can carry the next message. */
  private resetAndKeep(session: Session): void {
    if (!session.alive) return;
    session.connection.reset((err) => {
      if (err) session.connection.close();
      else this.cache.put(session);
    });
  }
}

function done(results: RecipientResult[]): AttemptOutcome {
  return { kind: 'done', results };
}

/** True when the envelope has an internationalized address (RFC 6531). */
function needsSmtpUtf8(message: OutboundMessage): boolean {
  return isInternationalized(message.from) || message.recipients.some(isInternationalized);
}

/** Whether the server listed `keyword` in its EHLO reply (nodemailer keeps the list; it adds SMTPUTF8 to MAIL FROM itself). */
function offersExtension(connection: SMTPConnection, keyword: string): boolean {
  const offered = (connection as unknown as { _supportedExtensions?: string[] })._supportedExtensions;
  return Array.isArray(offered) && offered.includes(keyword);
}
