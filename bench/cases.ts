/**
 * What the benchmark measures: message size x concurrent sessions, and the
 * command line that sizes it.
 *
 * Contract: `parseArgs` accepts `--messages N` (every case sends N messages;
 * default 5000 for 1 KiB and 1500 for 100 KiB), `--bundle` (run the relay from
 * dist/ownrelay.js) and `--help`; anything else is an error.
 */

export interface BenchCase {
  /** e.g. "1 KiB x 50 sessions" */
  name: string;
  /** Payload bytes per message (smtp-source -l). */
  size: number;
  /** Parallel SMTP sessions (smtp-source -s), one message per connection. */
  sessions: number;
  messages: number;
}

export interface BenchArgs {
  messages?: number;
  bundle: boolean;
}

export const USAGE = `usage: npm run bench -- [--messages N] [--bundle]
  --messages N  messages per case (default: 5000 for 1 KiB, 1500 for 100 KiB)
  --bundle      run the relay from dist/ownrelay.js (npm run bundle first)`;

/** Upper bound for --messages: keeps one run bounded in time and disk. */
export const MAX_MESSAGES = 100_000;

export function parseArgs(argv: string[]): BenchArgs {
  const args: BenchArgs = { bundle: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--bundle') args.bundle = true;
    else if (arg === '--messages' || arg.startsWith('--messages=')) {
      const value = arg.includes('=') ? arg.slice(arg.indexOf('=') + 1) : argv[++i];
      const n = Number(value);
      if (!Number.isInteger(n) || n < 1 || n > MAX_MESSAGES) throw new Error(`--messages needs a whole number from 1 to ${MAX_MESSAGES}, not ${String(value)}\n${USAGE}`);
      args.messages = n;
    } else if (arg === '--help' || arg === '-h') {
      throw new Error(USAGE);
    } else {
      throw new Error(`unknown argument ${arg}\n${USAGE}`);
    }
  }
  return args;
}

export function benchCases(args: BenchArgs): BenchCase[] {
  const cases: BenchCase[] = [];
  for (const [label, size, defaultMessages] of [
    ['1 KiB', 1024, 5000],
    ['100 KiB', 100 * 1024, 1500],
  ] as const) {
    for (const sessions of [1, 50]) {
      cases.push({ name: `${label} x ${sessions} session${sessions > 1 ? 's' : ''}`, size, sessions, messages: args.messages ?? defaultMessages });
    }
  }
  return cases;
}
