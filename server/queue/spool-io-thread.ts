/**
 * Group commit on a thread of its own. New queue files that fit in memory are
 * handed to this thread whole; it takes every job that arrived since its last
 * round and, for the whole batch: creates and writes the files in tmp/, fdatasyncs
 * them all at once (in parallel, so the filesystem commits them in one journal
 * transaction), renames each into its state directory, then fsyncs each directory
 * once, and only then reports the batch as done.
 *
 * Contract: `commit()` resolves only after the file's data and its rename are
 * durable (the same order as the spool's own path: write, fsync, rename, fsync
 * the directory); it rejects, with the temporary file removed, if any step fails.
 * The event loop of the relay posts one message per turn of its loop (every job
 * of that turn) and receives one per round.
 *
 * A file's bytes reach the thread either in a slab of `slabs` (shared memory the
 * thread was shown once: nothing moves) or in a buffer of their own, which moves
 * to the thread and back without a copy.
 */
import { Worker } from 'node:worker_threads';
import { MessageSlabs, type SlabLease } from './message-slabs';

/** how often slabs that a busy time made and a quieter one does not use are freed */
const SLAB_TRIM_INTERVAL_MS = 60_000;

interface Job {
  resolve: (data?: Uint8Array) => void;
  reject: (err: Error) => void;
}

/** `code` is the failed system call's error code (e.g. ENOSPC), when it had one. */
type Reply = { seq: number; error?: string; code?: string; data?: Uint8Array };

/**
 * The thread's program: plain JavaScript run with `eval`, so it works the same
 * from the TypeScript sources and from the single-file bundle. It uses only node:fs.
 */
const THREAD_SOURCE = `
const fs = require('node:fs');
const { parentPort } = require('node:worker_threads');
const fdatasync = (fd) => new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
const fsyncDir = (dir) => new Promise((resolve, reject) => fs.open(dir, 'r', (err, fd) => {
  if (err) return reject(err);
  fs.fsync(fd, (syncErr) => fs.close(fd, () => (syncErr ? reject(syncErr) : resolve())));
}));
let queue = [];
let running = false;
// the relay's slabs, by number: shared memory that jobs name instead of carrying bytes
const slabs = [];
const partsOf = (job) => (job.slab === undefined ? [job.data] : [job.header, new Uint8Array(slabs[job.slab], 0, job.length)]);
const failure = (seq, err) => ({ seq, error: String((err && err.message) || err), code: err && typeof err.code === 'string' ? err.code : undefined });

// One round: every job that arrived since the last one. Files are created and
// written here (page cache, microseconds); their fdatasyncs run side by side on
// the thread pool, so the filesystem commits them together; then the renames,
// then one fsync per directory.
async function round() {
  const batch = queue;
  queue = [];
  const replies = [];
  const failed = new Map();
  const open = [];
  for (const job of batch) {
    if (job.op === 'unlink') {
      try { fs.unlinkSync(job.path); replies.push({ seq: job.seq }); }
      catch (err) { replies.push(failure(job.seq, err)); }
      continue;
    }
    let fd;
    try {
      fd = fs.openSync(job.tmpPath, 'wx', 0o600);
      for (const data of partsOf(job)) {
        let offset = 0;
        while (offset < data.length) offset += fs.writeSync(fd, data, offset, data.length - offset);
      }
      open.push({ job, fd });
    } catch (err) {
      if (fd !== undefined) try { fs.closeSync(fd); } catch {}
      failed.set(job.seq, err);
    }
  }
  const synced = await Promise.all(open.map(({ job, fd }) => fdatasync(fd).then(() => null, (err) => err)));
  const renamed = [];
  open.forEach(({ job, fd }, i) => {
    try {
      fs.closeSync(fd);
      if (synced[i]) throw synced[i];
      fs.renameSync(job.tmpPath, job.finalPath);
      renamed.push(job);
    } catch (err) {
      failed.set(job.seq, err);
    }
  });
  const dirs = [...new Set(renamed.map((job) => job.dir))];
  const dirErrors = new Map();
  await Promise.all(dirs.map((dir) => fsyncDir(dir).catch((err) => dirErrors.set(dir, err))));
  for (const job of renamed) if (dirErrors.has(job.dir)) failed.set(job.seq, dirErrors.get(job.dir));
  const transfer = [];
  for (const job of batch) {
    if (job.op !== 'commit') continue;
    const err = failed.get(job.seq);
    if (err) {
      try { fs.rmSync(job.tmpPath, { force: true }); } catch {}
      replies.push(failure(job.seq, err));
    } else {
      replies.push(job.slab === undefined ? { seq: job.seq, data: job.data } : { seq: job.seq });
    }
    if (job.slab === undefined) transfer.push(job.data.buffer);
  }
  parentPort.postMessage(replies, transfer);
}

async function run() {
  while (queue.length > 0) await round();
  running = false;
}

// each message is the array of jobs posted in one turn of the relay's event loop
parentPort.on('message', (jobs) => {
  for (const job of jobs) {
    if (job.op === 'slab') slabs[job.slab] = job.memory; // undefined: trimmed away
    else queue.push(job);
  }
  if (!running) {
    running = true;
    // after the messages already waiting, so the first round takes them all
    setImmediate(run);
  }
});
`;

