/**
 * The relay's Prometheus metrics, in a private prom-client Registry (never the
 * global one, so several relays in one process do not mix).
 *
 * Contract: the hot path (receive -> spool -> deliver) only increments counters
 * and observes one histogram; the queue gauges are computed at scrape time from
 * the spool's directory listings. Labels are bounded: `role` is mx|submission|
 * bounce, `domain` is the recipient domain, limited to the configured domains and
 * routes plus the first DOMAIN_LABEL_LIMIT others seen, the rest counted as
 * "other".
 */
import type * as PromClient from 'prom-client';
import type { RelayConfig } from '../config/schema';
import { domainOf } from '../queue/envelope';

// prom-client's classes from their own modules: its index also loads the Pushgateway,
// cluster aggregation, default metrics and OpenTelemetry, about 11 MiB of memory the
// relay never uses
const Registry = require('prom-client/lib/registry') as typeof PromClient.Registry;
const Counter = require('prom-client/lib/counter') as typeof PromClient.Counter;
const Gauge = require('prom-client/lib/gauge') as typeof PromClient.Gauge;
const Histogram = require('prom-client/lib/histogram') as typeof PromClient.Histogram;
type Registry = PromClient.Registry;
type Counter<T extends string> = PromClient.Counter<T>;
type Gauge<T extends string> = PromClient.Gauge<T>;
type Histogram<T extends string> = PromClient.Histogram<T>;

/** distinct recipient domains labelled by name; later ones become "other" */
export const DOMAIN_LABEL_LIMIT = 50;

export type ListenerRole = 'mx' | 'submission';

export interface QueueSnapshot {
  counts: Record<string, number>;
  oldestAgeSeconds: number;
}

export interface DeliverySnapshot {
  /** messages parked for a busy destination */
  waiting: number;
  /** destinations suspended now */
  suspended: number;
}

export class RelayMetrics {
  readonly registry = new Registry();
  private readonly knownDomains = new Set<string>();
  /** domains labelled by name that are not in the config */
  private extraDomains = 0;
  private readonly received: Counter<'role' | 'domain'>;
  private readonly outcomes: Counter<'outcome' | 'role' | 'domain'>;
  private readonly latency: Histogram<'outcome'>;
  private readonly inboundTls: Counter<'role' | 'tls'>;
  private readonly outboundTls: Counter<'tls'>;
  private readonly authFailures: Counter<'role'>;
  private readonly commandsRejected: Counter<'role' | 'command' | 'code'>;
  private readonly dnsblAnswers: Counter<'zone' | 'answer'>;
  private readonly connectionsTotal: Counter<'role'>;
  private readonly connectionsOpen: Gauge<'role'>;

