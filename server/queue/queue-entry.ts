/**
 * A queue file's place in the spool: its state (the directory it is in) and its
 * name there. A deferred file's name starts with its due time, so the scheduler
 * reads the schedule from a directory listing without opening files.
 */
import { isQueueId } from './queue-id';

export const QUEUE_STATES = ['incoming', 'active', 'deferred', 'hold', 'corrupt'] as const;
export type QueueState = (typeof QUEUE_STATES)[number];

export interface QueueEntry {
  id: string;
  state: QueueState;
  /** deferred entries: when the next attempt is due (ms since epoch) */
  dueAt?: number;
  /** file name within the state directory */
  name: string;
}

export function makeEntry(id: string, state: QueueState, dueAt?: number): QueueEntry {
  if (state === 'deferred') {
    const due = dueAt ?? Date.now();
    return { id, state, dueAt: due, name: `${due}.${id}` };
  }
  return { id, state, name: id };
}

/** Parses a file name of a state directory; undefined for names that are not queue files. */
export function parseEntryName(state: QueueState, name: string): QueueEntry | undefined {
  if (state === 'deferred') {
    const match = /^(\d{1,15})\.([0-9A-Z]{19})$/.exec(name);
    return match ? { id: match[2]!, state, dueAt: Number(match[1]), name } : undefined;
  }
  if (state === 'corrupt') {
    const id = name.split('.').find(isQueueId) ?? name;
    return { id, state, name };
  }
  return isQueueId(name) ? { id: name, state, name } : undefined;
}
