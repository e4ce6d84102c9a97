/**
 * Reading the relay's own log: one JSON object per line (see log/logger.ts), as
 * journald keeps it or as a file the relay's output went to. A message's story
 * is every line whose queueId names it, plus the line of the message it came
 * from when it is a notice (a bounce, success notice or delay warning names its
 * own id as bounceId, noticeId or warningId there).
 */
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';

export type LogEntry = Record<string, unknown>;

export interface LogFilter {
  /** only the story of this queue id */
  queueId?: string;
  /** only lines with one of these events */
  events?: readonly string[];
  /** only lines logged at or after this time (ms since epoch) */
  sinceMs?: number;
}

const NOTICE_ID_FIELDS = ['bounceId', 'noticeId', 'warningId'] as const;

/** The JSON object of a log line; undefined for anything else (a blank line, a runtime warning). */
export function parseLogLine(text: string): LogEntry | undefined {
  if (!text.startsWith('{')) return undefined;
  try {
    const value = JSON.parse(text) as unknown;
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as LogEntry) : undefined;
  } catch {
    return undefined;
  }
}

export function matchesFilter(entry: LogEntry, filter: LogFilter): boolean {
  if (filter.queueId !== undefined && entry.queueId !== filter.queueId && !NOTICE_ID_FIELDS.some((field) => entry[field] === filter.queueId)) return false;
  if (filter.events && !filter.events.includes(String(entry.event))) return false;
  if (filter.sinceMs !== undefined) {
    const at = typeof entry.time === 'string' ? Date.parse(entry.time) : NaN;
    if (!(at >= filter.sinceMs)) return false;
  }
  return true;
}

/** "2026-11-30T02:37:25Z info  accepted         accepted 0MX... from <a@example.org>": time, level, event, message. */
export function formatLogEntry(entry: LogEntry): string {
  const time = typeof entry.time === 'string' ? entry.time.replace(/\.\d+Z$/, 'Z') : '-';
  const level = typeof entry.level === 'string' ? entry.level : String(entry.level ?? '-');
  const event = typeof entry.event === 'string' ? entry.event : '-';
  const message = typeof entry.msg === 'string' ? entry.msg : '';
  return `${time} ${level.padEnd(5)} ${event.padEnd(16)} ${message}`;
}

/** The lines of `input` that are log entries passing `filter`, in order. */
export async function* matchingEntries(input: Readable, filter: LogFilter): AsyncGenerator<{ entry: LogEntry; text: string }> {
  for await (const text of createInterface({ input, crlfDelay: Infinity })) {
    const entry = parseLogLine(text);
    if (entry && matchesFilter(entry, filter)) yield { entry, text };
  }
}
