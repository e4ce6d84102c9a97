/**
 * The main thread's end of the delivery thread (delivery-worker.ts). It starts the
 * thread, hands each just-queued message over (its bytes transferred, not copied),
 * writes the thread's log lines through the relay's own log destination, and stops
 * it: scheduled deliveries finish or stay in the spool for the next start.
 */
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import pino from 'pino';
import type { RelayConfig } from '../config/schema';
import type { Logger } from '../log/logger';
import type { PreloadedMessage } from '../queue/scheduler';
import type { QueueEntry } from '../queue/spool';
import { DELIVERY_WORKER_ROLE, type DeliveryWorkerData, type FromWorker, type ToWorker } from './delivery-protocol';

/**
 * The delivery thread's program, bundled on its own by server/build-bundle.ts and
 * embedded in the single-file bundle as text; undefined when running from the
 * TypeScript sources.
 */
declare const OWNRELAY_DELIVERY_WORKER_SOURCE: string | undefined;

/**
 * What the thread runs: in the bundle, the embedded delivery program (so the
 * thread loads only the delivery side's code); from the TypeScript sources, the
 * delivery-worker module through tsx's require hook.
 */
function createWorker(workerData: DeliveryWorkerData): Worker {
  const options = { workerData, name: 'ownrelay-delivery', resourceLimits: { maxYoungGenerationSizeMb: 8 } };
  if (typeof OWNRELAY_DELIVERY_WORKER_SOURCE === 'string') return new Worker(OWNRELAY_DELIVERY_WORKER_SOURCE, { ...options, eval: true });
  const hook = require.resolve('tsx/cjs');
  const entry = join(__dirname, 'delivery-worker.ts');
  return new Worker(`require(${JSON.stringify(hook)}); require(${JSON.stringify(entry)});`, { ...options, eval: true });
}

/**
 * Bytes of just-received messages that may be on their way to, or held by, the
 * delivery thread. Beyond it a message is handed over without its bytes and read
 * back from the spool: when delivery falls behind, the backlog waits on disk, not
 * in memory.
 */
const HANDOVER_BUDGET_BYTES = 8 * 1024 * 1024;
/**
 * Larger messages are always read back from the spool (the page cache): memory
 * moved between threads is only given back to the system once the receiving
 * thread collects it, which for large messages lets tens of MiB pile up.
 */
const HANDOVER_MAX_MESSAGE_BYTES = 64 * 1024;

export class DeliveryThread {
  private stopped?: Promise<void>;
  private handedOverBytes = 0;

  private constructor(
    private readonly worker: Worker,
    private readonly logger: Logger,
  ) {}

  static start(config: RelayConfig, logger: Logger, options: { mxPort?: number } = {}): Promise<DeliveryThread> {
    const data: DeliveryWorkerData = { role: DELIVERY_WORKER_ROLE, config, logLevel: logger.level, ...(options.mxPort !== undefined ? { mxPort: options.mxPort } : {}) };
    const worker = createWorker(data);
    const thread = new DeliveryThread(worker, logger);
    const destination = (logger as unknown as Record<symbol, { write(line: string): void }>)[pino.symbols.streamSym];
    return new Promise((resolve, reject) => {
      worker.on('message', (message: FromWorker) => {
        if (message.type === 'log') destination?.write(message.line);
        else if (message.type === 'released') thread.handedOverBytes -= message.bytes;
        else if (message.type === 'started') resolve(thread);
        else if (message.type === 'failed') reject(new Error(`the delivery thread could not start: ${message.error}`));
      });
      worker.once('error', (err) => {
        logger.fatal({ event: 'delivery-thread-error', err: err.stack ?? String(err) }, 'the delivery thread failed');
        reject(err);
      });
    });
  }

  enqueue(entry: QueueEntry, preloadedOffer?: PreloadedMessage): void {
    const fits =
      preloadedOffer !== undefined &&
      preloadedOffer.message.length <= HANDOVER_MAX_MESSAGE_BYTES &&
      this.handedOverBytes + preloadedOffer.message.length <= HANDOVER_BUDGET_BYTES;
    const preloaded = fits ? preloadedOffer : undefined;
    if (preloaded) this.handedOverBytes += preloaded.message.length;
    const message: ToWorker = preloaded
      ? { type: 'enqueue', entry, preloaded: { info: preloaded.info, message: preloaded.message } }
      : { type: 'enqueue', entry };
    // the bytes move to the thread without a copy when their memory is theirs alone
    // (never a slice of Node's shared buffer pool, which transferring would take away)
    const transfer = preloaded?.transferable ? [preloaded.message.buffer as ArrayBuffer] : [];
    this.worker.postMessage(message, transfer);
  }

  /** Lets deliveries in flight finish (at most `timeoutMs`), then ends the thread. */
  stop(timeoutMs: number): Promise<void> {
    this.stopped ??= new Promise<void>((resolve) => {
      const done = () => void this.worker.terminate().then(() => resolve());
      this.worker.on('message', (message: FromWorker) => {
        if (message.type === 'stopped') done();
      });
      this.worker.once('exit', () => resolve());
      // the thread's own stop waits timeoutMs for deliveries; give it a little more
      setTimeout(done, timeoutMs + 5000).unref();
      this.worker.postMessage({ type: 'stop', timeoutMs } satisfies ToWorker);
    });
    return this.stopped;
  }
}
