/**
 * SMTP sessions to one address of a destination, and a cache of idle ones.
 *
 * `openSession` connects, applies the outbound TLS policy and logs in, and
 * resolves only with a session that is ready for MAIL FROM. Policy:
 * - opportunistic: STARTTLS when offered, certificate not checked (RFC 7435);
 * - required: STARTTLS must succeed; the certificate is checked when verifyCertificate;
 * - implicit: TLS from the first byte; the certificate is checked when verifyCertificate;
 * - none: never STARTTLS.
 * Credentials are only ever sent over TLS. Every session uses TLS 1.2 or later.
 *
 * The cache keeps sessions that finished a transaction, keyed by everything
 * that makes two sessions interchangeable (address, port, TLS mode, the name a
 * certificate was checked against, AUTH user), for idleConnectionMs, and closes
 * them after maxMessagesPerConnection transactions.
 */
import net from 'node:net';
import type { TLSSocket } from 'node:tls';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import { DsnSMTPConnection } from './dsn-passing';
import type { Logger } from '../log/logger';

export type TlsMode = 'opportunistic' | 'required' | 'implicit' | 'none';

/** One address of a destination, with how to talk to it. */
export interface Endpoint {
  /** the MX or next hop name: for logs, SNI and certificate checks */
  host: string;
  address: string;
  port: number;
  tls: TlsMode;
  verifyCertificate: boolean;
  auth?: { user: string; pass: string };
}

export interface SessionSettings {
  /** EHLO name */
  hostname: string;
  connectTimeoutMs: number;
  commandTimeoutMs: number;
  logger: Logger;
  /** CA certificates (PEM) trusted for certificate checks instead of Node's bundled list */
  ca?: string[];
}

/** The error shape nodemailer uses: a code such as ECONNECTION, and the reply when there was one. */
export interface SmtpError extends Error {
  code?: string;
  response?: string;
  responseCode?: number;
  command?: string;
  recipient?: string;
  rejectedErrors?: SmtpError[];
  /** the code of the underlying error (e.g. ERR_TLS_CERT_ALTNAME_INVALID) when nodemailer replaced it */
  originalCode?: string;
}

/** Why a session could not be set up. `tlsHandshake` marks a failed TLS handshake, which opportunistic TLS retries in plain text. */
export class SessionError extends Error {
  constructor(
    message: string,
    readonly tlsHandshake: boolean,
    /** true when the failure was a reply of the server (so the host was reached) */
    readonly replied: boolean,
    /** nodemailer's error, when the failure was one (its originalCode tells certificate problems apart) */
    cause?: SmtpError,
  ) {
    super(message, cause ? { cause } : undefined);
  }
}

/**
 * The server greeted with this relay's own name (RFC 5321 5.2: "mail for X loops
 * back to myself", as Postfix says): a wrong MX or route that points here. It is
 * a permanent failure, never retried on other hosts.
 */
export class MailLoopError extends SessionError {
  constructor(message: string) {
    super(message, false, true);
  }
}

export class Session {
  /** transactions started on this session */
  transactions = 0;
  idleTimer: NodeJS.Timeout | undefined;
  /** called once when the connection has closed, whoever closed it */
  onClosed: (() => void) | undefined;

  constructor(
    readonly connection: DsnSMTPConnection,
    readonly endpoint: Endpoint,
    readonly key: string,
    readonly logger: Logger,
  ) {}

  get alive(): boolean {
    return !this.connection.destroyed;
  }

  /** Ends the session politely (QUIT) when it is usable, otherwise drops it. */
  end(): void {
    clearTimeout(this.idleTimer);
    if (this.alive) this.connection.quit();
    else this.connection.close();
  }
}

export function sessionKey(endpoint: Endpoint): string {
  const checkedName = endpoint.verifyCertificate && (endpoint.tls === 'required' || endpoint.tls === 'implicit') ? endpoint.host : '';
  return [endpoint.address, endpoint.port, endpoint.tls, checkedName, endpoint.auth?.user ?? ''].join('|');
}

