/**
 * Counting semaphores: a bounded active set, and one per destination so one slow
 * or dead destination cannot take every delivery slot.
 */
export class Semaphore {
  private inUse = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly limit: number) {}

  get active(): number {
    return this.inUse;
  }

  get queued(): number {
    return this.waiting.length;
  }

  async acquire(): Promise<void> {
    if (this.inUse < this.limit) {
      this.inUse++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.inUse--;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await task();
    } finally {
      this.release();
    }
  }
}

export class KeyedSemaphores {
  private readonly semaphores = new Map<string, Semaphore>();

  constructor(private readonly limit: number) {}

  /** Slots of `key` not taken now: a new task for it runs at once when this is above 0. */
  freeSlots(key: string): number {
    return Math.max(0, this.limit - (this.semaphores.get(key)?.active ?? 0));
  }

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    let semaphore = this.semaphores.get(key);
    if (!semaphore) {
      semaphore = new Semaphore(this.limit);
      this.semaphores.set(key, semaphore);
    }
    const current = semaphore;
    return current.run(task).finally(() => {
      if (current.active === 0 && current.queued === 0) this.semaphores.delete(key);
    });
  }
}
