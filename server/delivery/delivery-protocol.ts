/**
 * The messages between the main thread (delivery-thread.ts) and the delivery
 * thread (delivery-worker.ts). Kept apart from both so that the main thread's code
 * does not pull in the delivery side's modules (and the other way round).
 */
import type { RelayConfig } from '../config/schema';
import type { PreloadedMessage } from '../queue/scheduler';
import type { QueueEntry } from '../queue/spool';

export const DELIVERY_WORKER_ROLE = 'ownrelay-delivery';

export interface DeliveryWorkerData {
  role: typeof DELIVERY_WORKER_ROLE;
  config: RelayConfig;
  logLevel: string;
  mxPort?: number;
}

export type ToWorker =
  | { type: 'enqueue'; entry: QueueEntry; preloaded?: { info: PreloadedMessage['info']; message: Uint8Array } }
  | { type: 'stop'; timeoutMs: number };

export type FromWorker =
  | { type: 'started' }
  | { type: 'log'; line: string }
  /** bytes of handed-over messages the thread no longer holds */
  | { type: 'released'; bytes: number }
  | { type: 'stopped' }
  | { type: 'failed'; error: string };

