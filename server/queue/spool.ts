/**
 * The spool: the only writer of the queue directory.
 *
 *   <dir>/tmp/               files being received (never got a 250; removed at start)
 *   <dir>/incoming/<id>      accepted, waiting for (or in) its first delivery attempt
 *   <dir>/active/<id>        being retried now (back to incoming/ after a crash)
 *   <dir>/deferred/<due>.<id> waiting for a retry at <due> (ms since epoch), so the
 *                            scheduler reads the schedule from a directory listing
 *   <dir>/hold/<id>          kept aside by the administrator, never delivered
 *   <dir>/corrupt/<id>.<ms>  files that could not be read; kept for inspection
 *
 * Durability contract: `MessageWriter.commit()` resolves only after the file's
 * data is fsynced, it is renamed into incoming/ and incoming/ is fsynced. Later
 * state changes are single renames, atomic on POSIX filesystems; losing one in a
 * crash only repeats a delivery attempt (at least once, never zero).
 */
import { mkdir, readdir, rename, rm, unlink } from 'node:fs/promises';
import { RawFile } from './raw-file';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { Logger } from '../log/logger';
import type { QueueEnvelope, RecipientState } from './envelope';
import { GroupSync } from './group-sync';
import { SpoolIoThread } from './spool-io-thread';
import { SpoolSpace } from './spool-space';
import { CorruptQueueFile, encodeHeader, openMessage, readQueueFile, type QueueFileInfo } from './queue-file';
import { MessageWriter } from './message-writer';
import { QUEUE_STATES, makeEntry, parseEntryName, type QueueEntry, type QueueState } from './queue-entry';

export { MessageWriter } from './message-writer';
export { QUEUE_STATES, makeEntry, parseEntryName, type QueueEntry, type QueueState } from './queue-entry';

export class Spool {
  private readonly sync = new GroupSync();
  /** @internal group commit of whole small files, used by MessageWriter */
  readonly io = new SpoolIoThread();
  /** free space on the spool's file system, for taking new mail */
  readonly space: SpoolSpace;
  /**
   * Applied to the recipients of every new message (received or written by the
   * relay) before its queue file is started (see beginMessage), and by the
   * scheduler to a message's recipients before each delivery attempt. The relay
   * sets it while its config has alias lists or forwards (expandAliases).
   */
  recipientExpander?: (recipients: RecipientState[]) => RecipientState[];
  /** each state directory's path (and tmp/'s), joined once: every message's paths start with one */
  private readonly dirs: Readonly<Record<QueueState | 'tmp', string>>;

  private constructor(
    readonly dir: string,
    private readonly logger: Logger,
  ) {
    this.space = new SpoolSpace(dir);
    this.dirs = Object.fromEntries(['tmp', ...QUEUE_STATES].map((sub) => [sub, join(dir, sub)])) as Record<QueueState | 'tmp', string>;
  }

