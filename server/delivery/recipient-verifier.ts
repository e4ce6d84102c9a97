/**
 * Recipient verification for forward domains (like Postfix's
 * reject_unverified_recipient): before a stranger's RCPT TO for a domain whose
 * mail is passed on to a next hop is accepted, the next hop is asked whether it
 * would take the recipient (MAIL FROM:<>, RCPT TO, QUIT; no message is sent).
 * Mail for unknown users is then refused while the client is still connected,
 * instead of being accepted and bounced later to a sender that is often forged
 * (backscatter).
 *
 * Contract: verify() never throws. It answers `deliverable` (2xx to RCPT),
 * `undeliverable` (5xx to RCPT, with the next hop's reply) or `unknown` (a 4xx,
 * a refused MAIL FROM, no connection, a timeout: the client should try later).
 * Answers are cached per next hop and address: deliverable for a day,
 * undeliverable for an hour, unknown for a minute, so a dictionary attack or a
 * next hop that is down costs at most a few probes. At most MAX_CONCURRENT_PROBES
 * run at once; one address being verified is asked once however many sessions
 * wait for it.
 *
 * The probe uses nodemailer's SMTP client for the session (TLS, AUTH and
 * certificate checks as the next hop is configured), and two internals of the
 * pinned nodemailer version to send single commands (`_sendCommand`) and read
 * their replies (`_responseActions`), because its public API only sends whole
 * transactions. test/integration/recipient-verifier.test.ts pins them.
 */
import type { NextHop } from '../config/schema';
import type { Logger } from '../log/logger';
import type { AddressGuard } from './address-guard';
import { type Endpoint, type Session, SessionError, endpointName, oneLine, openSession } from './connection-cache';
import type { MxResolver } from './mx-resolver';

export type Verification =
  | { result: 'deliverable'; reply: string }
  | { result: 'undeliverable'; reply: string }
  | { result: 'unknown'; reason: string };

export interface RecipientVerifierOptions {
  /** EHLO name */
  hostname: string;
  resolver: Pick<MxResolver, 'resolveHost'>;
  guard: AddressGuard;
  connectTimeoutMs: number;
  /** the longest a whole probe may take, connection included (the client waits for it) */
  probeTimeoutMs: number;
  logger: Logger;
  /** CA certificates (PEM) trusted for certificate checks instead of Node's bundled list */
  ca?: string[];
}

const TTL_MS: Record<Verification['result'], number> = {
  deliverable: 24 * 3600_000,
  undeliverable: 3600_000,
  unknown: 60_000,
};
const MAX_CACHED = 100_000;
const MAX_CONCURRENT_PROBES = 4;

/** The nodemailer internals the probe uses (nodemailer pinned in package.json). */
export interface CommandChannel {
  _responseActions: Array<(reply: string) => void>;
  _sendCommand(command: string): void;
}

export class RecipientVerifier {
  private readonly cache = new Map<string, { verification: Verification; expires: number }>();
  private readonly inFlight = new Map<string, Promise<Verification>>();
  private running = 0;
  private readonly queued: Array<() => void> = [];

  constructor(private readonly opts: RecipientVerifierOptions) {}

  async verify(address: string, hop: NextHop): Promise<Verification> {
    const key = `${hop.host}:${hop.port}|${address.toLowerCase()}`;
    const cached = this.cache.get(key);
    if (cached && cached.expires > Date.now()) return cached.verification;
    const running = this.inFlight.get(key);
    if (running) return running;
    const probe = this.whenSlotFree()
      .then(() => this.probe(address, hop))
      .catch((err: unknown): Verification => ({ result: 'unknown', reason: `verification failed: ${String(err)}` }))
      .then((verification) => {
        this.remember(key, verification);
        return verification;
      })
      .finally(() => {
        this.inFlight.delete(key);
        this.releaseSlot();
      });
    this.inFlight.set(key, probe);
    return probe;
  }

