/**
 * Runs the relay as a real child process, the way an operator runs it, for
 * integration, crash and peer tests and for the benchmark.
 *
 * Contract:
 * - `startRelayProcess(yaml)` writes the YAML to a fresh temp file, starts the
 *   relay with `run --config FILE` and resolves once every listener of the
 *   config has logged `{"event":"listening","index":i,"port":p}` and the relay
 *   has logged `{"event":"started"}` (unless `readyAt: 'listening'`); `ports[i]`
 *   is then the actual port of listener i (configs may use port 0).
 * - It rejects (and kills the child) when the relay exits or stays silent for
 *   20 s before that; the error message carries everything it printed.
 * - `pid` is the relay's own process, not a wrapper, so `kill('SIGKILL')` kills
 *   the relay itself, and every `kill` resolves only once that process is gone.
 * - Children still running when the test process exits are killed with it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createInterface } from 'node:readline';
import { parse as parseYaml } from 'yaml';
import { RELAY_ENVIRONMENT, RELAY_NODE_FLAGS } from '../../server/runtime-flags';

/** The project root: every relay command runs from here unless told otherwise. */
export const PROJECT_ROOT = resolve(__dirname, '..', '..');

const TSX_LOADER = pathToFileURL(require.resolve('tsx', { paths: [PROJECT_ROOT] })).href;

const READY_TIMEOUT_MS = 20_000;
/** How long `stop()` waits for a graceful exit before it kills and fails. */
const STOP_TIMEOUT_MS = 15_000;
/** Output kept for error messages (the last lines only). */
const OUTPUT_TAIL_LINES = 200;

export type LogLine = Record<string, unknown>;

export interface RelayProcess {
  readonly pid: number;
  /** Actual port of each listener, by its index in the config's `listeners`. */
  readonly ports: number[];
  /** The temp directory holding the config file (removed by kill/stop). */
  readonly configPath: string;
  /** Parsed JSON log lines so far, oldest first. */
  logLines(): LogLine[];
  /** Everything printed so far on stdout and stderr, for diagnostics. */
  output(): string;
  /** Resolves with the first log line (past or future) that satisfies `predicate`. */
  waitForLog(predicate: (line: LogLine) => boolean, timeoutMs: number): Promise<LogLine>;
  /** Sends `signal` (SIGTERM by default) and resolves with the exit code (null when ended by a signal) once the process is gone. */
  kill(signal?: NodeJS.Signals): Promise<number | null>;
  /** SIGTERM and wait for a graceful exit; fails if the relay needed SIGKILL or exited non-zero. */
  stop(): Promise<void>;
  /** True once the process has exited. */
  exited(): boolean;
}

export interface StartRelayOptions {
  /** Run the shipped bundle `dist/ownrelay.js` (needs `npm run bundle`) instead of the TypeScript sources. */
  bundle?: boolean;
  /** Run this bundle file (e.g. a copy in a directory without node_modules); implies `bundle`. */
  bundleFile?: string;
  /** Working directory of the relay (relative config paths resolve against it); default: the project root. */
  cwd?: string;
  /** Extra environment variables for the relay. */
  env?: NodeJS.ProcessEnv;
  /**
   * Once listening, write the relay's stdout (its JSON log) to this file instead of
   * parsing it here: under load, parsing every line would take CPU from the relay
   * being measured. `waitForLog` then only sees lines logged before that.
   */
  logFile?: string;
  /**
   * What counts as ready: `started` (default) is the end of the whole start;
   * `listening` resolves as soon as every listener listens, before the start is
   * over, to test what happens in between.
   */
  readyAt?: 'listening' | 'started';
  /** How long to wait for all listeners; default 20 s. */
  readyTimeoutMs?: number;
  /**
   * Gives the relay a small file system of its own: a tmpfs of `bytes` mounted
   * on the existing directory `dir`, seen by the relay only (a mount namespace
   * made by unshare(1); outside root, in a user namespace too). The test reaches
   * it through `viewOf` (via /proc/<pid>/root); `pid` is still the relay's own.
   */
  smallDisk?: { dir: string; bytes: number };
}

