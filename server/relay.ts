/**
 * The relay process, composed: spool -> scheduler/router/transports -> listeners.
 * Start order matters: the spool is recovered and the scheduler loaded before any
 * listener accepts mail. Stop order is the reverse: listeners stop accepting and
 * let their sessions finish, then deliveries in flight finish (or are left in
 * active/, which the next start puts back in the queue).
 */
import type { RelayConfig } from './config/schema';
import type { Logger } from './log/logger';
import { loadDkimKeys } from './dkim/keys';
import { DkimSigner } from './dkim/signer';
import { AddressGuard } from './delivery/address-guard';
import { MaildirTransport } from './delivery/maildir';
import { MxResolver } from './delivery/mx-resolver';
import { type OutboundTlsTestOptions, outboundTlsParts } from './delivery/mta-sts-setup';
import { Router } from './delivery/router';
import { SmtpDelivery } from './delivery/smtp-transport';
import { InboundAuthenticator } from './inbound/authentication';
import { SmtpListener } from './listener/smtp-listener';
import { TlsService, type TlsServiceOptions } from './tls/tls-service';
import { Scheduler } from './queue/scheduler';
import { Spool } from './queue/spool';
import { AuthThrottle } from './stages/auth-throttle';
import { RelayPolicy } from './stages/policy';
import { SendingLimiter } from './stages/sending-limit';

export interface RelayOptions {
  /** for tests and labs: the port MX deliveries connect to (default 25) */
  mxPort?: number;
  /** how long a stop waits for deliveries in flight */
  shutdownTimeoutMs?: number;
  /** for tests and labs: a private CA to trust and the HTTPS port of MTA-STS policy hosts */
  outboundTls?: OutboundTlsTestOptions;
  /** certificate sources given in code (a DNS-01 provider) */
  tls?: TlsServiceOptions;
}

export class Relay {
  private constructor(
    readonly config: RelayConfig,
    readonly spool: Spool,
    private readonly scheduler: Scheduler,
    private readonly router: Router,
    private readonly listeners: SmtpListener[],
    private readonly logger: Logger,
    private readonly options: RelayOptions,
    /** the certificate store, ACME and the MTA-STS policy server */
    readonly tls: TlsService,
  ) {}

  static async start(config: RelayConfig, logger: Logger, options: RelayOptions = {}): Promise<Relay> {
    // keys first: a bad key stops the start before the spool is touched
    const dkimKeys = await loadDkimKeys(config.dkim.keys);
    const spool = await Spool.open(config.paths.spool, logger);
    const recovered = await spool.recover();
    if (recovered.requeued > 0 || recovered.removedPartial > 0) {
      logger.warn({ event: 'spool-recovered', ...recovered }, `requeued ${recovered.requeued} message(s) that were in delivery; removed ${recovered.removedPartial} partial file(s) that never got a 250`);
    }
    const maildir = new MaildirTransport({ mailRoot: config.paths.mail, hostname: config.hostname, domains: config.domains, logger });
    const resolver = new MxResolver(config.dns.servers);
    const guard = new AddressGuard(config.delivery.allowedDestinations);
    const smtp = new SmtpDelivery({
      hostname: config.hostname,
      resolver,
      guard,
      ...outboundTlsParts(config, resolver, guard, logger, options.outboundTls),
      connectTimeoutMs: config.delivery.connectTimeoutMs,
      commandTimeoutMs: config.delivery.commandTimeoutMs,
      logger,
      ...(options.mxPort !== undefined ? { mxPort: options.mxPort } : {}),
    });
    const router = new Router(config, maildir, smtp, new DkimSigner(dkimKeys));
    for (const key of dkimKeys) {
      logger.info({ event: 'dkim-key', domain: key.domain, selector: key.selector, algorithm: key.algorithm, record: key.dnsRecord }, `DKIM: signing mail from ${key.domain} with ${key.selector}._domainkey.${key.domain} (${key.algorithm})`);
    }
    const scheduler = new Scheduler({ spool, router, config, logger });
    await scheduler.start();
    let tls: TlsService;
    try {
      tls = await TlsService.start(config, logger, options.tls);
    } catch (err) {
      await scheduler.stop(0);
      await router.close();
      await spool.close();
      throw err;
    }
    const policy = new RelayPolicy(config);
    const authenticator = config.inbound.authentication ? new InboundAuthenticator(config) : undefined;
    const authThrottle = new AuthThrottle(config.limits.auth);
    const sendingLimiter = new SendingLimiter(config);
    const listeners = config.listeners.map(
      (listener, index) =>
        new SmtpListener(index, listener, { config, policy, spool, tls: tls.store, logger, authThrottle, sendingLimiter, ...(authenticator ? { authenticator } : {}), onQueued: (entry, preloaded) => scheduler.enqueue(entry, preloaded) }),
    );
    const relay = new Relay(config, spool, scheduler, router, listeners, logger, options, tls);
    try {
      for (const listener of listeners) await listener.listen();
    } catch (err) {
      await relay.stop();
      throw err;
    }
    logger.info({ event: 'started', hostname: config.hostname, listeners: listeners.map((l) => `${l.listener.role}:${l.listener.address}:${l.port}`) }, 'ownrelay started');
    return relay;
  }

  /** Actual ports, by listener index (useful with port 0). */
  get ports(): number[] {
    return this.listeners.map((l) => l.port);
  }

  async stop(): Promise<void> {
    this.logger.info({ event: 'stopping' }, 'stopping: no new connections; finishing sessions and deliveries');
    await Promise.all(this.listeners.map((l) => l.close()));
    await this.tls.stop();
    await this.scheduler.stop(this.options.shutdownTimeoutMs ?? 20_000);
    await this.router.close();
    await this.spool.close();
    this.logger.info({ event: 'stopped' }, 'stopped');
  }
}