  private remember(key: string, verification: Verification): void {
    this.cache.delete(key);
    this.cache.set(key, { verification, expires: Date.now() + TTL_MS[verification.result] });
    // the oldest answer goes first (a Map iterates in insertion order)
    if (this.cache.size > MAX_CACHED) this.cache.delete(this.cache.keys().next().value!);
  }

  private whenSlotFree(): Promise<void> {
    if (this.running < MAX_CONCURRENT_PROBES) {
      this.running++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.queued.push(resolve));
  }

  private releaseSlot(): void {
    const next = this.queued.shift();
    if (next) next();
    else this.running--;
  }

  /**
   * Asks each allowed address of the next hop in turn until one answers the RCPT.
   * (Credentials over an unencrypted session are refused by openSession.)
   */
  private async probe(recipient: string, hop: NextHop): Promise<Verification> {
    const usable = await this.opts.guard.usableAddresses(hop.host, this.opts.resolver);
    const reason = usable.failure ?? (usable.refused.length > 0 ? usable.refused.join('; ') : `${hop.host} has no usable address`);
    let last: Verification = { result: 'unknown', reason };
    for (const address of usable.addresses) {
      const endpoint: Endpoint = { host: hop.host, address, port: hop.port, tls: hop.tls, verifyCertificate: hop.verifyCertificate, auth: hop.auth };
      last = await this.probeEndpoint(endpoint, recipient);
      if (last.result !== 'unknown') break;
    }
    this.opts.logger.debug({ event: 'recipient-verified', recipient, nextHop: hop.host, ...last }, `verified <${recipient}> at ${hop.host}: ${last.result}`);
    return last;
  }

  private async probeEndpoint(endpoint: Endpoint, recipient: string): Promise<Verification> {
    const name = endpointName(endpoint);
    let session: Session | undefined;
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<Verification>((resolve) => {
      timer = setTimeout(() => {
        timedOut = true;
        resolve({ result: 'unknown', reason: `${name}: no answer within ${this.opts.probeTimeoutMs} ms` });
      }, this.opts.probeTimeoutMs);
    });
    const ask = async (): Promise<Verification> => {
      try {
        session = await openSession(endpoint, { hostname: this.opts.hostname, connectTimeoutMs: this.opts.connectTimeoutMs, commandTimeoutMs: this.opts.probeTimeoutMs, logger: this.opts.logger, ca: this.opts.ca });
      } catch (err) {
        return { result: 'unknown', reason: err instanceof SessionError ? err.message : `${name}: ${String(err)}` };
      }
      if (timedOut) {
        session.end();
        return { result: 'unknown', reason: `${name}: timed out` };
      }
      const channel = session.connection as unknown as CommandChannel;
      const mail = await command(session, channel, 'MAIL FROM:<>');
      if (!mail.startsWith('2')) return { result: 'unknown', reason: `${name} refused the null sender of the probe: ${oneLine(mail)}` };
      const rcpt = await command(session, channel, `RCPT TO:<${recipient}>`);
      if (rcpt.startsWith('2')) return { result: 'deliverable', reply: oneLine(rcpt) };
      if (rcpt.startsWith('5')) return { result: 'undeliverable', reply: oneLine(rcpt) };
      return { result: 'unknown', reason: `${name} said: ${oneLine(rcpt) || 'nothing (connection closed)'}` };
    };
    try {
      return await Promise.race([ask(), timeout]);
    } finally {
      clearTimeout(timer);
      // the session is never reused: QUIT when it is usable, else drop it
      (session as Session | undefined)?.end();
    }
  }
}

/** Sends one command and resolves with its reply ('' when the connection ends first). */
function command(session: Session, channel: CommandChannel, line: string): Promise<string> {
  return new Promise((resolve) => {
    if (!session.alive) return resolve('');
    const previous = session.onClosed;
    session.onClosed = () => {
      previous?.();
      resolve('');
    };
    channel._responseActions.push((reply) => {
      session.onClosed = previous;
      resolve(reply);
    });
    channel._sendCommand(line);
  });
}