export class SpoolIoThread {
  private readonly worker: Worker;
  private readonly jobs = new Map<number, Job>();
  private seq = 0;
  private failure?: Error;
  /** Jobs of this turn of the event loop, posted together (a postMessage costs the same for one job or fifty). */
  private outbox: { jobs: Array<Record<string, unknown> & { seq: number }>; transfer: ArrayBuffer[] } = { jobs: [], transfer: [] };
  /** Memory for files that commitSlab writes; each new slab is shown to the thread before its first job. */
  readonly slabs = new MessageSlabs((slab, memory) => {
    try {
      this.worker.postMessage([{ op: 'slab', slab, memory }]);
    } catch {
      // a dead thread: commitSlab fails with its error
    }
  });
  private readonly slabTrimmer = setInterval(() => this.slabs.trim(), SLAB_TRIM_INTERVAL_MS).unref();

  constructor() {
    this.worker = new Worker(THREAD_SOURCE, {
      eval: true,
      name: 'ownrelay-spool-io',
      // it only holds the files of one round at a time
      resourceLimits: { maxYoungGenerationSizeMb: 1, maxOldGenerationSizeMb: 16 },
    });
    this.worker.on('message', (replies: Reply[]) => {
      for (const reply of replies) this.settle(reply.seq, reply.error === undefined ? undefined : threadError(reply), reply.data);
    });
    const fail = (err: Error) => {
      this.failure = err;
      for (const job of this.jobs.values()) job.reject(err);
      this.jobs.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`spool I/O thread exited (code ${code})`)));
    // the thread keeps the process alive only while it has work (after the listeners: adding one refs it again)
    this.worker.unref();
  }

  /** False once the thread has died; callers then use the thread pool instead. */
  get usable(): boolean {
    return this.failure === undefined;
  }

  /**
   * Writes `data` to `tmpPath`, fsyncs it, renames it to `finalPath` and fsyncs
   * `dir` (finalPath's directory). The bytes move to the thread and back without
   * copies: `data` is unusable after the call, and the promise resolves with the
   * same bytes, now owned by the caller again.
   */
  async commit(tmpPath: string, finalPath: string, dir: string, data: Buffer): Promise<Buffer> {
    // only a buffer that owns its whole memory can be transferred
    const owned = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength ? data : Buffer.from(Uint8Array.prototype.slice.call(data));
    const back = await this.post({ op: 'commit', tmpPath, finalPath, dir, data: owned }, [owned.buffer as ArrayBuffer]);
    return back ? Buffer.from(back.buffer, back.byteOffset, back.byteLength) : owned;
  }

  /**
   * Like commit, for a file made of `header` and the first `length` bytes of a
   * slab of `slabs`: the thread writes the slab's bytes from the shared memory,
   * and the lease stays the caller's (also when this fails).
   */
  async commitSlab(tmpPath: string, finalPath: string, dir: string, header: Buffer, lease: SlabLease, length: number): Promise<void> {
    // a copy of its own, so the message carries these bytes and not the memory they share
    const ownHeader = Uint8Array.prototype.slice.call(header);
    await this.post({ op: 'commit', tmpPath, finalPath, dir, header: ownHeader, slab: lease.slab, length });
  }

  async unlink(path: string): Promise<void> {
    await this.post({ op: 'unlink', path });
  }

  async close(): Promise<void> {
    clearInterval(this.slabTrimmer);
    if (this.failure) return;
    this.failure = new Error('spool I/O thread closed');
    await this.worker.terminate();
  }

  private post(job: Record<string, unknown>, transfer: ArrayBuffer[] = []): Promise<Uint8Array | undefined> {
    if (this.failure) return Promise.reject(this.failure);
    const seq = ++this.seq;
    return new Promise((resolve, reject) => {
      if (this.jobs.size === 0) this.worker.ref();
      this.jobs.set(seq, { resolve, reject });
      this.outbox.jobs.push({ ...job, seq });
      this.outbox.transfer.push(...transfer);
      if (this.outbox.jobs.length === 1) setImmediate(() => this.flush());
    });
  }

  private flush(): void {
    const { jobs, transfer } = this.outbox;
    this.outbox = { jobs: [], transfer: [] };
    try {
      if (this.failure) throw this.failure;
      this.worker.postMessage(jobs, transfer);
    } catch (err) {
      for (const job of jobs) this.settle(job.seq, err as Error);
    }
  }

  /** Ends a job with the thread's answer, or with `error`; the thread stops holding the process when none is left. */
  private settle(seq: number, error?: Error, data?: Uint8Array): void {
    const job = this.jobs.get(seq);
    if (!job) return;
    this.jobs.delete(seq);
    if (error) job.reject(error);
    else job.resolve(data);
    if (this.jobs.size === 0) this.worker.unref();
  }
}

/** The thread's failure as an Error with the system call's code, as node:fs would have thrown it. */
function threadError(reply: Reply): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(reply.error);
  if (reply.code !== undefined) err.code = reply.code;
  return err;
}