  /**
   * `spoolFreeBytes` reads the free space of the spool's file system, and
   * `delivery` the scheduler's waiting and suspended counts, once per scrape.
   */
  constructor(config: RelayConfig, queueSnapshot: () => Promise<QueueSnapshot>, spoolFreeBytes?: () => number | undefined, delivery?: () => DeliverySnapshot) {
    this.knowDomainsOf(config);
    const registers = [this.registry];
    this.received = new Counter({ name: 'ownrelay_messages_received_total', help: 'messages accepted (250 after DATA), per recipient domain', labelNames: ['role', 'domain'], registers });
    this.outcomes = new Counter({
      name: 'ownrelay_recipients_total',
      help: 'delivery attempt results per recipient: delivered, deferred, bounced',
      labelNames: ['outcome', 'role', 'domain'],
      registers,
    });
    this.latency = new Histogram({
      name: 'ownrelay_delivery_latency_seconds',
      help: 'time from acceptance to the final outcome of a recipient (delivered or bounced)',
      labelNames: ['outcome'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 5 * 24 * 3600],
      registers,
    });
    this.inboundTls = new Counter({ name: 'ownrelay_inbound_messages_tls_total', help: 'accepted messages by whether the session was encrypted', labelNames: ['role', 'tls'], registers });
    this.outboundTls = new Counter({ name: 'ownrelay_outbound_sessions_total', help: 'outbound SMTP sessions opened, by whether they are encrypted', labelNames: ['tls'], registers });
    this.authFailures = new Counter({ name: 'ownrelay_auth_failures_total', help: 'failed SMTP AUTH attempts', labelNames: ['role'], registers });
    this.commandsRejected = new Counter({ name: 'ownrelay_commands_rejected_total', help: 'MAIL FROM and RCPT TO commands refused, by reply code', labelNames: ['role', 'command', 'code'], registers });
    this.dnsblAnswers = new Counter({ name: 'ownrelay_dnsbl_answers_total', help: 'answers of the DNS blocklists of inbound.dnsbl about clients: listed, clean, or unknown (the list could not be used)', labelNames: ['zone', 'answer'], registers });
    this.connectionsTotal = new Counter({ name: 'ownrelay_connections_total', help: 'SMTP connections accepted', labelNames: ['role'], registers });
    this.connectionsOpen = new Gauge({ name: 'ownrelay_connections_open', help: 'SMTP connections open now', labelNames: ['role'], registers });
    // one listing of the spool per scrape, shared by both gauges
    let pending: Promise<QueueSnapshot> | undefined;
    const snapshot = () => (pending ??= queueSnapshot().finally(() => setImmediate(() => (pending = undefined))));
    new Gauge({
      name: 'ownrelay_queue_messages',
      help: 'messages in the queue by state',
      labelNames: ['state'],
      registers,
      async collect() {
        const { counts } = await snapshot();
        for (const [state, count] of Object.entries(counts)) this.set({ state }, count);
      },
    });
    new Gauge({
      name: 'ownrelay_queue_oldest_message_age_seconds',
      help: 'age of the oldest message in the queue (0 when empty)',
      registers,
      async collect() {
        this.set((await snapshot()).oldestAgeSeconds);
      },
    });
    if (spoolFreeBytes) {
      new Gauge({
        name: 'ownrelay_spool_free_bytes',
        help: 'free space on the spool\'s file system; below limits.spoolMinFreeBytes new mail gets 452 4.3.1',
        registers,
        collect() {
          // a spool that cannot be looked at has no figure; the scrape goes on
          const free = spoolFreeBytes();
          if (free !== undefined) this.set(free);
        },
      });
    }
    if (delivery) {
      new Gauge({
        name: 'ownrelay_messages_waiting_for_slot',
        help: 'messages waiting, unclaimed, for a free slot at a destination that has delivery.maxPerDestination deliveries running',
        registers,
        collect() {
          this.set(delivery().waiting);
        },
      });
      new Gauge({
        name: 'ownrelay_destinations_suspended',
        help: 'destinations where nothing answered, whose mail is deferred without attempts until their suspension ends',
        registers,
        collect() {
          this.set(delivery().suspended);
        },
      });
    }
    for (const role of ['mx', 'submission']) {
      this.connectionsTotal.inc({ role }, 0);
      this.connectionsOpen.set({ role }, 0);
      this.authFailures.inc({ role }, 0);
    }
  }

  /** A reloaded config may name new domains and routes: they get labels of their own. */
  knowDomainsOf(config: RelayConfig): void {
    for (const domain of config.domains) this.knownDomains.add(domain.name.toLowerCase());
    for (const name of Object.keys(config.delivery.routes)) this.knownDomains.add(name.toLowerCase());
  }

  private domainLabel(address: string): string {
    const domain = domainOf(address);
    if (this.knownDomains.has(domain)) return domain;
    if (domain !== '' && this.extraDomains < DOMAIN_LABEL_LIMIT) {
      this.extraDomains++;
      this.knownDomains.add(domain);
      return domain;
    }
    return 'other';
  }

  connectionOpened(role: ListenerRole): void {
    this.connectionsTotal.inc({ role });
    this.connectionsOpen.inc({ role });
  }

  connectionClosed(role: ListenerRole): void {
    this.connectionsOpen.dec({ role });
  }

  authFailed(role: ListenerRole): void {
    this.authFailures.inc({ role });
  }

  commandRejected(role: ListenerRole, command: 'mail' | 'rcpt', code: number): void {
    this.commandsRejected.inc({ role, command, code: String(code) });
  }

  dnsblAnswer(zone: string, answer: 'listed' | 'clean' | 'unknown'): void {
    this.dnsblAnswers.inc({ zone, answer });
  }

  messageReceived(role: ListenerRole, recipients: readonly string[], secure: boolean): void {
    this.inboundTls.inc({ role, tls: secure ? 'yes' : 'no' });
    for (const address of recipients) this.received.inc({ role, domain: this.domainLabel(address) });
  }

  /** One recipient's attempt result; `receivedAt` gives the latency of final outcomes. */
  recipientOutcome(outcome: 'delivered' | 'deferred' | 'bounced', role: string, address: string, receivedAt: number): void {
    this.outcomes.inc({ outcome, role, domain: this.domainLabel(address) });
    if (outcome !== 'deferred') this.latency.observe({ outcome }, Math.max(0, Date.now() - receivedAt) / 1000);
  }

  outboundSession(secure: boolean): void {
    this.outboundTls.inc({ tls: secure ? 'yes' : 'no' });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}

/** The listener role recorded in an envelope ("submission:587" -> "submission"; bounces -> "bounce"). */
export function roleOfListener(listener: string): string {
  const role = listener.split(':')[0] ?? '';
  return role === 'mx' || role === 'submission' ? role : 'bounce';
}
