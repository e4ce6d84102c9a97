/**
 * One SMTP listener: adapts smtp-server's hooks (onAuth, onMailFrom, onRcptTo,
 * onData) to the stages, and nothing more. Decisions live in the stages; the
 * queue lives in the spool.
 *
 * `update()` applies a reloaded config to the running listener: sessions that
 * start afterwards (and the next commands of open ones) see the new users,
 * networks, domains, limits and certificate; no connection is dropped. A change
 * of role, address, port or TLS mode needs a new listener (see Relay.reload).
 */
import type { AddressInfo } from 'node:net';
import type { SMTPServerAddress, SMTPServerAuthentication, SMTPServerAuthenticationResponse, SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import type { ListenerConfig, RelayConfig } from '../config/schema';
import type { Logger } from '../log/logger';
import type { RelayMetrics } from '../metrics/relay-metrics';
import type { RecipientVerifier } from '../delivery/recipient-verifier';
import { isInternationalized, type QueueEnvelope } from '../queue/envelope';
import type { QueueEntry, Spool } from '../queue/spool';
import type { HeldBytes } from '../queue/message-slabs';
import type { PreloadedMessage } from '../queue/preloaded-messages';
import type { InboundAuthenticator } from '../inbound/authentication';
import type { DnsblChecker } from '../inbound/dnsbl';
import type { AuthThrottle } from '../stages/auth-throttle';
import type { SendingLimiter } from '../stages/sending-limit';
import { receiveMessage, type ReceiveOptions } from '../stages/data';
import { UNMATCHABLE_HASH, verifyPassword } from '../stages/password';
import type { ClientContext, RelayPolicy } from '../stages/policy';
import { SessionRegistry, newTransaction, type SessionState } from '../stages/session';
import { SmtpError, asSmtpError } from '../stages/smtp-error';
import { accept, refuse, trailItem, type Verdict } from '../stages/verdict';
import { AdaptedSmtpServer } from './smtp-server-adapter';
import { ClientConnections } from './client-connections';
import { recipientDsn } from './dsn-parameters';
import { blocklistVerdict, nextHopVerdict } from './recipient-checks';
import { incomingEnvelope, traceHeaderFor } from './incoming-message';
import type { CertificateStore } from '../tls/certificate-store';

export interface ListenerDeps {
  config: RelayConfig;
  policy: RelayPolicy;
  spool: Spool;
  /** the current certificate and TLS profile; new connections get a renewed one */
  tls: CertificateStore;
  logger: Logger;
  /** inbound SPF/DKIM/DMARC checks for mail from other servers (mx listeners) */
  authenticator?: InboundAuthenticator;
  /** AUTH failure counts, shared by all listeners */
  authThrottle: AuthThrottle;
  /** messages per hour per authenticated user, shared by all listeners */
  sendingLimiter: SendingLimiter;
  /** called after a message is durably queued (and before the 250 is sent) */
  onQueued(entry: QueueEntry, preloaded?: PreloadedMessage): void;
  metrics?: RelayMetrics;
  /** asks the next hop of forward domains with verifyRecipients about strangers' recipients */
  verifier?: RecipientVerifier;
  /** the DNS blocklists of inbound.dnsbl, asked about the clients of mx listeners */
  blocklists?: DnsblChecker;
}

/** What a reload replaces in a running listener (the certificate store, AUTH and sending counts live on). */
export type ReloadableDeps = Pick<ListenerDeps, 'config' | 'policy' | 'authenticator' | 'blocklists'>;

type Callback = (err?: Error | null) => void;

/** smtp-server's connection errors: the client's address on the error, or in `meta` for a failed implicit-TLS handshake */
type ConnectionError = Error & { code?: string; remoteAddress?: string; meta?: { remoteAddress?: string } };

/** longest SMTP command line answered normally (RFC 5321 says 512; Postfix takes 2048) */
const MAX_COMMAND_LINE_BYTES = 2048;

/** how long open sessions may take to finish when the relay stops */
const SHUTDOWN_GRACE_MS = 15_000;

export class SmtpListener {
  private readonly server: AdaptedSmtpServer;
  private readonly sessions = new SessionRegistry();
  /** connections open per client address, against limits.maxConnectionsPerIp */
  private readonly clients = new ClientConnections();
  private readonly unsubscribeTls: () => void;
  /** sessions counted as open in the metrics (connections refused before the greeting never are) */
  private readonly counted = new Set<string>();
  /** "<role>:<port>" for logs; the port is the actual one once listening */
  private name: string;
  port = 0;
  private closing?: Promise<void>;

  constructor(
    readonly index: number,
    readonly listener: ListenerConfig,
    private readonly deps: ListenerDeps,
  ) {
    const { config } = deps;
    this.name = `${listener.role}:${listener.port}`;
    this.server = new AdaptedSmtpServer({
      greetingDelay: listener.earlyTalkerCheck ?? listener.role === 'mx',
      maxLineBytes: MAX_COMMAND_LINE_BYTES,
      onLineTooLong: (session) => void this.sessions.get(session.id).errors++,
      name: config.hostname,
      // the greeting reads "220 <hostname> ESMTP ownrelay" (smtp-server puts ESMTP in front)
      banner: 'ownrelay',
      secure: listener.tls === 'implicit',
      ...deps.tls.secureContextOptions(),
      size: config.limits.maxMessageBytes,
      rejectOversized: true,
      maxRecipients: config.limits.maxRecipients,
      maxClients: config.limits.maxClients,
      socketTimeout: config.limits.idleTimeoutMs,
      // on stop: sessions get this long to finish, then 421 and disconnect
      closeTimeout: SHUTDOWN_GRACE_MS,
      hideENHANCEDSTATUSCODES: false,
      // RFC 3461 DSN: smtp-server checks and xtext-decodes NOTIFY, ORCPT, RET and
      // ENVID; they are kept with the envelope (see recipientDsn, envelopeDsn)
      hideDSN: false,
      disableReverseLookup: true,
      // AUTH exists only on submission listeners, and only after TLS
      disabledCommands: listener.role === 'mx' ? ['AUTH'] : [],
      authMethods: ['PLAIN', 'LOGIN'],
      authOptional: true,
      allowInsecureAuth: false,
      logger: false,
      onAuth: (auth, session, cb) => void this.onAuth(auth, session, cb),
      onMailFrom: (address, session, cb) => this.onMailFrom(address, session, cb),
      onRcptTo: (address, session, cb) => this.onRcptTo(address, session, cb),
      onData: (stream, session, cb) => void this.onData(stream, session, cb),
      onConnect: (session, cb) => {
        const refusal = this.admit(session);
        if (refusal) return cb(refusal);
        this.askBlocklists(session);
        if (this.deps.metrics) {
          this.counted.add(session.id);
          this.deps.metrics.connectionOpened(listener.role);
        }
        cb();
      },
      onClose: (session) => {
        this.sessions.delete(session.id);
        this.clients.release(session.id);
        if (this.counted.delete(session.id)) this.deps.metrics?.connectionClosed(listener.role);
      },
    });
    this.unsubscribeTls = deps.tls.onChange(() => this.server.updateSecureContext(deps.tls.secureContextOptions()));
    this.server.on('error', (err: ConnectionError) => this.logConnectionError(err));
  }

  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.server.once('error', reject);
      this.server.listen(this.listener.port, this.listener.address, () => {
        this.server.server.off('error', reject);
        this.port = (this.server.server.address() as AddressInfo).port;
        this.name = `${this.listener.role}:${this.port}`;
        this.deps.logger.info(
          { event: 'listening', index: this.index, role: this.listener.role, address: this.listener.address, port: this.port, tls: this.listener.tls },
          `listening on ${this.listener.address}:${this.port} (${this.listener.role})`,
        );
        resolve(this.port);
      });
    });
  }

  /** Applies a reloaded config to new sessions; open connections stay open. */
  update(next: ReloadableDeps): void {
    Object.assign(this.deps, next);
    const { config } = next;
    // smtp-server reads these options per connection and command, so new values apply at once
    const options = this.server.options;
    options.name = config.hostname;
    options.size = config.limits.maxMessageBytes;
    options.maxRecipients = config.limits.maxRecipients;
    options.maxClients = config.limits.maxClients;
    options.socketTimeout = config.limits.idleTimeoutMs;
    this.server.updateSecureContext(this.deps.tls.secureContextOptions());
  }

  /**
   * For a listener a reload replaced: stops accepting at once but lets open
   * sessions go on normally (smtp-server's close() would answer their next
   * command with 421) until they quit or time out; after `graceMs` the rest get
   * the usual close. Resolves when the listener is closed.
   */
  async retire(graceMs: number): Promise<void> {
    this.server.server.close();
    const deadline = Date.now() + graceMs;
    while (this.server.connections.size > 0 && Date.now() < deadline && !this.closing) {
      await new Promise((resolve) => setTimeout(resolve, 250).unref());
    }
    await this.close();
  }

  /** Stops accepting; resolves when open sessions have finished (or after smtp-server's close timeout). */
  close(): Promise<void> {
    this.unsubscribeTls();
    this.closing ??= new Promise((resolve) => this.server.close(() => resolve()));
    return this.closing;
  }

  /**
   * Moves an accepted message to the hold queue (not delivered until released)
   * and raises the alert. If the move fails the message stays queued for delivery:
   * it was accepted, so it is never dropped.
   */
  private async hold(entry: QueueEntry, envelope: QueueEnvelope, reason: string): Promise<void> {
    const { spool, logger } = this.deps;
    try {
      await spool.move(entry, 'hold');
      logger.error({ event: 'held', alert: 'sending-limit', queueId: envelope.id, user: envelope.client.user, from: envelope.from, to: envelope.recipients.map((r) => r.address), reason }, `held ${envelope.id}: ${reason}`);
    } catch (err) {
      logger.error({ event: 'hold-failed', queueId: envelope.id, err: String(err) }, `could not hold ${envelope.id}; it will be delivered`);
      this.deps.onQueued(entry);
    }
  }

  /** Mail from other servers is checked on mx listeners; our own clients (relay networks, AUTH) are not. */
  private inspectorFor(session: SMTPServerSession, envelope: QueueEnvelope): ReceiveOptions['inspect'] {
    const authenticator = this.deps.authenticator;
    const client = this.client(session);
    if (!authenticator || this.listener.role !== 'mx' || client.user || this.deps.policy.mayRelay(client)) return undefined;
    return async (message) => {
      const inspected = await authenticator.inspect(message, {
        clientAddress: session.remoteAddress,
        helo: session.hostNameAppearsAs,
        sender: envelope.from,
        recipients: envelope.recipients.map((r) => r.address),
      });
      this.deps.logger.info({ event: 'authentication', queueId: envelope.id, from: envelope.from, client: session.remoteAddress, results: inspected.summary }, `${envelope.id}: ${inspected.summary}`);
      return inspected;
    };
  }

  /**
   * A new connection counts against its address's limit, unless the address is
   * in relay.networks (the customer's own hosts); over the limit it gets 421.
   */
  private admit(session: SMTPServerSession): SmtpError | undefined {
    if (this.deps.policy.mayRelay(this.client(session))) return undefined;
    const limit = this.deps.config.limits.maxConnectionsPerIp;
    if (this.clients.admit(session.id, session.remoteAddress, limit)) return undefined;
    this.deps.logger.warn({ event: 'connection-limit', listener: this.name, client: session.remoteAddress, limit }, `refused a connection from ${session.remoteAddress}: it has ${limit} open already`);
    return new SmtpError(421, '4.7.0', 'Too many connections from your address, try again later', `over ${limit} connections from ${session.remoteAddress}`);
  }

  /**
   * Starts the blocklist lookups for a client of an mx listener at connect, so
   * the answer is there by RCPT TO (the customer's own hosts are never asked).
   */
  private askBlocklists(session: SMTPServerSession): void {
    const { blocklists, policy } = this.deps;
    if (!blocklists || this.listener.role !== 'mx' || policy.mayRelay(this.client(session))) return;
    this.sessions.get(session.id).blocklisted = blocklists.check(session.remoteAddress);
  }

  private client(session: SMTPServerSession): ClientContext {
    const user = session.user as string | undefined;
    return { remoteAddress: session.remoteAddress, user: user || undefined, role: this.listener.role };
  }

  /**
   * A connection that failed below SMTP. A TLS handshake that fails (a scanner, a
   * client speaking plain text to the implicit-TLS port, an outdated TLS version)
   * is everyday noise on a public server: logged at info with OpenSSL's reason
   * alone. Anything else is a warning. Both name the client.
   */
  private logConnectionError(err: ConnectionError): void {
    const client = err.remoteAddress ?? err.meta?.remoteAddress;
    const tls = /SSL routines|TLS/.test(err.message) || (err.code ?? '').startsWith('ERR_SSL');
    const reason = tls ? (/SSL routines:[^:]*:([^:]+)/.exec(err.message)?.[1] ?? err.message.trim()) : err.message.trim();
    const fields = { event: tls ? 'tls-error' : 'smtp-error', listener: this.name, client, code: err.code, err: reason };
    if (tls) this.deps.logger.info(fields, `TLS handshake with ${client ?? 'a client'} failed: ${reason}`);
    else this.deps.logger.warn(fields, `SMTP connection error from ${client ?? 'a client'}: ${reason}`);
  }

  /**
   * Records the verdict and turns a refusal into the error smtp-server sends (421
   * after too many). A refused MAIL FROM or RCPT TO (`about`) is logged
   * (`"event":"rejected"`, like Postfix's "NOQUEUE: reject" lines), so the
   * administrator can see why a client's mail never arrived.
   */
  private settle(state: SessionState, verdict: Verdict, cb: Callback, about?: { session: SMTPServerSession; address: string }): void {
    state.transaction.trail.push(verdict);
    if (verdict.action === 'accept') return cb();
    if (about) this.logRefusal(verdict.stage, verdict.error, about.session, about.address);
    state.errors++;
    if (state.errors >= this.deps.config.limits.maxErrors) {
      return cb(new SmtpError(421, '4.7.0', 'Too many errors, closing connection', `too many errors (${state.errors})`));
    }
    cb(verdict.error);
  }

  private logRefusal(stage: string, error: SmtpError, session: SMTPServerSession, address: string): void {
    const command = stage === 'sender' ? 'MAIL FROM' : 'RCPT TO';
    this.deps.metrics?.commandRejected(this.listener.role, stage === 'sender' ? 'mail' : 'rcpt', error.responseCode);
    const from = stage === 'sender' ? address : session.envelope.mailFrom ? session.envelope.mailFrom.address : undefined;
    this.deps.logger.info(
      { event: 'rejected', command, listener: this.name, client: session.remoteAddress, helo: session.hostNameAppearsAs, user: session.user, from, ...(stage === 'sender' ? {} : { to: address }), code: error.responseCode, status: error.enhancedStatus, reason: error.reason },
      `reject: ${command} from ${session.remoteAddress}: ${error.toReply()} (${error.reason})`,
    );
  }

  /**
   * AUTH: a blocked IP gets 454 without a password check; otherwise the answer
   * waits the throttle's delay, and the connection is closed with 421 after
   * limits.auth.maxFailuresPerConnection failures. Every failure is logged with
   * `"event":"auth"`, the client IP and `"result":"failed"` (fail2ban's filter).
   */
  private async onAuth(auth: SMTPServerAuthentication, session: SMTPServerSession, cb: (err: Error | null | undefined, response?: SMTPServerAuthenticationResponse) => void): Promise<void> {
    const state = this.sessions.get(session.id);
    const { authThrottle, logger, config } = this.deps;
    const ip = session.remoteAddress;
    const name = auth.username ?? '';
    if (authThrottle.blocked(ip)) {
      logger.warn({ event: 'auth', listener: this.name, client: ip, user: name, result: 'blocked' }, `authentication from ${ip} refused: too many failures`);
      return this.settle(state, refuse('auth', 454, '4.7.0', 'Too many authentication failures, try again later', `auth blocked for ${ip}`), cb);
    }
    const delay = authThrottle.delayMs(ip, name);
    const user = this.deps.policy.user(name);
    // PLAIN may carry an authorization identity: acting as someone else is not allowed
    const authzid = (auth as { authzid?: string }).authzid;
    const impersonating = Boolean(authzid) && authzid !== name;
    // an unknown user costs the same scrypt work as a known one
    const [ok] = await Promise.all([
      verifyPassword(auth.password ?? '', user?.passwordHash ?? UNMATCHABLE_HASH).then((match) => match && user !== undefined && !impersonating),
      delay > 0 ? new Promise((resolve) => setTimeout(resolve, delay)) : undefined,
    ]);
    if (ok) {
      authThrottle.succeeded(ip, name);
      logger.info({ event: 'auth', listener: this.name, client: ip, user: name, result: 'ok' }, 'authenticated');
      return cb(null, { user: name });
    }
    authThrottle.failed(ip, name);
    state.authFailures++;
    this.deps.metrics?.authFailed(this.listener.role);
    logger.warn({ event: 'auth', listener: this.name, client: ip, user: name, result: 'failed' }, `authentication failed for ${name} from ${ip}`);
    if (state.authFailures >= config.limits.auth.maxFailuresPerConnection) {
      state.transaction.trail.push(refuse('auth', 535, '5.7.8', 'Authentication credentials invalid', `authentication failed for ${name}`));
      return cb(new SmtpError(421, '4.7.0', 'Too many authentication failures, closing connection', `too many auth failures (${state.authFailures})`));
    }
    this.settle(state, refuse('auth', 535, '5.7.8', 'Authentication credentials invalid', `authentication failed for ${name}`), cb);
  }

  private onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, cb: Callback): void {
    const state = this.sessions.get(session.id);
    state.transaction = newTransaction();
    const client = this.client(session);
    if (isInternationalized(address.address) && !(address.args && address.args.SMTPUTF8)) return this.settle(state, needsSmtpUtf8('sender'), cb, { session, address: address.address });
    const verdict = this.deps.policy.checkSender(client, address.address);
    const user = client.user !== undefined ? this.deps.policy.user(client.user) : undefined;
    if (verdict.action === 'accept') {
      const space = this.deps.spool.space.roomForMessage(this.deps.config.limits.spoolMinFreeBytes, declaredSize(address));
      if (!space.room) {
        const reason = `spool has ${space.freeBytes} bytes free, needs ${space.neededBytes}`;
        this.deps.logger.error({ event: 'spool-full', client: session.remoteAddress, listener: this.name, freeBytes: space.freeBytes, neededBytes: space.neededBytes }, `refusing new mail: ${reason}`);
        return this.settle(state, refuse('sender', 452, '4.3.1', 'Insufficient system storage, try again later', reason), cb, { session, address: address.address });
      }
    }
    const sending = verdict.action === 'accept' && user ? this.deps.sendingLimiter.check(user, this.deps.config.limits.sending) : { over: false as const };
    if (!sending.over) return this.settle(state, verdict, cb, { session, address: address.address });
    const reason = `${user!.name} is over its limit of ${sending.limit} messages per hour`;
    if (sending.action === 'hold') {
      state.transaction.hold = reason;
      return this.settle(state, verdict, cb, { session, address: address.address });
    }
    this.deps.logger.warn({ event: 'sending-limit', user: user!.name, client: session.remoteAddress, limit: sending.limit, action: 'defer' }, reason);
    this.settle(state, refuse('sender', 450, '4.7.1', `Sending limit of ${sending.limit} messages per hour reached, try again later`, reason), cb, { session, address: address.address });
  }

  private async onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, cb: Callback): Promise<void> {
    const state = this.sessions.get(session.id);
    if (isInternationalized(address.address) && !(session.envelope as { smtpUtf8?: boolean }).smtpUtf8) return this.settle(state, needsSmtpUtf8('recipient'), cb, { session, address: address.address });
    const recipient = this.normalizeRecipient(address.address);
    const client = this.client(session);
    let verdict = this.deps.policy.checkRecipient(client, recipient);
    if (verdict.action === 'accept') verdict = await blocklistVerdict(state.blocklisted, recipient, verdict);
    if (verdict.action === 'accept') verdict = await nextHopVerdict(this.deps.policy, this.deps.verifier, client, recipient, verdict);
    if (verdict.action === 'accept') {
      const { transaction } = state;
      if (!transaction.recipients.includes(recipient)) transaction.recipients.push(recipient);
      const dsn = recipientDsn(address);
      if (dsn) (transaction.dsn ??= new Map()).set(recipient, dsn);
    }
    this.settle(state, verdict, cb, { session, address: address.address });
  }

  private normalizeRecipient(address: string): string {
    if (address.includes('@')) return address;
    // RFC 5321 4.1.1.3: the domainless "postmaster" is this server's postmaster
    return `${address}@${this.deps.config.domains[0]?.name ?? this.deps.config.hostname}`;
  }

  private async onData(stream: SMTPServerDataStream, session: SMTPServerSession, cb: (err?: Error | null, message?: string) => void): Promise<void> {
    const { config, spool, logger } = this.deps;
    const state = this.sessions.get(session.id);
    const transaction = state.transaction;
    state.transaction = newTransaction();
    const now = Date.now();
    const envelope = incomingEnvelope(session, transaction, this.name, now);
    const trace = traceHeaderFor(session, config.hostname, envelope, now);
    let kept: HeldBytes | undefined;
    try {
      const inspect = this.inspectorFor(session, envelope);
      const received = await receiveMessage(spool, envelope, trace, stream, {
        maxMessageBytes: config.limits.maxMessageBytes,
        bareLineEndings: config.limits.bareLineEndings,
        authservId: config.hostname,
        ...(inspect ? { inspect } : {}),
        // the customer's own mail (a submission port, AUTH or relay.networks) gets a Date and Message-ID it lacks, as an MSA adds them
        ...(this.listener.role === 'submission' || this.deps.policy.mayRelay(this.client(session)) ? { fillHeaders: { messageId: `<${envelope.id}@${config.hostname}>`, date: new Date(now) } } : {}),
      });
      const { entry, size, bodyOffset } = received;
      // the kept bytes are released here unless onQueued takes them
      kept = received.message;
      transaction.trail.push(accept('data', transaction.hold ? 'held' : 'queued'));
      const sender = envelope.client.user !== undefined ? this.deps.policy.user(envelope.client.user) : undefined;
      if (sender) this.deps.sendingLimiter.record(sender);
      logger.info(
        {
          event: 'accepted',
          queueId: envelope.id,
          from: envelope.from,
          to: transaction.recipients,
          size,
          client: session.remoteAddress,
          helo: session.hostNameAppearsAs,
          user: envelope.client.user,
          listener: this.name,
          tls: session.secure,
          trail: transaction.trail.map(trailItem),
        },
        `accepted ${envelope.id} from <${envelope.from}>`,
      );
      this.deps.metrics?.messageReceived(this.listener.role, transaction.recipients, session.secure);
      if (transaction.hold) {
        await this.hold(entry, envelope, transaction.hold);
      } else {
        const message = kept;
        kept = undefined;
        this.deps.onQueued(entry, message ? { info: { envelope, bodyOffset, size }, message } : undefined);
      }
      cb(null, `2.0.0 Ok: queued as ${envelope.id}`);
    } catch (err) {
      const error = asSmtpError(err, 'receiving message');
      logger.warn(
        { event: 'refused', queueId: envelope.id, from: envelope.from, to: transaction.recipients, client: session.remoteAddress, listener: this.name, code: error.responseCode, reason: error.reason },
        `refused message from <${envelope.from}>: ${error.reason}`,
      );
      state.errors++;
      cb(error);
    } finally {
      kept?.release();
    }
  }
}

/** The message size the client declared with MAIL FROM's SIZE= (RFC 1870), 0 when it declared none. */
function declaredSize(address: SMTPServerAddress): number {
  const size = address.args ? Number(address.args.SIZE) : 0;
  return Number.isSafeInteger(size) && size > 0 ? size : 0;
}

function needsSmtpUtf8(stage: 'sender' | 'recipient'): Verdict {
  return refuse(stage, 553, '5.6.7', 'Non-ASCII addresses need the SMTPUTF8 parameter on MAIL FROM', `non-ASCII ${stage} address without SMTPUTF8`);
}
