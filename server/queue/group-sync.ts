/**
 * Group commit for fsync. Durability is never weakened: every caller's promise
 * resolves only after an fsync that started *after* the caller's data was written
 * has completed. What is shared is the cost: callers that arrive while a sync of
 * the same directory is running wait for the next one, which then serves them
 * all (one directory fsync for many renames), and file syncs of concurrent
 * sessions run side by side so the filesystem can commit them in one journal
 * transaction.
 */
import { RawFile } from './raw-file';

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

class DirectorySync {
  private running = false;
  private waiting: Waiter[] = [];

  constructor(private readonly path: string) {}

  /** Resolves after an fsync of the directory that began after this call. */
  sync(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      if (!this.running) void this.run();
    });
  }

  private async run(): Promise<void> {
    this.running = true;
    while (this.waiting.length > 0) {
      const batch = this.waiting;
      this.waiting = [];
      try {
        const handle = await RawFile.open(this.path, 'r');
        try {
          await handle.sync();
        } finally {
          await handle.close();
        }
        for (const w of batch) w.resolve();
      } catch (err) {
        for (const w of batch) w.reject(err as Error);
      }
    }
    this.running = false;
  }
}

export class GroupSync {
  private readonly directories = new Map<string, DirectorySync>();

  /** Flushes a file's data and the metadata needed to read it back (size). */
  async syncFile(handle: RawFile): Promise<void> {
    await handle.datasync();
  }

  /** Makes renames and unlinks in `dir` durable. */
  syncDirectory(dir: string): Promise<void> {
    let sync = this.directories.get(dir);
    if (!sync) {
      sync = new DirectorySync(dir);
      this.directories.set(dir, sync);
    }
    return sync.sync();
  }
}
