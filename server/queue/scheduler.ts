/**
 * The scheduler: decides what is delivered when. New messages are tried at once,
 * deferred ones when their due time (in their file name) comes. At most
 * `delivery.maxActive` messages are in delivery at a time, and at most
 * `delivery.maxPerDestination` deliveries run against one destination.
 *
 * A message whose destinations have all their slots taken does not wait in the
 * active set: it is parked, unclaimed (the administrator can still hold or delete
 * it), and put back in line when that destination has a free slot, so a backlog
 * for one destination never delays mail for the others. At most 10 messages per
 * place in the active set wait so (their envelopes are kept in memory); beyond
 * that, due mail stays in line unread until one of them goes.
 *
 * A destination that could not be reached at all is suspended for
 * `delivery.retry.minBackoffMs` (suspended-destinations.ts): mail for it is
 * deferred at once meanwhile, without tying up delivery slots.
 *
 * Each attempt: read the queue file, park it or claim it (rename to active/),
 * deliver per route, record each recipient's result, queue a bounce for new
 * failures, then remove the message (nothing pending) or rewrite it into
 * deferred/ with its next due time (after queueing the one delay warning a
 * message gets, once it is overdue).
 *
 * Administration (hold, release, retry, delete, flush) goes through the relay's
 * queue control, which asks `isDelivering` and `withdraw`s an entry before it
 * renames or removes the file, and hands changed entries back with `schedule`:
 * an entry the scheduler has withdrawn is never claimed, and one being delivered
 * is never touched. hold/ is never listed here, so held mail stays held, also
 * across restarts.
 */
import { Readable } from 'node:stream';
import type { RelayConfig } from '../config/schema';
import { KeyedSemaphores } from '../delivery/limiter';
import { routeName, type Route, type RouteGroup, type Router } from '../delivery/router';
import type { RecipientResult } from '../delivery/types';
import type { Logger } from '../log/logger';
import { openWithAddedHeaders } from '../delivery/prefixed-message';
import { outboundDsn } from '../delivery/dsn-passing';
import { addedHeaders, pendingRecipients, type QueueEnvelope } from './envelope';
import { recordResults, type DeliveryObserver } from './attempt-record';
import { queueOwedBounce, queueOwedSuccessNotice, warnIfDelayed, type NoticeDeps } from './owed-notices';
import { PreloadedMessages, type PreloadedMessage } from './preloaded-messages';
import { retryPlan } from './retry-schedule';
import { SuspendedDestinations, type SuspendedDestination } from './suspended-destinations';
import type { QueueEntry, Spool } from './spool';
import type { QueueFileInfo } from './queue-file';

const RESCAN_INTERVAL_MS = 60_000;
/** messages parked for busy destinations, per place in the active set: bounds the envelopes held in memory */
const WAITING_PER_ACTIVE_SLOT = 10;

export interface SchedulerDeps {
  spool: Spool;
  router: Router;
  config: RelayConfig;
  logger: Logger;
  observer?: DeliveryObserver;
}

