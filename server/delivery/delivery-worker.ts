/**
 * The delivery side of the relay, on a thread of its own: scheduler, routing and
 * transports (nodemailer's client with its per-byte dot-stuffing) run here, so the
 * main event loop only receives. See delivery-thread.ts for the other end.
 *
 * Messages from the main thread: `enqueue` (a message was just queued, with its
 * bytes, transferred) and `stop`. To it: `started`, `log` (one serialized JSON log
 * line, written by the main thread's logger destination) and `stopped`.
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Scheduler } from '../queue/scheduler';
import { Spool } from '../queue/spool';
import { DELIVERY_WORKER_ROLE, type DeliveryWorkerData, type FromWorker, type ToWorker } from './delivery-protocol';
import { AddressGuard } from './address-guard';
import { MaildirTransport } from './maildir';
import { MxResolver } from './mx-resolver';
import { Router } from './router';
import { SmtpDelivery } from './smtp-transport';

async function runDeliveryWorker(data: DeliveryWorkerData): Promise<void> {
  const port = parentPort!;
  const post = (message: FromWorker) => port.postMessage(message);
  // log lines go to the main thread, which owns stdout (and the tests' log sinks)
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      post({ type: 'log', line: chunk.toString('utf8') });
      done();
    },
  });
  const logger = pino({ level: data.logLevel, base: { service: 'ownrelay' }, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } }, sink);
  const config = data.config;
  try {
    const spool = await Spool.open(config.paths.spool, logger, { groupCommitThread: false });
    const maildir = new MaildirTransport({ mailRoot: config.paths.mail, hostname: config.hostname, domains: config.domains, logger });
    const smtp = new SmtpDelivery({
      hostname: config.hostname,
      resolver: new MxResolver(config.dns.servers),
      guard: new AddressGuard(config.delivery.allowedDestinations),
      connectTimeoutMs: config.delivery.connectTimeoutMs,
      commandTimeoutMs: config.delivery.commandTimeoutMs,
      logger,
      ...(data.mxPort !== undefined ? { mxPort: data.mxPort } : {}),
    });
    const router = new Router(config, maildir, smtp);
    const scheduler = new Scheduler({ spool, router, config, logger, onPreloadReleased: (bytes) => post({ type: 'released', bytes }) });
    port.on('message', (message: ToWorker) => {
      if (message.type === 'enqueue') {
        const { preloaded } = message;
        const bytes = preloaded ? Buffer.from(preloaded.message.buffer, preloaded.message.byteOffset, preloaded.message.byteLength) : undefined;
        scheduler.enqueue(message.entry, preloaded && bytes ? { info: preloaded.info, message: bytes } : undefined);
      } else if (message.type === 'stop') {
        void scheduler
          .stop(message.timeoutMs)
          .then(() => router.close())
          .then(() => spool.close())
          .finally(() => post({ type: 'stopped' }));
      }
    });
    await scheduler.start();
    post({ type: 'started' });
  } catch (err) {
    post({ type: 'failed', error: err instanceof Error ? err.stack ?? err.message : String(err) });
  }
}

if (!isMainThread && (workerData as DeliveryWorkerData | undefined)?.role === DELIVERY_WORKER_ROLE) {
  void runDeliveryWorker(workerData as DeliveryWorkerData);
}
