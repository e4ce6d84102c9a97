/**
 * What the benchmark measures: message size x concurrent sessions, and the
 * command line that sizes it.
 *
 * Contract: `parseArgs` accepts `--messages N` (every case sends N messages;
 * default 5000 for 1 KiB and 1500 for 100 KiB), `--rounds N` (each case is
 * measured N times per MTA, alternating the MTAs; default 3), `--bundle` (run the
 * relay from dist/ownrelay.js) and `--help`; anything else is an error.
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
  /** measurements per case and MTA */
  rounds: number;
  bundle: boolean;
}

/** The machine's speed drifts by a quarter or more: one measurement per MTA is not a comparison. */
export const DEFAULT_ROUNDS = 3;

export const USAGE = `usage: npm run bench -- [--messages N] [--rounds N] [--bundle]
  --messages N  messages per case (default: 5000 for 1 KiB, 1500 for 100 KiB)
  --rounds N    measure each case N times per MTA, alternating them (default: ${DEFAULT_ROUNDS})
  --bundle      run the relay from dist/ownrelay.js (npm run bundle first)`;

/** Upper bound for --messages: keeps one run bounded in time and disk. */
export const MAX_MESSAGES = 100_000;
/** Upper bound for --rounds (a round of the four cases takes a few minutes). */
export const MAX_ROUNDS = 20;

export function parseArgs(argv: string[]): BenchArgs {
  const args: BenchArgs = { bundle: false, rounds: DEFAULT_ROUNDS };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--bundle') args.bundle = true;
    else if (arg === '--messages' || arg.startsWith('--messages=')) {
      args.messages = wholeNumber('--messages', arg.includes('=') ? arg.slice(arg.indexOf('=') + 1) : argv[++i], MAX_MESSAGES);
    } else if (arg === '--rounds' || arg.startsWith('--rounds=')) {
      args.rounds = wholeNumber('--rounds', arg.includes('=') ? arg.slice(arg.indexOf('=') + 1) : argv[++i], MAX_ROUNDS);
    } else if (arg === '--help' || arg === '-h') {
      throw new Error(USAGE);
    } else {
      throw new Error(`unknown argument ${arg}\n${USAGE}`);
    }
  }
  return args;
}

function wholeNumber(option: string, value: string | undefined, max: number): number {
  const n = Number(value);
  if (value === undefined || value === '' || !Number.isInteger(n) || n < 1 || n > max) throw new Error(`${option} needs a whole number from 1 to ${max}, not ${String(value)}\n${USAGE}`);
  return n;
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
