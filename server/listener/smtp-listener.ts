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
import type { QueueEnvelope } from '../queue/envelope';
import { newQueueId } from '../queue/queue-id';
import type { QueueEntry, Spool } from '../queue/spool';
import type { PreloadedMessage } from '../queue/scheduler';
import { receiveMessage } from '../stages/data';
import { UNMATCHABLE_HASH, verifyPassword } from '../stages/password';
import type { ClientContext, RelayPolicy } from '../stages/policy';
import { protocolName, receivedHeader } from '../stages/received-header';
import { SessionRegistry, newTransaction, type SessionState } from '../stages/session';
import { SmtpError, asSmtpError } from '../stages/smtp-error';
import { accept, refuse, trailItem, type Verdict } from '../stages/verdict';
import { AdaptedSmtpServer } from './smtp-server-adapter';
import type { TlsCredentials } from './tls-credentials';

export interface ListenerDeps {
  config: RelayConfig;
  policy: RelayPolicy;
  spool: Spool;
  tls: TlsCredentials;
  logger: Logger;
  /** called after a message is durably queued (and before the 250 is sent) */
  onQueued(entry: QueueEntry, preloaded?: PreloadedMessage): void;
  metrics?: RelayMetrics;
}

/** What a reload may change in a running listener. */
export type ReloadableDeps = Pick<ListenerDeps, 'config' | 'policy' | 'tls'>;

type Callback = (err?: Error | null) => void;

/** longest SMTP command line answered normally (RFC 5321 says 512; Postfix takes 2048) */
const MAX_COMMAND_LINE_BYTES = 2048;

/** how long open sessions may take to finish when the relay stops */
const SHUTDOWN_GRACE_MS = 15_000;

