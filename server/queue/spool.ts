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
import { CorruptQueueFile, encodeEnvelopeInPlace, encodeHeader, openMessage, readQueueFile, type QueueFileInfo } from './queue-file';
import { isQueueId } from './queue-id';

export const QUEUE_STATES = ['incoming', 'active', 'deferred', 'hold', 'corrupt'] as const;
export type QueueState = (typeof QUEUE_STATES)[number];

export interface QueueEntry {
  id: string;
  state: QueueState;
  /** deferred entries: when the next attempt is due (ms since epoch) */
  dueAt?: number;
  /** file name within the state directory */
  name: string;
}

/** room in the envelope of a message that may reach the disk before commit, for the `size` added there */
const SIZE_RESERVE_BYTES = 32;
/** the widest `size`: an envelope that fits with it fits with any real one */
const WIDEST_SIZE = Number.MAX_SAFE_INTEGER;

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
      return await writer.commit();
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

/**
 * Writes one incoming message; see the durability contract on Spool. Small
 * chunks are gathered in memory and written in large pieces, so a typical
 * message costs one write, one fsync and one rename. The envelope is encoded
 * once: at commit for a message that stays in memory (with its size), or at the
 * first flush to disk, with room for updateEnvelope and the size.
 */
export class MessageWriter {
  private static readonly FLUSH_BYTES = 256 * 1024;
  /** created by the first flush; a message that fits in memory never opens one here */
  private file?: RawFile;
  private finished = false;
  private committed = false;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private flushedBytes = 0;
  /** the queue-file header, once the file has been flushed to disk */
  private headerCopy?: Buffer;
  /** the whole file, when it was written in one piece (see committedMessage) */
  private written?: Buffer;
  /** bytes of the message so far (the envelope not counted) */
  messageBytes = 0;
  /** bytes of the queue-file header (the envelope) once it is encoded */
  headerBytes = 0;
  readonly id: string;

  constructor(
    private readonly spool: Spool,
    private readonly tmpPath: string,
    /** the envelope to write; commit() adds the message's size */
    private envelope: QueueEnvelope,
    private readonly reserveBytes: number,
  ) {
    this.id = envelope.id;
  }

  async writeChunk(chunk: Buffer): Promise<void> {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    this.messageBytes += chunk.length;
    if (this.pendingBytes >= MessageWriter.FLUSH_BYTES) await this.flush();
  }

  /** Puts the encoded header in front of the pending bytes (before anything is on disk). */
  private prependHeader(header: Buffer): void {
    this.pending.unshift(header);
    this.pendingBytes += header.length;
    this.headerBytes = header.length;
  }

  private takePending(owned = false): Buffer {
    const data = owned ? concatOwned(this.pending, this.pendingBytes) : this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    this.written = this.flushedBytes === 0 ? data : undefined;
    this.flushedBytes += data.length;
    this.pending = [];
    this.pendingBytes = 0;
    return data;
  }

  private async flush(): Promise<void> {
    if (this.pendingBytes === 0 && this.file) return;
    if (this.headerBytes === 0) {
      this.headerCopy = encodeHeader(this.envelope, this.reserveBytes + SIZE_RESERVE_BYTES);
      this.prependHeader(this.headerCopy);
    }
    const data = this.takePending();
    this.file ??= await RawFile.open(this.tmpPath, 'wx');
    await this.file.write(data);
  }

  /**
   * Replaces the envelope before commit. While the whole file is still in memory
   * it is simply kept; once part of the file is on disk, the new envelope must fit
   * in the room reserved by beginMessage (with room left for the size commit adds),
   * or this throws (and the file is unchanged).
   */
  async updateEnvelope(envelope: QueueEnvelope): Promise<void> {
    if (this.finished) throw new Error('message already committed or aborted');
    this.envelope = envelope;
    if (!this.file) return;
    // room must stay for the widest size commit may add
    if (!encodeEnvelopeInPlace(this.headerCopy!, { ...envelope, size: WIDEST_SIZE })) throw this.outgrown();
    await this.writeInPlace(envelope);
  }

  private async writeInPlace(envelope: QueueEnvelope): Promise<void> {
    const placed = encodeEnvelopeInPlace(this.headerCopy!, envelope);
    if (!placed) throw this.outgrown();
    await this.file!.writeAt(placed.json, placed.position);
  }

  private outgrown(): Error {
    return new Error(`envelope of ${this.id} outgrew the room reserved for it`);
  }

  /**
   * After commit: the message bytes as written, when the whole file was written in
   * one piece (messages under the flush size), so delivery need not read it back.
   */
  committedMessage(): Buffer | undefined {
    return this.committed && this.written && this.written.length === this.flushedBytes ? this.written.subarray(this.headerBytes) : undefined;
  }

  async commit(): Promise<QueueEntry> {
    if (this.finished) throw new Error('message already committed or aborted');
    // the caller's envelope gets the size too: it goes on to the first delivery attempt
    this.envelope.size = this.messageBytes;
    if (!this.file) {
      this.prependHeader(encodeHeader(this.envelope));
    } else {
      try {
        await this.writeInPlace(this.envelope);
      } catch (err) {
        await this.abort();
        throw err;
      }
    }
    this.finished = true;
    const incomingDir = this.spool.stateDir('incoming');
    if (!this.file && this.spool.io.usable) {
      // the whole message is in memory: one job for the group-commit thread
      this.written = await this.spool.io.commit(this.tmpPath, this.spool.incomingPath(this.id), incomingDir, this.takePending(true));
    } else {
      const sync = this.spool.groupSync();
      try {
        await this.flush();
        this.file ??= await RawFile.open(this.tmpPath, 'wx');
        await sync.syncFile(this.file);
        await this.file.close();
        await rename(this.tmpPath, this.spool.incomingPath(this.id));
      } catch (err) {
        await this.discard();
        throw err;
      }
      // if this fails the file is in incoming/ but may not survive a power cut: the
      // caller answers 451, and the sender's retry may create a duplicate, never a loss
      await sync.syncDirectory(incomingDir);
    }
    this.committed = true;
    return makeEntry(this.id, 'incoming');
  }

  async abort(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    await this.discard();
  }

  private async discard(): Promise<void> {
    await this.file?.close().catch(() => undefined);
    await rm(this.tmpPath, { force: true });
  }
}

/** Joins chunks into a buffer that owns its memory (not a slice of Node's shared pool), so it can be transferred. */
function concatOwned(chunks: Buffer[], totalBytes: number): Buffer {
  const out = Buffer.allocUnsafeSlow(totalBytes);
  let offset = 0;
  for (const chunk of chunks) offset += chunk.copy(out, offset);
  return out;
}

export function makeEntry(id: string, state: QueueState, dueAt?: number): QueueEntry {
  if (state === 'deferred') {
    const due = dueAt ?? Date.now();
    return { id, state, dueAt: due, name: `${due}.${id}` };
  }
  return { id, state, name: id };
}

/** Parses a file name of a state directory; undefined for names that are not queue files. */
export function parseEntryName(state: QueueState, name: string): QueueEntry | undefined {
  if (state === 'deferred') {
    const match = /^(\d{1,15})\.([0-9A-Z]{19})$/.exec(name);
    return match ? { id: match[2]!, state, dueAt: Number(match[1]), name } : undefined;
  }
  if (state === 'corrupt') {
    const id = name.split('.').find(isQueueId) ?? name;
    return { id, state, name };
  }
  return isQueueId(name) ? { id: name, state, name } : undefined;
}
