/**
 * How one incoming message is written into the spool, chunk by chunk, up to the
 * commit that makes it durable (the contract is on Spool, in spool.ts).
 */
import { rename, rm } from 'node:fs/promises';
import type { QueueEnvelope } from './envelope';
import { ownedBytes, type HeldBytes, type SlabLease } from './message-slabs';
import { encodeEnvelopeInPlace, encodeHeader } from './queue-file';
import { makeEntry, type QueueEntry } from './queue-entry';
import { RawFile } from './raw-file';
import type { Spool } from './spool';

/** room in the envelope of a message that may reach the disk before commit, for the `size` added there */
const SIZE_RESERVE_BYTES = 32;
/** the widest `size`: an envelope that fits with it fits with any real one */
const WIDEST_SIZE = Number.MAX_SAFE_INTEGER;

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
  /** the whole file, when it was written in one piece (see takeCommittedMessage) */
  private written?: Buffer;
  /**
   * The message so far, while it fits: each chunk is copied here as it arrives,
   * so the chunks die young (see message-slabs.ts). Taken by takeCommittedMessage.
   */
  private slab?: SlabLease;
  private slabBytes = 0;
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
    if (this.messageBytes === 0 && !this.file && this.spool.io.usable) this.slab ??= this.spool.io.slabs.acquire();
    if (this.slab) {
      if (this.slabBytes + chunk.length <= this.slab.bytes.length) {
        this.slabBytes += chunk.copy(this.slab.bytes, this.slabBytes);
        this.messageBytes += chunk.length;
        return;
      }
      this.spillSlab();
    }
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

  /** Moves the message so far out of its slab (into pending, in memory of its own) and gives the slab back. */
  private spillSlab(): void {
    const slab = this.slab;
    if (!slab) return;
    this.slab = undefined;
    const own = Buffer.allocUnsafeSlow(this.slabBytes);
    slab.bytes.copy(own, 0, 0, this.slabBytes);
    slab.release();
    this.slabBytes = 0;
    this.pending.push(own);
    this.pendingBytes += own.length;
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
   * The caller owns them and must release them (see HeldBytes); undefined (and
   * nothing to release) when they are not in memory or were already taken.
   */
  takeCommittedMessage(): HeldBytes | undefined {
    const { written, slab } = this;
    this.written = undefined;
    this.slab = undefined;
    if (slab) {
      if (this.committed) return { bytes: slab.bytes.subarray(0, this.slabBytes), release: () => slab.release() };
      slab.release();
      return undefined;
    }
    return this.committed && written && written.length === this.flushedBytes ? ownedBytes(written.subarray(this.headerBytes)) : undefined;
  }

  async commit(): Promise<QueueEntry> {
    if (this.finished) throw new Error('message already committed or aborted');
    // the caller's envelope gets the size too: it goes on to the first delivery attempt
    this.envelope.size = this.messageBytes;
    if (this.slab && this.spool.io.usable) return this.commitSlab(this.slab);
    this.spillSlab();
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

  /** The whole message is in its slab: one job for the group-commit thread, which writes the header and the slab. */
  private async commitSlab(slab: SlabLease): Promise<QueueEntry> {
    const header = encodeHeader(this.envelope);
    this.headerBytes = header.length;
    this.finished = true;
    try {
      await this.spool.io.commitSlab(this.tmpPath, this.spool.incomingPath(this.id), this.spool.stateDir('incoming'), header, slab, this.slabBytes);
    } catch (err) {
      this.slab = undefined;
      slab.release();
      throw err;
    }
    this.committed = true;
    return makeEntry(this.id, 'incoming');
  }

  async abort(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    this.slab?.release();
    this.slab = undefined;
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
