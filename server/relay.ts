/**
 * The relay process, composed: spool -> scheduler/router/transports -> listeners,
 * plus the admin socket and the metrics endpoint beside them.
 * Start order matters: the spool is recovered and the scheduler loaded before any
 * listener accepts mail. Stop order is the reverse: listeners stop accepting and
 * let their sessions finish, then deliveries in flight finish (or are left in
 * active/, which the next start puts back in the queue).
 *
 * Reload (SIGHUP or the admin socket) re-reads the config file: an invalid file
 * (or an unreadable DKIM key) is refused and the running config kept; a valid one
 * applies to new sessions and deliveries at once (users, networks, domains,
 * routes, limits, retry, DKIM keys, inbound checks, a renewed certificate), listeners whose address, port, role or TLS mode changed are
 * replaced (the old one finishes its sessions), and keys that only a restart can
 * apply are named in the answer and the log.
 */
import { join } from 'node:path';
import type { RelayConfig } from './config/schema';
import { loadConfigFile } from './config/load';
import type { Logger } from './log/logger';
import { loadDkimKeys, type DkimSigningKey } from './dkim/keys';
import { DkimSigner } from './dkim/signer';
import { AddressGuard } from './delivery/address-guard';
import { MaildirTransport } from './delivery/maildir';
import { expandAliases, hasExpandingAliases } from './delivery/local-mailboxes';
import { MxResolver } from './delivery/mx-resolver';
import { type OutboundTlsTestOptions, outboundTlsParts } from './delivery/mta-sts-setup';
import { RecipientVerifier } from './delivery/recipient-verifier';
import { DnsblChecker, blocklistResolver, configuredZones } from './inbound/dnsbl';
import { httpsReportPoster, type ReportPoster } from './delivery/tls-report-post';
import { Router } from './delivery/router';
import { SmtpDelivery } from './delivery/smtp-transport';
import { tlsReportDir, tlsReportFrom } from './delivery/tls-report';
import { TlsReportSender } from './delivery/tls-report-sender';
import { InboundAuthenticator } from './inbound/authentication';
import { SmtpListener, type ListenerDeps } from './listener/smtp-listener';
import { TlsService, type TlsServiceOptions } from './tls/tls-service';
import { Scheduler } from './queue/scheduler';
import { Spool } from './queue/spool';
import { freeBytes } from './queue/spool-space';
import { AuthThrottle } from './stages/auth-throttle';
import { RelayPolicy } from './stages/policy';
import { SendingLimiter } from './stages/sending-limit';
import { AdminServer, assertNoRunningRelay } from './admin/admin-server';
import { adminHandlers, adminSocketPath } from './admin/admin-api';
import { DELIVERY_ERRORS_FILE, DeliveryErrors } from './admin/delivery-errors';
import { QueueControl } from './admin/queue-control';
import { QueueView } from './admin/queue-view';
import { effectiveConfig, restartOnlyChanges, sameListener } from './admin/reload-plan';
import { MetricsServer } from './metrics/metrics-server';
import { RelayMetrics, roleOfListener } from './metrics/relay-metrics';

export interface RelayOptions {
  /** for tests and labs: the port MX deliveries connect to (default 25) */
  mxPort?: number;
  /** how long a stop waits for deliveries in flight */
  shutdownTimeoutMs?: number;
  /** the file the config was read from; reload re-reads it (without one, reload is refused) */
  configPath?: string;
  /** for tests and labs: a private CA to trust and the HTTPS port of MTA-STS policy hosts */
  outboundTls?: OutboundTlsTestOptions;
  /** certificate sources given in code (a DNS-01 provider) */
  tls?: TlsServiceOptions;
}

export interface ReloadResult {
  /** listeners replaced because their address, port, role or TLS mode changed */
  replacedListeners: string[];
  /** top-level keys (or key paths) that changed but apply only after a restart */
  needsRestart: string[];
}

/** how long a client's RCPT may wait for the next hop's answer about a recipient (then 450) */
const RECIPIENT_PROBE_TIMEOUT_MS = 10_000;

export class Relay {
  readonly startedAt = new Date();
  private admin?: AdminServer;
  private metricsServer?: MetricsServer;
  /** sends the daily TLS reports, when delivery.tlsReports.send is on */
  tlsReportSender?: TlsReportSender;
  private reloading?: Promise<ReloadResult>;
  /** listeners replaced by a reload, finishing their sessions */
  private readonly retiring = new Set<SmtpListener>();

