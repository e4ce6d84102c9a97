/** Lists what is on disk in a spool or Maildir, for assertions. */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

export async function filesIn(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** Counts of queue files per state directory. */
export async function spoolCounts(spoolDir: string): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const state of ['tmp', 'incoming', 'active', 'deferred', 'hold', 'corrupt']) counts[state] = (await filesIn(join(spoolDir, state))).length;
  return counts;
}

export async function waitFor<T>(probe: () => Promise<T | undefined | false>, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
