/**
 * A thin, version-pinned adaptation of smtp-server 3.21.6 (package.json pins the
 * exact version; test/integration/listener-adapter.test.ts fails if upstream
 * changes what it relies on). It changes these things and nothing else:
 *
 * 1. The early-talker check becomes a per-listener choice. Upstream waits a
 *    hard-coded 100 ms before the greeting (init() in smtp-connection.js) and
 *    answers "421 You talk too soon" to clients that speak first. That is worth
 *    keeping on the public MX port; on submission ports the customer's own
 *    applications only pay latency for it (one message per connection is capped
 *    near 10/s). With `greetingDelay: false` the connection is greeted at once;
 *    everything else init() does (listeners, the maxClients check) is kept.
 * 2. A command line longer than `maxLineBytes` (RFC 5321 4.5.3.1.4 allows 512;
 *    like Postfix we accept up to 2048) is answered "500 5.5.2 Line too long" and
 *    the session goes on. Upstream only stops lines past 16 KiB, with 421 and a
 *    disconnect, which stays the answer to endless lines.
 * 3. Replies whose text already starts with an enhanced status code (RFC 3463),
 *    as every SmtpError's does, are sent without the code smtp-server would derive
 *    from the basic code alone (it maps every 550 to 5.1.1, every 554 to 5.6.0).
 * 4. The DATA phase is searched natively for line-start dots, and the bytes before
 *    them are passed on at once (data-scan.ts); upstream still decides what each
 *    dot means, and what the message stream receives is unchanged.
 * 5. Connection ids come from a counter instead of random bytes, except for
 *    connections that send a PROXY header, which upstream reads as before.
 * 6. The parser's continue() clears its pending callback before calling it, not
 *    after. Upstream's order lost the callback that the call itself set when the
 *    input after a message held a whole second message (a client that did not
 *    wait for 354), and the session hung until its idle timeout.
 */
// The connection class is not exported by the package, so it is imported by the
// path of the CommonJS build; the server class comes from the same build, so that
// both are the modules smtp-server's own code uses (a bare 'smtp-server' import
// would give the bundle the ES module build as a second copy).
import { SMTPServer, type SMTPServerOptions } from '../../node_modules/smtp-server/dist/cjs/smtp-server.js';
import { SMTPConnection } from '../../node_modules/smtp-server/dist/cjs/smtp-connection.js';
import type { SMTPStream } from '../../node_modules/smtp-server/dist/cjs/smtp-stream.js';
import type net from 'node:net';
import type tls from 'node:tls';
import { withFastDataScan } from './data-scan';

let connectionCounter = 0;
const connectionTag = `${process.pid.toString(36)}-`;

/**
 * Upstream draws 10 random bytes per connection for its id (in _handleProxy); a
 * counter is as unique within a process and costs no call into OpenSSL.
 */
function nextConnectionId(): string {
  return `${connectionTag}${(++connectionCounter).toString(36)}`;
}

/** SMTPStream.continue() with the pending callback taken before it runs (see 6. above). */
function continueInOrder(this: SMTPStream): void {
  const stream = this as unknown as { _continueCallback: (() => void) | boolean };
  const pending = stream._continueCallback;
  if (typeof pending === 'function') {
    stream._continueCallback = false;
    pending();
  } else {
    // continue() came before the message's end: run the remainder when it comes
    stream._continueCallback = true;
  }
}

const ENHANCED_STATUS_PREFIX = /^[245]\.\d{1,3}\.\d{1,3} /;

export interface AdaptedServerOptions extends SMTPServerOptions {
  /** wait 100 ms before the greeting and refuse early talkers (upstream behaviour) */
  greetingDelay: boolean;
  /** longest command line answered normally; longer ones get 500 5.5.2 */
  maxLineBytes: number;
  /** called for each over-long line, so the caller can count it as an error */
  onLineTooLong?: (session: SMTPConnection['session']) => void;
}

class AdaptedConnection extends SMTPConnection {
  constructor(
    server: AdaptedSmtpServer,
    socket: net.Socket | tls.TLSSocket,
    socketOptions: ConstructorParameters<typeof SMTPConnection>[2],
    private readonly adapted: Pick<AdaptedServerOptions, 'greetingDelay' | 'maxLineBytes' | 'onLineTooLong'>,
  ) {
    super(server, socket, socketOptions);
  }

  override _createParser(): SMTPStream {
    const parser = super._createParser();
    parser._feedDataStream = withFastDataScan(parser._feedDataStream);
    parser.continue = continueInOrder;
    return parser;
  }

  override _onCommand(command: Buffer, callback?: () => void): void {
    if (command.length > this.adapted.maxLineBytes && !this._dataStream) {
      this.adapted.onLineTooLong?.(this.session);
      this.send(500, '5.5.2 Line too long');
      if (callback) setImmediate(callback);
      return;
    }
    super._onCommand(command, callback);
  }

  override init(): void {
    if (this.adapted.greetingDelay) return super.init();
    this._setListeners(() => {
      const { maxClients } = this._server.options;
      if (maxClients && this._server.connections.size > maxClients) {
        return this.send(421, this.name + ' Too many connected clients, try again in a moment', false);
      }
      this.connectionReady();
    });
  }

  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    if (typeof data === 'string' && ENHANCED_STATUS_PREFIX.test(data)) return super.send(code, data, false);
    return super.send(code, data, context);
  }
}

export class AdaptedSmtpServer extends SMTPServer {
  private readonly adapted: Pick<AdaptedServerOptions, 'greetingDelay' | 'maxLineBytes' | 'onLineTooLong'>;

  constructor(options: AdaptedServerOptions) {
    const { greetingDelay, maxLineBytes, onLineTooLong, ...upstream } = options;
    super(upstream);
    this.adapted = { greetingDelay, maxLineBytes, onLineTooLong };
  }

  /**
   * Same as upstream _handleProxy() for a connection that sends no PROXY header,
   * with an id from the counter instead of one drawn from 10 random bytes.
   */
  override _handleProxy(socket: net.Socket, callback: Parameters<SMTPServer['_handleProxy']>[1]): void {
    if (this._expectsProxyHeader(socket)) return super._handleProxy(socket, callback);
    const ignore = this.options.ignoredHosts && this.options.ignoredHosts.includes(socket.remoteAddress ?? '');
    setImmediate(() => callback(null, { id: nextConnectionId(), ignore }));
  }

  /** Same as upstream connect(), with the adapted connection class. */
  override connect(socket: net.Socket | tls.TLSSocket, socketOptions?: ConstructorParameters<typeof SMTPConnection>[2]): void {
    const options = { ...socketOptions, id: socketOptions?.id ?? nextConnectionId() };
    const connection = new AdaptedConnection(this, socket, options, this.adapted);
    this.connections.add(connection);
    connection.on('error', (err: Error) => this._onError(err));
    connection.on('connect', (data: unknown) => this._onClientConnect(data as never));
    connection.init();
  }
}
