/**
 * Changing the queue on the administrator's behalf, inside the relay that owns
 * the spool and the scheduler, so nothing is lost or delivered twice:
 *
 * - a message being delivered is never moved or removed (the operation is refused
 *   with "being delivered; try again in a moment");
 * - otherwise the scheduler first forgets the entry (synchronously, so it cannot
 *   claim it meanwhile), then the file is renamed or removed, then the entry is
 *   handed back to the scheduler if it should be delivered;
 * - every change is one rename (or one unlink for delete) and writes a log line.
 *
 * hold: incoming/deferred -> hold/ (never delivered until released)
 * release: hold/ -> deferred/, due now;  retry: deferred/ -> due now;
 * flush: every deferred message due now;  delete: removed, with a log line.
 * Each action takes queue ids, or a filter (as `queue list` takes) that selects
 * the messages it applies to, plus those being delivered (reported as such).
 * retry, release and flush also lift the scheduler's suspension of unreachable
 * destinations, so the mail they make due is really tried.
 */
import { isQueueId } from '../queue/queue-id';
import type { Logger } from '../log/logger';
import type { Scheduler } from '../queue/scheduler';
import { QUEUE_STATES, type QueueEntry, type QueueState, type Spool } from '../queue/spool';
import { type QueueFilter, QueueView } from './queue-view';

export type QueueAction = 'hold' | 'release' | 'retry' | 'delete';

export interface ActionResult {
  id: string;
  ok: boolean;
  /** the state the message is in afterwards (absent after delete) */
  state?: QueueState;
  error?: string;
}

/** Which states each action applies to. */
const FROM_STATES: Record<QueueAction, readonly QueueState[]> = {
  hold: ['incoming', 'deferred'],
  release: ['hold'],
  retry: ['deferred'],
  delete: ['incoming', 'deferred', 'hold', 'corrupt'],
};

/** a message can move between the lookup and the rename (its delivery ended): look again this often */
const LOOKUP_ATTEMPTS = 3;

export class QueueControl {
  private readonly view: QueueView;

  constructor(
    private readonly spool: Spool,
    private readonly scheduler: Scheduler,
    private readonly logger: Logger,
  ) {
    this.view = new QueueView(spool.dir);
  }

  async apply(action: QueueAction, ids: readonly string[], by: string): Promise<ActionResult[]> {
    // "now" means now, also for mail to a destination that was found unreachable
    if (action === 'retry' || action === 'release') this.scheduler.resumeDestinations();
    // one listing for the whole batch; an entry that moved meanwhile is looked up again
    const known = await this.index();
    const results: ActionResult[] = [];
    for (const id of ids) results.push(await this.applyOne(action, id, by, true, known.get(id)));
    return results;
  }

  /**
   * Applies `action` to the messages `filter` selects: those in a state the action
   * applies to, and those being delivered (refused, so the administrator knows to
   * try again). An empty filter selects every such message.
   */
  async applyToMatching(action: QueueAction, filter: QueueFilter, by: string): Promise<ActionResult[]> {
    if (filter.state && filter.state !== 'active' && !FROM_STATES[action].includes(filter.state)) {
      throw new Error(`${action} applies to ${FROM_STATES[action].join(', ')} messages, not ${filter.state} ones`);
    }
    const states = filter.state ? [filter.state] : [...FROM_STATES[action], 'active' as const];
    const ids: string[] = [];
    for (const state of states) {
      for (const item of await this.view.list({ ...filter, state })) ids.push(item.id);
    }
    return this.apply(action, ids, by);
  }

  /** Makes every deferred message due now; returns how many. */
  async flush(by: string): Promise<number> {
    this.scheduler.resumeDestinations();
    let count = 0;
    for (const entry of await this.view.entries('deferred')) {
      const result = await this.applyOne('retry', entry.id, by, false, entry);
      if (result.ok) count++;
    }
    this.logger.info({ event: 'queue-flush', count, by }, `flush: ${count} deferred message(s) due now`);
    return count;
  }

  private async index(): Promise<Map<string, QueueEntry>> {
    const entries = new Map<string, QueueEntry>();
    for (const state of QUEUE_STATES) for (const entry of await this.view.entries(state)) entries.set(entry.id, entry);
    return entries;
  }

  private async applyOne(action: QueueAction, id: string, by: string, log: boolean, listed: QueueEntry | undefined): Promise<ActionResult> {
    if (!isQueueId(id)) return { id, ok: false, error: 'not a queue id (19 characters, 0-9 and A-Z)' };
    for (let attempt = 0; attempt < LOOKUP_ATTEMPTS; attempt++) {
      const entry = attempt === 0 && listed ? listed : await this.view.find(id);
      if (!entry) return { id, ok: false, error: 'not in the queue (delivered, bounced or deleted)' };
      // from here to the rename's start nothing awaits: the scheduler cannot claim it in between
      if (this.scheduler.isDelivering(id) || entry.state === 'active') return { id, ok: false, state: 'active', error: 'being delivered; try again in a moment' };
      if (!FROM_STATES[action].includes(entry.state)) return { id, ok: false, state: entry.state, error: `is ${entry.state}; ${action} applies to ${FROM_STATES[action].join(', ')} messages` };
      this.scheduler.withdraw(id);
      try {
        const state = await this.change(action, entry);
        if (log) {
          this.logger.info({ event: `queue-${action}`, queueId: id, from: entry.state, to: state ?? 'deleted', by }, `${action} ${id} (was ${entry.state}) by ${by}`);
        }
        return { id, ok: true, ...(state ? { state } : {}) };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // it moved meanwhile: look again
        // the file is where it was: give it back to the scheduler unchanged
        if (entry.state === 'incoming' || entry.state === 'deferred') this.scheduler.schedule(entry);
        return { id, ok: false, state: entry.state, error: String(err) };
      }
    }
    return { id, ok: false, error: 'the message kept moving; try again' };
  }

  private async change(action: QueueAction, entry: QueueEntry): Promise<QueueState | undefined> {
    switch (action) {
      case 'hold':
        await this.spool.move(entry, 'hold');
        return 'hold';
      case 'release':
      case 'retry': {
        const due = await this.spool.move(entry, 'deferred', Date.now());
        this.scheduler.schedule(due);
        return 'deferred';
      }
      case 'delete':
        await this.spool.remove(entry);
        return undefined;
    }
  }
}
