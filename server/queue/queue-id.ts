/**
 * Queue ids: sortable by creation time, unique within and across processes,
 * safe as file names ([0-9A-Z] only). 9 base-36 digits of milliseconds (good until
 * the year 5188), then a per-process counter and random bits.
 */
import { randomBytes } from 'node:crypto';

let counter = 0;
const processTag = randomBytes(3).toString('hex').toUpperCase();

export function newQueueId(now = Date.now()): string {
  counter = (counter + 1) % 36 ** 4;
  return now.toString(36).toUpperCase().padStart(9, '0') + counter.toString(36).toUpperCase().padStart(4, '0') + processTag;
}

export function isQueueId(text: string): boolean {
  return /^[0-9A-Z]{19}$/.test(text);
}