/** "mx.example.org[192.0.2.1]:25" */
export function endpointName(endpoint: Endpoint): string {
  const address = net.isIPv6(endpoint.address) ? `[${endpoint.address}]` : endpoint.address;
  return endpoint.host === endpoint.address ? `${address}:${endpoint.port}` : `${endpoint.host}[${endpoint.address}]:${endpoint.port}`;
}

/**
 * Connects to `endpoint` and sets the session up. `plainText` skips STARTTLS: the
 * retry after a failed handshake under opportunistic TLS.
 */
export function openSession(endpoint: Endpoint, settings: SessionSettings, plainText = false): Promise<Session> {
  const verify = endpoint.verifyCertificate && (endpoint.tls === 'required' || endpoint.tls === 'implicit');
  const connection = new DsnSMTPConnection({
    host: endpoint.address,
    port: endpoint.port,
    secure: endpoint.tls === 'implicit',
    ignoreTLS: plainText || endpoint.tls === 'none',
    requireTLS: endpoint.tls === 'required',
    opportunisticTLS: endpoint.tls === 'opportunistic',
    // SNI and the certificate check use the host name; an IP literal host is checked as an IP
    servername: net.isIP(endpoint.host) ? undefined : endpoint.host,
    name: settings.hostname,
    connectionTimeout: settings.connectTimeoutMs,
    greetingTimeout: settings.commandTimeoutMs,
    socketTimeout: settings.commandTimeoutMs,
    logger: false,
    tls: { minVersion: 'TLSv1.2', rejectUnauthorized: verify, ...(settings.ca ? { ca: settings.ca } : {}) },
  });
  const name = endpointName(endpoint);
  const logger = settings.logger.child({ remote: name, smtpSession: connection.id });
  const session = new Session(connection, endpoint, sessionKey(endpoint), logger);

  return new Promise<Session>((resolve, reject) => {
    let settled = false;
    const fail = (message: string, tlsHandshake: boolean, replied: boolean, cause?: SmtpError, loop = false): void => {
      if (settled) return;
      settled = true;
      connection.close();
      logger.debug({ reason: message }, 'SMTP session setup failed');
      reject(loop ? new MailLoopError(message) : new SessionError(message, tlsHandshake, replied, cause));
    };
    // nodemailer emits 'error' for socket failures at any time; without a listener it would throw
    connection.on('error', (err: SmtpError) => {
      if (!settled) {
        const tlsHandshake = err.code === 'ETLS' || (connection.upgrading === true && !connection.secure);
        fail(`${name}: ${describeError(err)}`, tlsHandshake, err.response !== undefined, err);
      } else {
        logger.debug({ err: err.message, code: err.code }, 'SMTP connection error');
      }
    });
    connection.once('end', () => {
      clearTimeout(session.idleTimer);
      session.onClosed?.();
      logger.debug('SMTP connection closed');
      fail(`${name}: connection closed before the session was ready`, false, false);
    });

    connection.connect((err?: SmtpError) => {
      if (settled) return;
      if (err) return fail(`${name}: ${describeError(err)}`, false, err.response !== undefined, err);
      // belt and braces: nodemailer enforces requireTLS, a session without TLS never goes on
      if ((endpoint.tls === 'required' || endpoint.tls === 'implicit') && !connection.secure) {
        return fail(`${name}: TLS is required but the session is not encrypted`, false, false);
      }
      if (verify && (connection._socket as TLSSocket).authorized !== true) {
        return fail(`${name}: the certificate was not verified`, false, false);
      }
      const greeted = ehloName(connection.lastServerResponse);
      if (greeted !== undefined && greeted.toLowerCase() === settings.hostname.toLowerCase()) {
        return fail(`${name} greets as ${greeted}, this relay's own name: mail for it loops back to myself`, false, true, undefined, true);
      }
      const ready = (): void => {
        settled = true;
        // nodemailer sets this too; commands are written in whole batches, Nagle would only delay them
        if (connection._socket) connection._socket.setNoDelay(true);
        logger.debug({ secure: connection.secure, authUser: endpoint.auth?.user, plainTextRetry: plainText }, 'SMTP session ready');
        resolve(session);
      };
      if (!endpoint.auth) return ready();
      if (!connection.secure) {
        return fail(`${name}: not sending credentials for ${endpoint.auth.user} over an unencrypted connection (STARTTLS not offered or failed)`, false, false);
      }
      if (!connection.allowsAuth) return fail(`${name}: credentials are configured but the server does not offer AUTH`, false, true);
      connection.login({ user: endpoint.auth.user, pass: endpoint.auth.pass }, (loginErr) => {
        if (loginErr) return fail(`${name}: AUTH as ${endpoint.auth?.user} failed: ${describeError(loginErr)}`, false, loginErr.response !== undefined);
        ready();
      });
    });
  });
}

