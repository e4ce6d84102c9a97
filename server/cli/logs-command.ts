/**
 * `ownrelay logs [ID]`: the relay's log in readable lines (time, level, event,
 * message), or unchanged JSON with --json. It reads the journal of the relay's
 * unit (journalctl, which needs root or the systemd-journal group), or with
 * --file a file the relay's output went to (`-` for standard input, so
 * `tail -f FILE | ownrelay logs --file -` follows one). Exit codes: 0 when some
 * line matched, 1 when none did or the journal could not be read.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createReadStream, openSync } from 'node:fs';
import type { Readable } from 'node:stream';
import type { Command } from 'commander';
import { parseAge } from './format';
import { formatLogEntry, matchingEntries, type LogFilter } from './log-lines';

/** The unit the deploy installs the relay as (infra/render/systemd-unit.ts). */
export const RELAY_UNIT = 'ownrelay.service';

interface LogsOptions {
  event?: string[];
  since?: string;
  follow?: boolean;
  file?: string;
  json?: boolean;
}

/** "30m" (an age, as queue list takes it) or a time Date.parse reads, as ms since epoch. */
export function sinceMs(value: string, now = Date.now()): number {
  try {
    return now - parseAge(value) * 1000;
  } catch {
    // not an age: a time
  }
  const at = Date.parse(value);
  if (!Number.isFinite(at)) throw new Error(`--since ${JSON.stringify(value)}: give an age (90s, 30m, 4h, 2d) or a time (2026-11-30T08:00:00Z)`);
  return at;
}

/** journalctl's arguments for the relay's lines, as the relay wrote them. */
export function journalctlArgs(options: { sinceMs?: number; follow?: boolean }): string[] {
  return ['-u', RELAY_UNIT, '-o', 'cat', '--no-pager', ...(options.sinceMs !== undefined ? [`--since=@${Math.floor(options.sinceMs / 1000)}`] : []), ...(options.follow ? ['--follow'] : [])];
}

export function registerLogsCommand(program: Command): void {
  program
    .command('logs')
    .description("the relay's log lines, readable: all of them, or one message's story")
    .argument('[id]', "a queue id: only that message's lines (and the line of the message a notice came from)")
    .option('--event <names>', 'only these events, comma-separated (repeatable): accepted, delivered, deferred, failed, bounced, rejected, auth, ...', eventList)
    .option('--since <when>', 'only lines since this age (90s, 30m, 4h, 2d) or time (2026-11-30T08:00:00Z)')
    .option('-f, --follow', 'keep printing new lines as the relay logs them (from the journal)')
    .option('--file <path>', 'read a file of the relay\'s output instead of the journal (- for standard input)')
    .option('--json', 'print the matching lines unchanged (JSON)')
    .action(async (id: string | undefined, o: LogsOptions) => {
      const filter: LogFilter = {
        ...(id !== undefined ? { queueId: id } : {}),
        ...(o.event ? { events: o.event } : {}),
        ...(o.since !== undefined ? { sinceMs: sinceMs(o.since) } : {}),
      };
      if (o.file !== undefined && o.follow) throw new Error('--follow reads the journal; to follow a file: tail -f FILE | ownrelay logs --file -');
      const source = o.file !== undefined ? fileSource(o.file) : journalSource(journalctlArgs({ sinceMs: filter.sinceMs, follow: o.follow }));
      let matched = 0;
      for await (const { entry, text } of matchingEntries(source.lines, filter)) {
        matched++;
        // a slow reader (less) holds the reading back instead of the lines piling up here
        if (!process.stdout.write(`${o.json ? text : formatLogEntry(entry)}\n`)) await once(process.stdout, 'drain');
      }
      await source.done;
      if (matched === 0) {
        process.stderr.write(`no log line matched${id !== undefined ? ` for ${id}` : ''}\n`);
        process.exitCode = 1;
      }
    });
}

/** `--event a,b --event c` -> [a, b, c] */
function eventList(value: string, previous: string[] = []): string[] {
  return [...previous, ...value.split(',').map((name) => name.trim()).filter(Boolean)];
}

interface LineSource {
  lines: Readable;
  /** settles once the source has ended; rejects when it failed (journalctl's exit status) */
  done: Promise<void>;
}

function fileSource(path: string): LineSource {
  if (path === '-') return { lines: process.stdin, done: Promise.resolve() };
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw new Error(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return { lines: createReadStream('', { fd }), done: Promise.resolve() };
}

function journalSource(args: string[]): LineSource {
  const child = spawn('journalctl', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const done = new Promise<void>((resolve, reject) => {
    child.once('error', (err) => reject(new Error(`cannot run journalctl (${err.message}); give --file with the relay's output instead`)));
    child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`journalctl ${args.join(' ')} exited with ${String(code)}: ${stderr.trim() || 'no output'} (reading the journal needs root or the systemd-journal group)`))));
  });
  return { lines: child.stdout, done };
}