  private constructor(
    private current: RelayConfig,
    readonly spool: Spool,
    readonly scheduler: Scheduler,
    private readonly smtp: SmtpDelivery,
    private router: Router,
    private listeners: SmtpListener[],
    private listenerDeps: ListenerDeps,
    readonly metrics: RelayMetrics,
    readonly deliveryErrors: DeliveryErrors,
    private readonly logger: Logger,
    private readonly options: RelayOptions,
    /** the certificate store, ACME and the MTA-STS policy server */
    readonly tls: TlsService,
  ) {
    this.expandAliasesOf(current);
  }

  /** Recipients pass through the alias lists and forwards of `config`, if it has any (see Spool.recipientExpander). */
  private expandAliasesOf(config: RelayConfig): void {
    this.spool.recipientExpander = hasExpandingAliases(config.domains) ? (recipients) => expandAliases(config.domains, recipients) : undefined;
  }

  static async start(config: RelayConfig, logger: Logger, options: RelayOptions = {}): Promise<Relay> {
    // two relays on one spool would deliver twice: a live admin socket means one runs already
    await assertNoRunningRelay(adminSocketPath(config));
    // keys next: a bad key stops the start before the spool is touched
    const dkimKeys = await loadDkimKeys(config.dkim.keys);
    const spool = await Spool.open(config.paths.spool, logger);
    const recovered = await spool.recover();
    if (recovered.requeued > 0 || recovered.removedPartial > 0) {
      logger.warn({ event: 'spool-recovered', ...recovered }, `requeued ${recovered.requeued} message(s) that were in delivery; removed ${recovered.removedPartial} partial file(s) that never got a 250`);
    }
    const view = new QueueView(config.paths.spool);
    const metrics = new RelayMetrics(
      config,
      () => view.counts(),
      () => freeBytes(config.paths.spool),
      // read at scrape time, once the scheduler below exists
      () => ({ waiting: scheduler.waitingCount, suspended: scheduler.suspendedDestinations().length }),
    );
    const errors = new DeliveryErrors({ file: join(config.paths.state, DELIVERY_ERRORS_FILE), logger });
    const resolver = new MxResolver(config.dns.servers);
    const guard = new AddressGuard(config.delivery.allowedDestinations);
    const outboundTls = outboundTlsParts(config, resolver, guard, logger, options.outboundTls);
    const smtp = new SmtpDelivery({
      hostname: config.hostname,
      resolver,
      guard,
      ...outboundTls,
      connectTimeoutMs: config.delivery.connectTimeoutMs,
      commandTimeoutMs: config.delivery.commandTimeoutMs,
      maxRecipientsPerTransaction: config.delivery.maxRecipientsPerTransaction,
      logger,
      onSessionOpened: (secure) => metrics.outboundSession(secure),
      ...(options.mxPort !== undefined ? { mxPort: options.mxPort } : {}),
    });
    const verifier = new RecipientVerifier({
      hostname: config.hostname,
      resolver,
      guard,
      connectTimeoutMs: Math.min(config.delivery.connectTimeoutMs, RECIPIENT_PROBE_TIMEOUT_MS),
      probeTimeoutMs: RECIPIENT_PROBE_TIMEOUT_MS,
      logger,
      ca: outboundTls.ca,
    });
    const router = Relay.router(config, smtp, dkimKeys, logger);
    const scheduler = new Scheduler({
      spool,
      router,
      config,
      logger,
      observer: {
        recipientResult(envelope, result) {
          metrics.recipientOutcome(result.outcome === 'failed' ? 'bounced' : result.outcome, roleOfListener(envelope.client.listener), result.address, envelope.receivedAt);
          errors.record(envelope.id, result);
        },
      },
    });
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
    const listenerDeps: ListenerDeps = {
      config,
      policy: new RelayPolicy(config),
      spool,
      tls: tls.store,
      logger,
      metrics,
      authenticator: config.inbound.authentication ? new InboundAuthenticator(config) : undefined,
      blocklists: dnsblChecker(config, logger, metrics),
      authThrottle: new AuthThrottle(config.limits.auth),
      sendingLimiter: new SendingLimiter(),
      onQueued: (entry, preloaded) => scheduler.enqueue(entry, preloaded),
      verifier,
    };
    const listeners = config.listeners.map((listener, index) => new SmtpListener(index, listener, { ...listenerDeps }));
    const relay = new Relay(config, spool, scheduler, smtp, router, listeners, listenerDeps, metrics, errors, logger, options, tls);
    relay.tlsReportSender = Relay.tlsReportSender(config, spool, scheduler, resolver, logger, httpsReportPoster({ resolver, guard, ca: outboundTls.ca, userAgent: `ownrelay (${config.hostname})` }));
    relay.tlsReportSender?.start();
    try {
      for (const listener of listeners) await listener.listen();
      const control = new QueueControl(spool, scheduler, logger);
      relay.admin = await AdminServer.start(adminSocketPath(config), adminHandlers(relay, control, view), logger);
    } catch (err) {
      await relay.stop();
      throw err;
    }
    if (config.metrics.enabled) relay.metricsServer = await MetricsServer.start(metrics, config.metrics.address, config.metrics.port, logger);
    logger.info({ event: 'started', hostname: config.hostname, listeners: listeners.map((l) => `${l.listener.role}:${l.listener.address}:${l.port}`) }, 'ownrelay started');
    return relay;
  }

