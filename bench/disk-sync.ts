/**
 * How fast the disk under the spool makes writes durable, measured the way the
 * relay's goals were calibrated: one process, one operation after the other.
 *
 * - newFilesPerSecond: create a file, write 1 KiB, fsync it, close it (what an MTA
 *   that fsyncs each queue file pays per message, before any grouping; the files
 *   stay until the end, as queue files do while they wait for delivery);
 * - appendsPerSecond: append 1 KiB to one open file and fdatasync it.
 *
 * Contract: works in a directory of its own below `dir`, which it removes again,
 * also when an operation fails (the error is thrown).
 */
import { closeSync, fdatasyncSync, fsyncSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export interface DiskSyncRates {
  newFilesPerSecond: number;
  appendsPerSecond: number;
}

/** Measures each operation for `durationMs` of wall time (default 2 s each). */
export function measureDiskSync(dir: string, durationMs = 2000): DiskSyncRates {
  const work = mkdtempSync(join(dir, 'disk-sync-'));
  try {
    const block = Buffer.alloc(1024, 'x');
    return {
      newFilesPerSecond: perSecond(durationMs, (i) => {
        const file = join(work, `f${i}`);
        const fd = openSync(file, 'w');
        try {
          writeSync(fd, block);
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
      }),
      appendsPerSecond: withOpenFile(join(work, 'append'), (fd) =>
        perSecond(durationMs, () => {
          writeSync(fd, block);
          fdatasyncSync(fd);
        }),
      ),
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function perSecond(durationMs: number, operation: (i: number) => void): number {
  const start = process.hrtime.bigint();
  const end = start + BigInt(durationMs) * 1_000_000n;
  let count = 0;
  let now = start;
  while (now < end) {
    operation(count++);
    now = process.hrtime.bigint();
  }
  return count / (Number(now - start) / 1e9);
}

function withOpenFile<T>(file: string, use: (fd: number) => T): T {
  const fd = openSync(file, 'a');
  try {
    return use(fd);
  } finally {
    closeSync(fd);
  }
}
