/**
 * Free space on the spool's file system, and the rule for taking new mail.
 *
 * A relay whose spool fills up can no longer record delivery attempts nor queue
 * bounces, so new mail is turned away early, at MAIL FROM, with 452 4.3.1 (RFC
 * 3463: mail system full; the client tries again later) while the file system
 * has less than `limits.spoolMinFreeBytes` plus the size the client declared
 * (SIZE=) left, like Postfix's queue_minfree. What still runs out of space while
 * it is written gets the same reply (see `isOutOfSpace`).
 *
 * The check is one statfs system call. Under load a measurement is reused for
 * up to `REUSE_MS`, but only while it showed at least `REUSE_HEADROOM_BYTES`
 * more than needed, more than the mail of that time could use up; nearer the
 * limit every MAIL FROM measures afresh.
 */
import { statfsSync } from 'node:fs';

export type RoomVerdict = { room: true } | { room: false; freeBytes: number; neededBytes: number };

/** Bytes an unprivileged process may still write on the file system of `dir`; undefined when it cannot be looked at. */
export function freeBytes(dir: string): number | undefined {
  try {
    const stats = statfsSync(dir);
    return stats.bavail * stats.bsize;
  } catch {
    return undefined;
  }
}

/** how long a measurement may be reused */
export const REUSE_MS = 1000;
/** how much more than needed a reused measurement must have shown */
export const REUSE_HEADROOM_BYTES = 256 * 1024 * 1024;

/** Decides whether new messages fit in one spool; `measure` is `freeBytes` except in tests. */
export class SpoolSpace {
  private last?: { at: number; free: number };

  constructor(
    private readonly dir: string,
    private readonly measure: (dir: string) => number | undefined = freeBytes,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whether a new message of `declaredBytes` (0 when the client declared none) may start. */
  roomForMessage(minFreeBytes: number, declaredBytes: number): RoomVerdict {
    if (minFreeBytes === 0 && declaredBytes === 0) return { room: true };
    const neededBytes = minFreeBytes + declaredBytes;
    const now = this.now();
    const last = this.last;
    if (last && now - last.at < REUSE_MS && now >= last.at && last.free - neededBytes >= REUSE_HEADROOM_BYTES) return { room: true };
    const free = this.measure(this.dir);
    this.last = free === undefined ? undefined : { at: now, free };
    // a spool that cannot even be looked at fails the message's own writes (451)
    if (free === undefined) return { room: true };
    return free >= neededBytes ? { room: true } : { room: false, freeBytes: free, neededBytes };
  }
}

/** True for the errors of a full file system or an exhausted quota. */
export function isOutOfSpace(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}