  static async open(dir: string, logger: Logger): Promise<Spool> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    for (const sub of ['tmp', ...QUEUE_STATES]) await mkdir(join(dir, sub), { recursive: true, mode: 0o700 });
    return new Spool(dir, logger);
  }

  pathOf(entry: QueueEntry): string {
    return `${this.dirs[entry.state]}/${entry.name}`;
  }

  /**
   * Starts a queue file; nothing is visible in the queue until commit().
   * `reserveBytes` leaves room in the envelope for MessageWriter.updateEnvelope
   * to add to it after the message is written. `envelope.recipients` is replaced
   * by what recipientExpander makes of it, if one is set.
   */
  async beginMessage(envelope: QueueEnvelope, reserveBytes = 0): Promise<MessageWriter> {
    if (this.recipientExpander) envelope.recipients = this.recipientExpander(envelope.recipients);
    return new MessageWriter(this, `${this.dirs.tmp}/${envelope.id}`, envelope, reserveBytes);
  }

  /** Queues a complete message (e.g. a bounce) durably. */
  async enqueue(envelope: QueueEnvelope, message: Buffer): Promise<QueueEntry> {
    const writer = await this.beginMessage(envelope);
    try {
      await writer.writeChunk(message);
      const entry = await writer.commit();
      // its first attempt reads the file: the memory it was written from goes back
      writer.takeCommittedMessage()?.release();
      return entry;
    } catch (err) {
      await writer.abort();
      throw err;
    }
  }

  /** Lists a state directory; names that are not queue files are ignored (and logged). */
  async list(state: QueueState): Promise<QueueEntry[]> {
    const names = await readdir(join(this.dir, state));
    const entries: QueueEntry[] = [];
    for (const name of names) {
      const entry = parseEntryName(state, name);
      if (entry) entries.push(entry);
      else if (state !== 'corrupt') this.logger.warn({ event: 'spool-unknown-file', state, name }, 'ignoring a file that is not a queue file');
    }
    return entries;
  }

  read(entry: QueueEntry): Promise<QueueFileInfo> {
    return readQueueFile(this.pathOf(entry));
  }

  openMessage(entry: QueueEntry, info: QueueFileInfo): Readable {
    return openMessage(this.pathOf(entry), info.bodyOffset);
  }

  /** Moves an entry to another state by rename; returns the new entry. */
  async move(entry: QueueEntry, state: QueueState, dueAt?: number): Promise<QueueEntry> {
    const next = makeEntry(entry.id, state, dueAt);
    await rename(this.pathOf(entry), this.pathOf(next));
    return next;
  }

  /**
   * Replaces the envelope of an entry (e.g. after some recipients were delivered)
   * and moves it to `state`. The new file is fsynced before it replaces the old one,
   * so a crash leaves either the old or the new version, never a torn one.
   */
  async rewrite(entry: QueueEntry, info: QueueFileInfo, envelope: QueueEnvelope, state: QueueState, dueAt?: number): Promise<QueueEntry> {
    const tmpPath = join(this.dir, 'tmp', `${entry.id}.rewrite`);
    const handle = await RawFile.open(tmpPath, 'w');
    try {
      await handle.write(encodeHeader(envelope));
      for await (const chunk of this.openMessage(entry, info)) await handle.write(chunk as Buffer);
      await this.sync.syncFile(handle);
    } catch (err) {
      await handle.close().catch(() => undefined);
      await rm(tmpPath, { force: true });
      throw err;
    }
    await handle.close();
    await rename(tmpPath, this.pathOf(entry));
    return state === entry.state && dueAt === entry.dueAt ? entry : this.move(entry, state, dueAt);
  }

  /** Removes a finished entry (all recipients delivered or bounced). */
  async remove(entry: QueueEntry): Promise<void> {
    if (this.io.usable) await this.io.unlink(this.pathOf(entry));
    else await unlink(this.pathOf(entry));
  }

  /** Stops the spool's I/O thread; call after the last write. */
  async close(): Promise<void> {
    await this.io.close();
  }

  /** Moves an unreadable file to corrupt/ so it is kept for inspection and never retried. */
  async quarantine(entry: QueueEntry, reason: string): Promise<void> {
    const target = join(this.dir, 'corrupt', `${entry.name}.${Date.now()}`);
    try {
      await rename(this.pathOf(entry), target);
      this.logger.error({ event: 'corrupt', queueId: entry.id, state: entry.state, movedTo: target, reason }, 'queue file could not be read; moved to corrupt/');
    } catch (err) {
      this.logger.error({ event: 'corrupt', queueId: entry.id, state: entry.state, reason, err: String(err) }, 'queue file could not be read nor moved');
    }
  }

  /**
   * Run once at start, before listening: removes half-received files (they never
   * got a 250) and puts messages that were being delivered back into incoming/.
   */
  async recover(): Promise<{ removedPartial: number; requeued: number }> {
    const partial = await readdir(join(this.dir, 'tmp'));
    for (const name of partial) await rm(join(this.dir, 'tmp', name), { force: true });
    const active = await this.list('active');
    for (const entry of active) await this.move(entry, 'incoming');
    if (active.length > 0) await this.sync.syncDirectory(join(this.dir, 'incoming'));
    return { removedPartial: partial.length, requeued: active.length };
  }

  /** @internal used by MessageWriter */
  groupSync(): GroupSync {
    return this.sync;
  }

  /** @internal used by MessageWriter */
  incomingPath(id: string): string {
    return `${this.dirs.incoming}/${id}`;
  }

  /** @internal used by MessageWriter */
  stateDir(state: QueueState): string {
    return this.dirs[state];
  }

  isCorruptError(err: unknown): err is CorruptQueueFile {
    return err instanceof CorruptQueueFile;
  }
}