  private static router(config: RelayConfig, smtp: SmtpDelivery, dkimKeys: DkimSigningKey[], logger: Logger): Router {
    const maildir = new MaildirTransport({ mailRoot: config.paths.mail, hostname: config.hostname, domains: config.domains, logger });
    for (const key of dkimKeys) {
      logger.info({ event: 'dkim-key', domain: key.domain, selector: key.selector, algorithm: key.algorithm, record: key.dnsRecord }, `DKIM: signing mail from ${key.domain} with ${key.selector}._domainkey.${key.domain} (${key.algorithm})`);
    }
    return new Router(config, maildir, smtp, new DkimSigner(dkimKeys));
  }

  /** The sender of daily TLS reports, when they are to be sent (the schema made sure a DKIM key signs their From domain). */
  private static tlsReportSender(config: RelayConfig, spool: Spool, scheduler: Scheduler, resolver: MxResolver, logger: Logger, post: ReportPoster): TlsReportSender | undefined {
    const { tlsReports } = config.delivery;
    if (!tlsReports.enabled || !tlsReports.send) return undefined;
    return new TlsReportSender({
      dir: tlsReportDir(config),
      spool,
      enqueue: (entry) => scheduler.enqueue(entry),
      lookupTxt: (name) => resolver.resolveTxt(name),
      hostname: config.hostname,
      from: tlsReportFrom(config),
      logger,
      post,
    });
  }

  get config(): RelayConfig {
    return this.current;
  }

  /** Actual ports, by listener index (useful with port 0). */
  get ports(): number[] {
    return this.listeners.map((l) => l.port);
  }

  get runningListeners(): ReadonlyArray<Pick<SmtpListener, 'listener' | 'port'>> {
    return this.listeners;
  }

  get metricsEndpoint(): { address: string; port: number } | undefined {
    return this.metricsServer ? { address: this.metricsServer.address, port: this.metricsServer.port } : undefined;
  }

  get configPath(): string | undefined {
    return this.options.configPath;
  }

  /** Re-reads the config file; see the module comment. Concurrent calls share one reload. */
  reload(): Promise<ReloadResult> {
    this.reloading ??= this.reloadNow()
      .catch((err: unknown) => {
        const message = `reload refused, the running config is kept: ${err instanceof Error ? err.message : String(err)}`;
        this.logger.error({ event: 'reload-refused', config: this.options.configPath, err: message }, message);
        throw err;
      })
      .finally(() => (this.reloading = undefined));
    return this.reloading;
  }