/** The name a server gives in the first line of its EHLO reply ("250-mx.example.org Hello"). */
function ehloName(reply: string | false | undefined): string | undefined {
  return typeof reply === 'string' ? /^250[ -](\S+)/.exec(reply)?.[1] : undefined;
}

/** The reply of the server when there was one, otherwise what went wrong locally. */
export function describeError(err: SmtpError): string {
  if (err.response) return oneLine(err.response);
  const message = oneLine(err.message);
  return err.code && !message.includes(err.code) ? `${message} (${err.code})` : message;
}

/** Multi-line replies (and OpenSSL messages) as one line, for results and logs. */
export function oneLine(text: string): string {
  return text.trim().replace(/\s*\r?\n\s*/g, ' ');
}

export class ConnectionCache {
  private readonly idle = new Map<string, Session[]>();
  private closed = false;

  constructor(
    private readonly idleConnectionMs: number,
    private readonly maxMessagesPerConnection: number,
  ) {}

  /** An idle session for `key`, removed from the cache, or undefined. */
  take(key: string): Session | undefined {
    const sessions = this.idle.get(key);
    while (sessions && sessions.length > 0) {
      const session = sessions.pop() as Session;
      clearTimeout(session.idleTimer);
      if (session.alive) {
        if (sessions.length === 0) this.idle.delete(key);
        return session;
      }
    }
    this.idle.delete(key);
    return undefined;
  }

  /** Keeps a session that finished a transaction cleanly, or ends it when it may not be reused. */
  put(session: Session): void {
    if (this.closed || !session.alive || session.transactions >= this.maxMessagesPerConnection || this.idleConnectionMs <= 0) {
      session.end();
      return;
    }
    const sessions = this.idle.get(session.key) ?? [];
    sessions.push(session);
    this.idle.set(session.key, sessions);
    session.idleTimer = setTimeout(() => {
      this.remove(session);
      session.logger.debug('closing idle SMTP session');
      session.end();
    }, this.idleConnectionMs);
    session.idleTimer.unref();
    // a server that closes the idle session takes it out of the cache
    session.onClosed = () => this.remove(session);
  }

  /** Ends every idle session and waits (briefly) for them to close; later `put`s end their session. */
  async close(waitMs = 1000): Promise<void> {
    this.closed = true;
    const sessions = [...this.idle.values()].flat();
    this.idle.clear();
    await Promise.all(
      sessions.map(
        (session) =>
          new Promise<void>((resolve) => {
            if (!session.alive) return resolve();
            const timer = setTimeout(() => {
              session.connection.close();
              resolve();
            }, waitMs);
            session.connection.once('end', () => {
              clearTimeout(timer);
              resolve();
            });
            session.end();
          }),
      ),
    );
  }

  private remove(session: Session): void {
    clearTimeout(session.idleTimer);
    const sessions = this.idle.get(session.key);
    if (!sessions) return;
    const index = sessions.indexOf(session);
    if (index >= 0) sessions.splice(index, 1);
    if (sessions.length === 0) this.idle.delete(session.key);
  }
}
