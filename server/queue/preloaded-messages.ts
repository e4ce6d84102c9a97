/**
 * Just-received messages kept in memory for their first delivery attempt, so it
 * need not read them back from the spool. Bounded: a message over
 * MAX_MESSAGE_BYTES, or one that would take the total over BUDGET_BYTES, is not
 * kept (its attempt reads the file, from the page cache). Each is taken once.
 *
 * Ownership: a message offered here is this store's to release (at once when it
 * is not kept, or by drop); one taken is the taker's.
 */
import type { HeldBytes } from './message-slabs';
import type { QueueFileInfo } from './queue-file';

/** A message handed over by the listener right after it was queued. */
export interface PreloadedMessage {
  info: QueueFileInfo;
  message: HeldBytes;
}

/** bytes of just-received messages kept in memory for their first attempt */
const BUDGET_BYTES = 4 * 1024 * 1024;
/** larger messages are read back from the spool (the page cache) instead */
const MAX_MESSAGE_BYTES = 256 * 1024;

export class PreloadedMessages {
  private readonly byId = new Map<string, PreloadedMessage>();
  private bytes = 0;

  /** Keeps `preloaded` for queue id `id` if it fits the bounds. */
  offer(id: string, preloaded: PreloadedMessage): void {
    const size = preloaded.message.bytes.length;
    if (size > MAX_MESSAGE_BYTES || this.bytes + size > BUDGET_BYTES || this.byId.has(id)) {
      preloaded.message.release();
      return;
    }
    this.byId.set(id, preloaded);
    this.bytes += size;
  }

  /** The envelope and offsets of a kept message, leaving it kept. */
  info(id: string): QueueFileInfo | undefined {
    return this.byId.get(id)?.info;
  }

  /** Removes and returns the kept message (undefined when none is kept). */
  take(id: string): PreloadedMessage | undefined {
    const preloaded = this.byId.get(id);
    if (preloaded) {
      this.byId.delete(id);
      this.bytes -= preloaded.message.bytes.length;
    }
    return preloaded;
  }

  /** Forgets the kept message, if any, and releases its bytes. */
  drop(id: string): void {
    this.take(id)?.message.release();
  }
}