  private async reloadNow(): Promise<ReloadResult> {
    const path = this.options.configPath;
    if (!path) throw new Error('this relay runs the embedded default config: there is no file to reload (start it with --config FILE)');
    const fromFile = loadConfigFile(path);
    const needsRestart = restartOnlyChanges(this.current, fromFile);
    const next = effectiveConfig(this.current, fromFile);
    const dkimKeys = await loadDkimKeys(next.dkim.keys);
    await this.tls.recheck();
    this.listenerDeps.authThrottle.configure(next.limits.auth);
    const deps: ListenerDeps = {
      ...this.listenerDeps,
      config: next,
      policy: new RelayPolicy(next),
      authenticator: next.inbound.authentication ? new InboundAuthenticator(next) : undefined,
      blocklists: dnsblChecker(next, this.logger, this.metrics),
    };
    // bind the listeners that change first: if one cannot listen, nothing has changed yet
    const plan = next.listeners.map((cfg, index) => {
      const old = this.listeners[index];
      return old && sameListener(old.listener, cfg) ? { keep: old, cfg, index } : { keep: undefined, cfg, index, old };
    });
    const started: SmtpListener[] = [];
    const closing: SmtpListener[] = [];
    try {
      for (const step of plan) {
        if (step.keep) continue;
        // the same address and port: the old listener must let go of it first
        const clash = this.listeners.find((l) => l.listener.address === step.cfg.address && step.cfg.port !== 0 && l.port === step.cfg.port);
        if (clash && !closing.includes(clash)) {
          closing.push(clash);
          void clash.close();
        }
        const fresh = new SmtpListener(step.index, step.cfg, { ...deps });
        await fresh.listen();
        started.push(fresh);
      }
    } catch (err) {
      await Promise.all(started.map((l) => l.close()));
      throw new Error(`a listener could not start: ${(err as Error).message}${closing.length > 0 ? ' (a listener on the same port was stopped for it; restart the relay)' : ''}`);
    }
    const replaced: SmtpListener[] = [];
    const listeners = plan.map((step) => {
      if (step.keep) {
        step.keep.update(deps);
        return step.keep;
      }
      if (step.old) replaced.push(step.old);
      return started.shift()!;
    });
    for (const old of this.listeners.slice(next.listeners.length)) replaced.push(old);
    // the old listeners stop accepting and let their sessions finish (quit or idle out)
    for (const old of replaced) {
      if (closing.includes(old)) continue;
      this.retiring.add(old);
      void old.retire(next.limits.idleTimeoutMs).finally(() => this.retiring.delete(old));
    }
    this.current = next;
    this.expandAliasesOf(next);
    this.listeners = listeners;
    this.listenerDeps = deps;
    this.router = Relay.router(next, this.smtp, dkimKeys, this.logger);
    this.scheduler.updateConfig(next, this.router);
    this.metrics.knowDomainsOf(next);
    const result: ReloadResult = {
      replacedListeners: replaced.map((l) => `${l.listener.role}:${l.listener.address}:${l.port}`),
      needsRestart,
    };
    this.logger.info(
      { event: 'reloaded', config: path, ...result, users: next.users.length, domains: next.domains.length, listeners: listeners.map((l) => `${l.listener.role}:${l.listener.address}:${l.port}`) },
      `config reloaded from ${path}${needsRestart.length > 0 ? `; a restart is needed to apply ${needsRestart.join(', ')}` : ''}`,
    );
    return result;
  }

  async stop(): Promise<void> {
    this.logger.info({ event: 'stopping' }, 'stopping: no new connections; finishing sessions and deliveries');
    // the listeners stop accepting first (synchronously), then the admin and metrics sockets close
    const listenersClosed = Promise.all([...this.listeners, ...this.retiring].map((l) => l.close()));
    await this.admin?.close();
    await this.metricsServer?.close();
    await listenersClosed;
    await this.tls.stop();
    await this.tlsReportSender?.stop();
    await this.scheduler.stop(this.options.shutdownTimeoutMs ?? 20_000);
    await this.router.close();
    await this.spool.close();
    this.deliveryErrors.close();
    this.logger.info({ event: 'stopped' }, 'stopped');
  }
}

/** The checker of inbound.dnsbl, through the relay's resolvers; undefined when no list is configured. */
function dnsblChecker(config: RelayConfig, logger: Logger, metrics: RelayMetrics): DnsblChecker | undefined {
  if (config.inbound.dnsbl.length === 0) return undefined;
  return new DnsblChecker(configuredZones(config.inbound.dnsbl), blocklistResolver(config.dns.servers), logger, { onAnswer: (zone, answer) => metrics.dnsblAnswer(zone, answer) });
}