export class SmtpListener {
  private readonly server: AdaptedSmtpServer;
  private readonly sessions = new SessionRegistry();
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
      banner: 'ESMTP ownrelay',
      secure: listener.tls === 'implicit',
      key: deps.tls.key,
      cert: deps.tls.cert,
      minVersion: config.tls.minVersion,
      size: config.limits.maxMessageBytes,
      rejectOversized: true,
      maxRecipients: config.limits.maxRecipients,
      maxClients: config.limits.maxClients,
      socketTimeout: config.limits.idleTimeoutMs,
      // on stop: sessions get this long to finish, then 421 and disconnect
      closeTimeout: SHUTDOWN_GRACE_MS,
      hideENHANCEDSTATUSCODES: false,
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
        if (this.deps.metrics) {
          this.counted.add(session.id);
          this.deps.metrics.connectionOpened(listener.role);
        }
        cb();
      },
      onClose: (session) => {
        this.sessions.delete(session.id);
        if (this.counted.delete(session.id)) this.deps.metrics?.connectionClosed(listener.role);
      },
    });
    this.server.on('error', (err) => deps.logger.warn({ event: 'smtp-error', listener: this.name, err: err.message }, 'SMTP connection error'));
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
    const { config, tls } = next;
    // smtp-server reads these options per connection and command, so new values apply at once
    const options = this.server.options;
    options.name = config.hostname;
    options.size = config.limits.maxMessageBytes;
    options.maxRecipients = config.limits.maxRecipients;
    options.maxClients = config.limits.maxClients;
    options.socketTimeout = config.limits.idleTimeoutMs;
    this.server.updateSecureContext({ key: tls.key, cert: tls.cert, minVersion: config.tls.minVersion });
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
    this.closing ??= new Promise((resolve) => this.server.close(() => resolve()));
    return this.closing;
  }

  private client(session: SMTPServerSession): ClientContext {
    const user = session.user as string | undefined;
    return { remoteAddress: session.remoteAddress, user: user || undefined, role: this.listener.role };
  }

  /** Records the verdict and turns a refusal into the error smtp-server sends (421 after too many). */
  private settle(state: SessionState, verdict: Verdict, cb: Callback): void {
    state.transaction.trail.push(verdict);
    if (verdict.action === 'accept') return cb();
    state.errors++;
    if (state.errors >= this.deps.config.limits.maxErrors) {
      return cb(new SmtpError(421, '4.7.0', 'Too many errors, closing connection', `too many errors (${state.errors})`));
    }
    cb(verdict.error);
  }

  private async onAuth(auth: SMTPServerAuthentication, session: SMTPServerSession, cb: (err: Error | null | undefined, response?: SMTPServerAuthenticationResponse) => void): Promise<void> {
    const state = this.sessions.get(session.id);
    const name = auth.username ?? '';
    const user = this.deps.policy.user(name);
    // PLAIN may carry an authorization identity: acting as someone else is not allowed
    const authzid = (auth as { authzid?: string }).authzid;
    const impersonating = Boolean(authzid) && authzid !== name;
    // an unknown user costs the same scrypt work as a known one
    const ok = (await verifyPassword(auth.password ?? '', user?.passwordHash ?? UNMATCHABLE_HASH)) && user !== undefined && !impersonating;
    if (ok) {
      this.deps.logger.info({ event: 'auth', listener: this.name, client: session.remoteAddress, user: name, result: 'ok' }, 'authenticated');
      return cb(null, { user: name });
    }
    this.deps.metrics?.authFailed(this.listener.role);
    this.deps.logger.warn({ event: 'auth', listener: this.name, client: session.remoteAddress, user: name, result: 'failed' }, `authentication failed for ${name} from ${session.remoteAddress}`);
    this.settle(state, refuse('auth', 535, '5.7.8', 'Authentication credentials invalid', `authentication failed for ${name}`), cb);
  }

  private onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, cb: Callback): void {
    const state = this.sessions.get(session.id);
    state.transaction = newTransaction();
    this.settle(state, this.deps.policy.checkSender(this.client(session), address.address), cb);
  }

  private onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, cb: Callback): void {
    const state = this.sessions.get(session.id);
    const recipient = this.normalizeRecipient(address.address);
    const verdict = this.deps.policy.checkRecipient(this.client(session), recipient);
    if (verdict.action === 'accept' && !state.transaction.recipients.includes(recipient)) state.transaction.recipients.push(recipient);
    this.settle(state, verdict, cb);
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
    const envelope: QueueEnvelope = {
      version: 1,
      id: newQueueId(now),
      receivedAt: now,
      from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
      recipients: transaction.recipients.map((address) => ({ address, status: 'pending' })),
      attempts: 0,
      client: {
        address: session.remoteAddress,
        helo: session.hostNameAppearsAs,
        listener: this.name,
        ...(session.user ? { user: String(session.user) } : {}),
      },
    };
    const tlsInfo = session.secure ? (session as unknown as { tlsOptions?: { name?: string; version?: string } }).tlsOptions : undefined;
    const trace = receivedHeader({
      helo: session.hostNameAppearsAs,
      remoteAddress: session.remoteAddress,
      hostname: config.hostname,
      queueId: envelope.id,
      protocol: protocolName(session.secure, Boolean(session.user)),
      tlsVersion: tlsInfo?.version,
      tlsCipher: tlsInfo?.name,
      recipient: transaction.recipients.length === 1 ? transaction.recipients[0] : undefined,
      date: new Date(now),
    });
    try {
      const { entry, size, message, bodyOffset } = await receiveMessage(spool, envelope, trace, stream, {
        maxMessageBytes: config.limits.maxMessageBytes,
        bareLineEndings: config.limits.bareLineEndings,
      });
      transaction.trail.push(accept('data', 'queued'));
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
      this.deps.onQueued(entry, message ? { info: { envelope, bodyOffset, size }, message } : undefined);
      cb(null, `2.0.0 Ok: queued as ${envelope.id}`);
    } catch (err) {
      const error = asSmtpError(err, 'receiving message');
      logger.warn(
        { event: 'refused', queueId: envelope.id, from: envelope.from, to: transaction.recipients, client: session.remoteAddress, listener: this.name, code: error.responseCode, reason: error.reason },
        `refused message from <${envelope.from}>: ${error.reason}`,
      );
      state.errors++;
      cb(error);
    }
  }
}