/** The path under which this process sees `path` as the relay `pid` sees it (its own mounts included). */
export function viewOf(pid: number, path: string): string {
  return join(`/proc/${pid}/root`, resolve(path));
}

/** Creates a fresh directory under the system temp dir; the caller removes it (see `removeDir`). */
export function writeTempDir(prefix: string, parent: string = tmpdir()): string {
  return mkdtempSync(join(parent, `${prefix.replace(/[^a-zA-Z0-9_-]/g, '-')}-`));
}

/** Removes a directory tree, ignoring one that is already gone. */
export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export async function startRelayProcess(configYaml: string, opts: StartRelayOptions = {}): Promise<RelayProcess> {
  const listenerCount = countListeners(configYaml);
  const configDir = writeTempDir('ownrelay-config');
  const configPath = join(configDir, 'config.yaml');
  writeFileSync(configPath, configYaml);

  // `node --import <tsx loader>` rather than the `tsx` CLI: the CLI runs the program
  // in a second node process, so a SIGKILL to the CLI would leave the relay running.
  // The loader is named by its full URL so that any `cwd` works.
  // the bundle runs with the flags of its #! line, as on a server
  const args = opts.bundle || opts.bundleFile
    ? [...RELAY_NODE_FLAGS, opts.bundleFile ?? join(PROJECT_ROOT, 'dist', 'ownrelay.js'), 'run', '--config', configPath]
    : ['--import', TSX_LOADER, join(PROJECT_ROOT, 'server', 'main.ts'), 'run', '--config', configPath];
  const [command, commandArgs] = opts.smallDisk ? ['unshare', [...smallDiskPrefix(opts.smallDisk), process.execPath, ...args]] : [process.execPath, args];
  const child = spawn(command, commandArgs, {
    cwd: opts.cwd ?? PROJECT_ROOT,
    env: { ...process.env, ...(opts.bundle || opts.bundleFile ? RELAY_ENVIRONMENT : {}), ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);

  const lines: LogLine[] = [];
  const tail: string[] = [];
  const listeners = new Set<(line: LogLine) => void>();
  let exitCode: number | null | undefined;
  let exitSignal: NodeJS.Signals | null = null;
  const exitedPromise = new Promise<void>((resolveExit) => {
    child.once('exit', (code, signal) => {
      exitCode = code;
      exitSignal = signal;
      running.delete(child);
      resolveExit();
    });
  });
  // readline may still hold lines when 'exit' fires; 'close' means all output is in.
  const closedPromise = new Promise<void>((resolveClose) => child.once('close', () => resolveClose()));

  const keep = (text: string) => {
    tail.push(text);
    if (tail.length > OUTPUT_TAIL_LINES) tail.shift();
  };
  const stdoutLines = createInterface({ input: child.stdout! });
  stdoutLines.on('line', (text) => {
    keep(text);
    const parsed = parseJsonObject(text);
    if (!parsed) return;
    lines.push(parsed);
    for (const listener of [...listeners]) listener(parsed);
  });
  createInterface({ input: child.stderr! }).on('line', (text) => keep(`[stderr] ${text}`));

  const output = () => tail.join('\n');
  const exited = () => exitCode !== undefined;
  const describeExit = () => (exitSignal ? `signal ${exitSignal}` : `code ${String(exitCode)}`);

  const waitForLog = (predicate: (line: LogLine) => boolean, timeoutMs: number): Promise<LogLine> => {
    const seen = lines.find(predicate);
    if (seen) return Promise.resolve(seen);
    return new Promise<LogLine>((resolveWait, rejectWait) => {
      const done = () => {
        listeners.delete(onLine);
        clearTimeout(timer);
      };
      const onLine = (line: LogLine) => {
        if (!predicate(line)) return;
        done();
        resolveWait(line);
      };
      const timer = setTimeout(() => {
        done();
        rejectWait(new Error(`no matching relay log line within ${timeoutMs} ms; relay output:\n${output()}`));
      }, timeoutMs);
      listeners.add(onLine);
      void closedPromise.then(() => {
        if (!listeners.has(onLine)) return;
        done();
        rejectWait(new Error(`the relay exited (${describeExit()}) before a matching log line; relay output:\n${output()}`));
      });
    });
  };

  const kill = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> => {
    if (!exited()) child.kill(signal);
    await exitedPromise;
    await closedPromise;
    removeDir(configDir);
    return exitCode ?? null;
  };

  const stop = async (): Promise<void> => {
    if (exited()) {
      await kill();
      return;
    }
    child.kill('SIGTERM');
    const graceful = await Promise.race([exitedPromise.then(() => true), delay(STOP_TIMEOUT_MS).then(() => false)]);
    if (!graceful) {
      await kill('SIGKILL');
      throw new Error(`the relay did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM; relay output:\n${output()}`);
    }
    await kill();
    if (exitCode !== 0) throw new Error(`the relay exited with ${describeExit()} after SIGTERM; relay output:\n${output()}`);
  };

  // Wait for one "listening" line per listener, then the "started" line.
  const ports: number[] = [];
  const readyTimeoutMs = opts.readyTimeoutMs ?? READY_TIMEOUT_MS;
  try {
    await new Promise<void>((resolveReady, rejectReady) => {
      const check = () => {
        for (const line of lines) {
          if (line.event === 'listening' && typeof line.index === 'number' && typeof line.port === 'number') {
            ports[line.index] = line.port;
          }
        }
        // "started" comes once the whole start is done (admin socket, metrics, signal handlers)
        let ready = opts.readyAt === 'listening' || lines.some((line) => line.event === 'started');
        for (let i = 0; i < listenerCount; i++) if (ports[i] === undefined) ready = false;
        if (!ready) return;
        cleanup();
        resolveReady();
      };
      const timer = setTimeout(() => {
        cleanup();
        rejectReady(new Error(`the relay did not log "listening" for all ${listenerCount} listeners and "started" within ${readyTimeoutMs} ms`));
      }, readyTimeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        listeners.delete(check);
      };
      listeners.add(check);
      child.once('error', (err) => {
        cleanup();
        rejectReady(err);
      });
      void closedPromise.then(() => {
        cleanup();
        rejectReady(new Error(`the relay exited (${describeExit()}) before it was listening`));
      });
      check();
    });
  } catch (err) {
    await kill('SIGKILL');
    throw new Error(`${(err as Error).message}; command: node ${args.join(' ')}; relay output:\n${output()}`);
  }
  if (opts.logFile) {
    stdoutLines.close();
    child.stdout!.pipe(createWriteStream(opts.logFile, { flags: 'a' }));
  }

  return {
    pid: child.pid!,
    ports,
    configPath,
    logLines: () => [...lines],
    output,
    waitForLog,
    kill,
    stop,
    exited,
  };
}

/** The number of listeners the relay will report, read from the YAML itself. */
function countListeners(configYaml: string): number {
  const parsed = parseYaml(configYaml) as { listeners?: unknown } | null;
  if (!parsed || !Array.isArray(parsed.listeners) || parsed.listeners.length === 0) {
    throw new Error('the relay config has no listeners');
  }
  return parsed.listeners.length;
}

function parseJsonObject(text: string): LogLine | undefined {
  if (!text.startsWith('{')) return undefined;
  try {
    const value: unknown = JSON.parse(text);
    return value && typeof value === 'object' && !Array.isArray(value) ? (value as LogLine) : undefined;
  } catch {
    return undefined;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

/**
 * unshare's arguments up to the command: a private mount namespace where a
 * shell mounts the tmpfs and then becomes the command (same process, same pid).
 */
function smallDiskPrefix(disk: { dir: string; bytes: number }): string[] {
  const asRoot = process.getuid?.() === 0;
  return [
    '--mount',
    '--propagation',
    'private',
    ...(asRoot ? [] : ['--user', '--map-root-user']),
    'sh',
    '-c',
    'mount -t tmpfs -o size="$1" ownrelay-small-disk "$0" && shift && exec "$@"',
    resolve(disk.dir),
    String(disk.bytes),
  ];
}