export class Scheduler {
  private readonly ready: QueueEntry[] = [];
  /** deferred entries sorted by due time */
  private readonly due: QueueEntry[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  /** queue ids of the messages in delivery now (claimed, not yet finished) */
  private readonly delivering = new Set<string>();
  /** first attempts can skip reading the file back */
  private readonly preloaded = new PreloadedMessages();
  private readonly destinations: KeyedSemaphores;
  /** messages waiting, unclaimed, for a busy destination (by route key), and what was read of them */
  private readonly parked = new Map<string, QueueEntry[]>();
  private readonly parkedInfo = new Map<string, QueueFileInfo>();
  /** entries in `parked`, at most WAITING_PER_ACTIVE_SLOT x maxActive: beyond, due mail stays unread in line */
  private parkedCount = 0;
  /** ids taken out of `parked` and not yet started: they keep their place if they must wait again */
  private readonly woken = new Set<string>();
  /** destinations found unreachable, whose mail waits without attempts for a while */
  private readonly suspended = new SuspendedDestinations();
  private stopping = false;
  private wakeTimer?: NodeJS.Timeout;
  private rescanTimer?: NodeJS.Timeout;

  constructor(private readonly deps: SchedulerDeps) {
    this.destinations = new KeyedSemaphores(deps.config.delivery.maxPerDestination);
  }

  /** Loads the queue (after Spool.recover) and starts delivering. */
  async start(): Promise<void> {
    this.ready.push(...(await this.deps.spool.list('incoming')).sort(byId));
    await this.rescanDeferred();
    this.rescanTimer = setInterval(() => void this.rescanDeferred().catch(() => undefined), RESCAN_INTERVAL_MS);
    this.rescanTimer.unref();
    this.pump();
  }

  /** A message was just queued: try it now (or as soon as a slot is free). */
  enqueue(entry: QueueEntry, preloaded?: PreloadedMessage): void {
    if (preloaded) this.preloaded.offer(entry.id, preloaded);
    this.ready.push(entry);
    this.pump();
  }

  /** Stops taking work and waits for running deliveries, at most `timeoutMs`. */
  async stop(timeoutMs: number): Promise<void> {
    this.stopping = true;
    clearTimeout(this.wakeTimer);
    clearInterval(this.rescanTimer);
    const finished = Promise.allSettled([...this.inFlight]);
    await Promise.race([finished, new Promise((resolve) => setTimeout(resolve, timeoutMs).unref())]);
  }

  get activeCount(): number {
    return this.inFlight.size;
  }

  /** Messages parked until a busy destination has a free slot. */
  get waitingCount(): number {
    return this.parkedCount;
  }

  /** Destinations suspended now because nothing answered there. */
  suspendedDestinations(): SuspendedDestination[] {
    return this.suspended.list();
  }

  /** True while the message is being delivered: administration must not move or remove it then. */
  isDelivering(id: string): boolean {
    return this.delivering.has(id);
  }

  /**
   * Forgets a queued (not delivering) message, so it is not claimed while the
   * administrator moves or removes its file. Synchronous: nothing can claim it in between.
   */
  withdraw(id: string): void {
    if (this.delivering.has(id)) throw new Error(`${id} is being delivered`);
    for (let i = this.ready.length - 1; i >= 0; i--) if (this.ready[i]!.id === id) this.ready.splice(i, 1);
    for (let i = this.due.length - 1; i >= 0; i--) if (this.due[i]!.id === id) this.due.splice(i, 1);
    for (const [key, waiting] of this.parked) {
      const at = waiting.findIndex((e) => e.id === id);
      if (at >= 0) {
        waiting.splice(at, 1);
        this.parkedCount--;
      }
      if (waiting.length === 0) this.parked.delete(key);
    }
    this.parkedInfo.delete(id);
    this.woken.delete(id);
    this.preloaded.drop(id);
  }

  /** Takes back an entry the administrator made due (deferred/ with a due time, or incoming/). */
  schedule(entry: QueueEntry): void {
    if (entry.state === 'incoming') this.ready.push(entry);
    else if (entry.state === 'deferred' && !this.due.some((e) => e.name === entry.name)) this.addDue(entry);
    this.pump();
  }

  /** Applies a reloaded config and its router: routes, retry schedule and maxActive take effect at once. */
  updateConfig(config: RelayConfig, router: Router): void {
    this.deps.config = config;
    this.deps.router = router;
    // routes may have changed: what waited for one destination may now go elsewhere
    this.wakeAllParked();
    this.pump();
  }

  private pump(): void {
    if (this.parked.size > 0) this.wakeParked();
    const { maxActive } = this.deps.config.delivery;
    while (!this.stopping && this.inFlight.size < maxActive && this.parkedCount < maxActive * WAITING_PER_ACTIVE_SLOT) {
      const entry = this.ready.shift() ?? this.takeDue();
      if (!entry) break;
      this.delivering.add(entry.id);
      const task: Promise<void> = this.attempt(entry)
        .catch((err: unknown) => this.deps.logger.error({ event: 'scheduler-error', queueId: entry.id, err: String(err) }, 'delivery attempt failed unexpectedly'))
        .finally(() => {
          this.delivering.delete(entry.id);
          this.inFlight.delete(task);
          this.pump();
        });
      this.inFlight.add(task);
    }
    this.armWakeTimer();
  }

  private takeDue(): QueueEntry | undefined {
    const first = this.due[0];
    if (first && (first.dueAt ?? 0) <= Date.now()) return this.due.shift();
    return undefined;
  }

  private armWakeTimer(): void {
    clearTimeout(this.wakeTimer);
    const first = this.due[0];
    if (!first || this.stopping) return;
    const waitMs = Math.min(Math.max((first.dueAt ?? 0) - Date.now(), 0) + 5, RESCAN_INTERVAL_MS);
    this.wakeTimer = setTimeout(() => this.pump(), waitMs);
    this.wakeTimer.unref();
  }

  private addDue(entry: QueueEntry): void {
    const dueAt = entry.dueAt ?? 0;
    let low = 0;
    let high = this.due.length;
    while (low < high) {
      const mid = (low + high) >> 1;
      if ((this.due[mid]!.dueAt ?? 0) <= dueAt) low = mid + 1;
      else high = mid;
    }
    this.due.splice(low, 0, entry);
  }

  /** Picks up deferred files the scheduler does not know yet (e.g. moved there by an administrator). */
  private async rescanDeferred(): Promise<void> {
    const known = new Set([...this.due, ...this.ready, ...[...this.parked.values()].flat()].map((e) => e.name));
    for (const entry of await this.deps.spool.list('deferred')) if (!known.has(entry.name)) this.addDue(entry);
    this.pump();
  }

  private async attempt(entry: QueueEntry): Promise<void> {
    const { spool, logger } = this.deps;
    // read before the claim, so a message for a busy destination can wait unclaimed
    let info: QueueFileInfo;
    try {
      info = this.takeParkedInfo(entry.id) ?? this.preloaded.info(entry.id) ?? (await spool.read(entry));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // removed or moved meanwhile
      this.preloaded.drop(entry.id);
      if (spool.isCorruptError(err)) return spool.quarantine(entry, err.message);
      logger.error({ event: 'spool-read-error', queueId: entry.id, err: String(err) }, 'cannot read queue file; retrying later');
      this.addDue(await spool.move(entry, 'deferred', Date.now() + this.deps.config.delivery.retry.minBackoffMs));
      return;
    }
    // aliases changed since the message was queued apply to its pending recipients; the
    // envelope written after this attempt keeps the expanded recipients
    if (spool.recipientExpander) info.envelope.recipients = spool.recipientExpander(info.envelope.recipients);
    const groups = this.deps.router.group(pendingRecipients(info.envelope).map((r) => r.address));
    const busy = this.busyDestination(groups);
    if (busy !== undefined) return this.park(busy, entry, info);
    this.woken.delete(entry.id);
    const preloaded = this.preloaded.take(entry.id);
    let active: QueueEntry;
    try {
      // a message handed over in memory right after it was queued is delivered from
      // incoming/ without a rename: both directories are retried after a crash alike
      active = preloaded ? entry : await spool.move(entry, 'active');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // removed or moved meanwhile
      throw err;
    }
    const envelope = info.envelope;
    envelope.attempts++;
    try {
      // the bytes may be reused from here on (see deliverAll)
      const results = await this.deliverAll(active, info, groups, preloaded?.message.bytes).finally(() => preloaded?.message.release());
      recordResults(envelope, results, info.size, this.deps.logger, this.deps.observer);
      await this.finish(active, info, envelope);
    } catch (err) {
      await this.putBack(active, err);
    }
  }

  /**
   * After an attempt failed in a way nobody handled (a spool that cannot be
   * written, say), the message goes back to deferred/ unchanged, so it is tried
   * again instead of sitting in active/ until the next start.
   */
  private async putBack(active: QueueEntry, cause: unknown): Promise<void> {
    const { spool, logger, config } = this.deps;
    const dueAt = Date.now() + config.delivery.retry.minBackoffMs;
    try {
      this.addDue(await spool.move(active, 'deferred', dueAt));
      logger.error({ event: 'scheduler-error', queueId: active.id, err: String(cause), retryAt: new Date(dueAt).toISOString() }, `delivery attempt of ${active.id} failed unexpectedly; it is tried again later`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // already removed or moved on
      logger.error(
        { event: 'scheduler-error', queueId: active.id, err: String(cause), moveError: String(err), stranded: true },
        `delivery attempt of ${active.id} failed unexpectedly, and its queue file cannot be moved back to deferred/; it is tried again after the next start`,
      );
    }
  }

  /**
   * The route key to wait for when every destination of the message's pending
   * recipients has all its delivery slots taken (undefined when one has room, is
   * suspended, or there is none): such a message would only hold a place in the
   * active set that mail for other destinations could use.
   */
  private busyDestination(groups: readonly RouteGroup[]): string | undefined {
    if (groups.length === 0) return undefined;
    for (const group of groups) {
      const key = group.route.key;
      if (this.destinations.freeSlots(key) > 0 || this.suspended.current(key)) return undefined;
    }
    return groups[0]!.route.key;
  }

  /**
   * Sets a message aside, unclaimed (its file stays where it is, and the
   * administrator can still hold or delete it), until `key` has a free slot
   * (see wakeParked). One woken before keeps its place at the front.
   */
  private park(key: string, entry: QueueEntry, info: QueueFileInfo): void {
    const waiting = this.parked.get(key) ?? [];
    if (this.woken.delete(entry.id)) waiting.unshift(entry);
    else waiting.push(entry);
    this.parked.set(key, waiting);
    this.parkedInfo.set(entry.id, info);
    this.parkedCount++;
  }

  /**
   * Puts waiting messages back in line, first come first, as many per
   * destination as it has free slots. Run by every pump, so no free slot is
   * left unused while mail waits for it (a message woken twice just waits again).
   */
  private wakeParked(): void {
    for (const [key, waiting] of this.parked) {
      const free = this.destinations.freeSlots(key);
      if (free === 0) continue;
      const woken = waiting.splice(0, free);
      this.parkedCount -= woken.length;
      if (waiting.length === 0) this.parked.delete(key);
      for (const entry of woken) this.woken.add(entry.id);
      this.ready.unshift(...woken);
    }
  }

  /** Puts every waiting message back in line; each looks at its destinations again. */
  private wakeAllParked(): void {
    const waiting = [...this.parked.values()].flat();
    this.parked.clear();
    this.parkedCount = 0;
    for (const entry of waiting) this.woken.add(entry.id);
    this.ready.unshift(...waiting);
  }

  private takeParkedInfo(id: string): QueueFileInfo | undefined {
    const info = this.parkedInfo.get(id);
    this.parkedInfo.delete(id);
    return info;
  }

  /**
   * Delivers to each group of the message's pending recipients (as routed by the
   * attempt). `message`, the bytes kept from its receipt, may hold another message
   * once this resolves: every transport is done with what it read by the time its
   * delivery resolves (the SMTP transport drops a socket that still holds unsent
   * bytes; Maildir delivery has finished its writes).
   */
  private async deliverAll(entry: QueueEntry, info: QueueFileInfo, groups: readonly RouteGroup[], message?: Buffer): Promise<RecipientResult[]> {
    const { router, spool } = this.deps;
    const envelope = info.envelope;
    const added = addedHeaders(envelope);
    const openQueued = (): Readable => (message ? Readable.from([message]) : spool.openMessage(entry, info));
    const dsn = outboundDsn(envelope);
    const perGroup = await Promise.all(
      groups.map((group) => {
        // mail for a suspended destination does not queue for its slots at all
        const early = this.suspendedReply(group.route);
        if (early !== undefined) return group.recipients.map((address): RecipientResult => ({ address, outcome: 'deferred', reply: early }));
        return this.destinations
          .run(group.route.key, async () => {
            // again once a slot is ours: the attempts ahead may just have found the destination down
            const suspended = this.suspendedReply(group.route);
            if (suspended !== undefined) return group.recipients.map((address): RecipientResult => ({ address, outcome: 'deferred', reply: suspended }));
            const results = await router.deliver(group.route, {
              from: envelope.from,
              recipients: group.recipients,
              size: info.size + (added?.length ?? 0),
              open: added ? openWithAddedHeaders(added, openQueued) : openQueued,
              queueId: envelope.id,
              receivedAt: envelope.receivedAt,
              ...(dsn ? { dsn } : {}),
              ...(envelope.tlsReport ? { tlsReport: true } : {}),
            });
            this.learnReachability(group.route, results);
            return results;
          })
          .finally(() => {
            // a slot of this destination is free now: mail waiting for it may go
            if (this.parked.size > 0) this.pump();
          })
          .catch((err: unknown): RecipientResult[] =>
            // a transport must not throw; if one does, nothing is known: defer
            group.recipients.map((address) => ({ address, outcome: 'deferred', reply: `451 4.3.0 local delivery error: ${String(err)}` })),
          );
      }),
    );
    return perGroup.flat();
  }

  /** The deferral reply for mail to a suspended destination; undefined when it may be tried. */
  private suspendedReply(route: Route): string | undefined {
    if (route.kind === 'maildir') return undefined;
    const suspension = this.suspended.current(route.key);
    return suspension && `delivery to ${routeName(route)} suspended until ${new Date(suspension.until).toISOString()} after: ${suspension.reason}`;
  }

  private learnReachability(route: Route, results: RecipientResult[]): void {
    if (route.kind === 'maildir') return;
    const { logger, config } = this.deps;
    const change = this.suspended.record(route.key, results, config.delivery.retry.minBackoffMs, Date.now(), routeName(route));
    if (change === 'suspended') {
      const until = new Date(this.suspended.current(route.key)!.until).toISOString();
      logger.warn({ event: 'destination-suspended', destination: routeName(route), until, reason: results[0]?.reply }, `${routeName(route)} is unreachable; its mail waits until ${until} without new attempts`);
    } else if (change === 'lifted') {
      logger.info({ event: 'destination-resumed', destination: routeName(route) }, `${routeName(route)} is reachable again`);
    }
  }

  /** What the owed notices need, read from the running config. */
  private get notices(): NoticeDeps {
    const { spool, config, logger } = this.deps;
    return { spool, config, logger, enqueue: (entry) => this.enqueue(entry) };
  }

  /** Lets suspended destinations be tried at once (the administrator's retry or flush). */
  resumeDestinations(): void {
    this.suspended.clear();
    this.wakeAllParked();
    this.pump();
  }

  private async finish(entry: QueueEntry, info: QueueFileInfo, envelope: QueueEnvelope): Promise<void> {
    const { spool, config, logger } = this.deps;
    const now = Date.now();
    let pending = pendingRecipients(envelope);
    const plan = pending.length > 0 ? retryPlan({ attemptsMade: envelope.attempts, receivedAt: envelope.receivedAt, now, retry: config.delivery.retry }) : undefined;
    if (plan?.action === 'expire') {
      for (const r of pending) {
        r.status = 'failed';
        r.reply = `delivery time expired after ${envelope.attempts} attempts; last error: ${r.reply ?? 'none'}`;
        this.deps.observer?.recipientResult(envelope, { address: r.address, outcome: 'failed', reply: r.reply });
      }
      pending = [];
    }
    const noticesQueued = (await queueOwedBounce(this.notices, entry, info, envelope)) && (await queueOwedSuccessNotice(this.notices, entry, info, envelope));
    if (pending.length === 0 && noticesQueued) {
      await spool.remove(entry);
      return;
    }
    if (pending.length > 0) await warnIfDelayed(this.notices, entry, info, envelope, pending, now);
    const dueAt = plan?.action === 'retry' ? plan.retryAtMs : now + config.delivery.retry.minBackoffMs;
    try {
      this.addDue(await spool.rewrite(entry, info, envelope, 'deferred', dueAt));
    } catch (err) {
      logger.error({ event: 'spool-write-error', queueId: envelope.id, err: String(err) }, 'cannot record the delivery attempt; deferring the message unchanged');
      this.addDue(await spool.move(entry, 'deferred', dueAt));
    }
    logger.info({ event: 'queued-for-retry', queueId: envelope.id, pending: pending.map((r) => r.address), retryAt: new Date(dueAt).toISOString(), attempts: envelope.attempts }, `${envelope.id} will be retried at ${new Date(dueAt).toISOString()}`);
  }
}

function byId(a: QueueEntry, b: QueueEntry): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}
