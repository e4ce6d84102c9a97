/**
 * Long-lived memory for whole messages, from their first chunk to the end of
 * their first delivery attempt.
 *
 * Why: V8 counts ArrayBuffer memory that outlives young collections against the
 * old generation's limit, and frees it only in a full collection. A message's
 * bytes live through its fsync and its delivery, and the objects of the
 * delivery that sent them keep them reachable a while longer: at 100 KiB a
 * message, a buffer per message brought a full collection every fifty or so
 * messages, and their marking took about a quarter of the machine's CPU. A slab
 * is allocated once and reused, so it never counts again; received chunks are
 * copied into it as they arrive, so they die young.
 *
 * Slabs are SharedArrayBuffers, so the spool's thread can write a file straight
 * from one (each slab is shown to it once, when it is made).
 *
 * Contract:
 * - `acquire(length)` lends a free slab viewed as `length` bytes (the whole slab
 *   by default), or returns undefined when the length is over the slab size or
 *   MAX_SLABS are lent (the caller then uses memory of its own, as before).
 * - Whoever holds a lease calls `release()` once nothing reads the bytes any
 *   more; later calls do nothing. After it the slab may hold another message,
 *   so nothing may still read the bytes, nor be about to send them (a socket's
 *   write queue, say).
 * - A lease that is never released only makes the pool smaller, never wrong.
 */

/** the largest queue file (envelope and message) a slab holds */
export const SLAB_BYTES = 256 * 1024;
/** slabs at most: SLAB_BYTES times this is the most memory the pool takes */
export const MAX_SLABS = 128;

/** A message's bytes, with the duty to say when they are no longer read. */
export interface HeldBytes {
  readonly bytes: Buffer;
  /** Gives the memory back (if it was lent); idempotent. */
  release(): void;
}

/** Bytes of memory the holder owns: nothing to give back. */
export function ownedBytes(bytes: Buffer): HeldBytes {
  return { bytes, release: () => undefined };
}

export class SlabLease implements HeldBytes {
  private released = false;

  constructor(
    private readonly pool: MessageSlabs,
    /** the slab's number, as shown to the spool's thread */
    readonly slab: number,
    readonly bytes: Buffer,
  ) {}

  release(): void {
    if (this.released) return;
    this.released = true;
    this.pool.giveBack(this.slab);
  }
}

export class MessageSlabs {
  /** by slab number; a number whose slab was trimmed away is empty until it is made again */
  private readonly memory: Array<SharedArrayBuffer | undefined> = [];
  private readonly free: number[] = [];
  private readonly unusedNumbers: number[] = [];
  private made = 0;
  private lent = 0;
  /** the most slabs lent at once since the last trim */
  private mostLent = 0;

  constructor(
    /** called when a slab is made (with its memory, before it is lent) and when it is trimmed away (without) */
    private readonly show: (slab: number, memory: SharedArrayBuffer | undefined) => void = () => undefined,
    readonly slabBytes = SLAB_BYTES,
    readonly maxSlabs = MAX_SLABS,
  ) {}

  acquire(length = this.slabBytes): SlabLease | undefined {
    if (length > this.slabBytes) return undefined;
    let slab = this.free.pop();
    if (slab === undefined) {
      if (this.made >= this.maxSlabs) return undefined;
      slab = this.unusedNumbers.pop() ?? this.memory.length;
      this.memory[slab] = new SharedArrayBuffer(this.slabBytes);
      this.made++;
      this.show(slab, this.memory[slab]);
    }
    this.lent++;
    this.mostLent = Math.max(this.mostLent, this.lent);
    return new SlabLease(this, slab, Buffer.from(this.memory[slab]!, 0, length));
  }

  /** For SlabLease.release only. */
  giveBack(slab: number): void {
    this.lent--;
    this.free.push(slab);
  }

  /**
   * Frees the slabs beyond the most that were lent at once since the last trim,
   * so a relay that was busy once does not keep that memory while mail is quiet
   * (the spool's thread trims every minute). Returns how many were freed.
   */
  trim(): number {
    let freed = 0;
    while (this.made > this.mostLent && this.free.length > 0) {
      const slab = this.free.pop()!;
      this.memory[slab] = undefined;
      this.unusedNumbers.push(slab);
      this.made--;
      freed++;
      this.show(slab, undefined);
    }
    this.mostLent = this.lent;
    return freed;
  }

  /** Slabs made (and not trimmed) and slabs lent now. */
  get counts(): { made: number; lent: number } {
    return { made: this.made, lent: this.lent };
  }
}
