/**
 * One benchmark measurement: smtp-source sends a case's messages to a relaying
 * MTA (the relay, or a private Postfix for comparison) that passes them on to
 * a fresh smtp-sink; everything on 127.0.0.1.
 *
 * Contract:
 * - End-to-end rate = messages counted at the sink / time from starting
 *   smtp-source to the last message counted at the sink.
 * - Each measurement starts its own sink and MTA and stops and removes them,
 *   also when it fails; it ends after at most CASE_TIMEOUT_MS, or once no
 *   message has reached the sink for QUIET_MS (a lost message must not hang
 *   the run), and then reports what arrived.
 * - The relay's spool and Postfix's queue live under `workDir`, which the
 *   caller puts on the project's disk (not tmpfs): both pay for real fsyncs.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runSmtpSource, startPostfix, startSmtpSink, type SmtpSink } from '../test/helpers/postfix';
import { removeDir, startRelayProcess, writeTempDir } from '../test/helpers/relay-process';
import type { BenchCase } from './cases';

export const CASE_TIMEOUT_MS = 10 * 60_000;
export const QUIET_MS = 30_000;
const RSS_SAMPLE_MS = 100;

export interface Measurement {
  /** Messages counted at the sink. */
  counted: number;
  expected: number;
  /** Seconds from the start of smtp-source to the last message at the sink. */
  seconds: number;
  /** counted / seconds */
  rate: number;
  /** CPU time of the whole machine (every process and the kernel) per message, in ms. */
  cpuMsPerMessage: number;
  /** Peak resident memory of the relay process (ownrelay only). */
  peakRssMiB?: number;
  /** What went wrong, if anything (smtp-source refused, messages missing). */
  problem?: string;
}

export interface RelayRunOptions {
  workDir: string;
  bundle: boolean;
}

/** Sends the case through the relay's submission listener (loopback is in relay.networks, so no AUTH). */
export async function measureRelay(c: BenchCase, opts: RelayRunOptions): Promise<Measurement> {
  const dir = writeTempDir('ownrelay', opts.workDir);
  const sink = await startSmtpSink();
  try {
    for (const sub of ['spool', 'mail', 'state']) mkdirSync(join(dir, sub));
    const relay = await startRelayProcess(
      `
hostname: relay.bench.test
listeners:
  - { role: submission, address: 127.0.0.1, port: 0, tls: starttls }
relay: { networks: [127.0.0.0/8] }
paths: { spool: ${dir}/spool, mail: ${dir}/mail, state: ${dir}/state }
delivery:
  allowedDestinations: [127.0.0.0/8]
  routes: { "sink.test": { host: 127.0.0.1, port: ${sink.port}, tls: none } }
`,
      { bundle: opts.bundle, logFile: join(dir, 'relay.log') },
    );
    const rss = sampleRss(relay.pid);
    try {
      const result = await drive(relay.ports[0]!, c, sink);
      return { ...result, peakRssMiB: rss.stop() };
    } finally {
      rss.stop();
      await relay.stop();
    }
  } finally {
    await sink.stop();
    removeDir(dir);
  }
}

/** Sends the case through a private Postfix with default settings except `relayhost = [127.0.0.1]:<sink>`. */
export async function measurePostfix(c: BenchCase, opts: { workDir: string }): Promise<Measurement> {
  const sink = await startSmtpSink();
  try {
    const postfix = await startPostfix({
      hostname: 'postfix.bench.test',
      relayhost: { host: '127.0.0.1', port: sink.port },
      clientTls: 'none',
      fastRetry: false,
      parentDir: opts.workDir,
    });
    try {
      return await drive(postfix.port, c, sink);
    } finally {
      await postfix.stop();
    }
  } finally {
    await sink.stop();
  }
}

/**
 * Messages sent before timing starts, so both MTAs are measured warm (JIT, process
 * pools, caches): as many as the timed run. V8's optimizing compiler is still busy
 * after a few hundred messages; the relay's CPU per message keeps falling for a
 * few thousand (1 KiB: about a fifth less after 4,000 than after 500).
 */
export function warmupMessages(c: BenchCase): number {
  return c.messages;
}

async function drive(port: number, c: BenchCase, sink: SmtpSink): Promise<Omit<Measurement, 'peakRssMiB'>> {
  const warmup = warmupMessages(c);
  const warm = await runSmtpSource({ port, messages: warmup, sessions: c.sessions, size: c.size, from: 'bench@client.test', to: 'sink@sink.test', timeoutMs: CASE_TIMEOUT_MS });
  if (warm.code !== 0) throw new Error(`warm-up smtp-source exited ${String(warm.code)}: ${warm.stderr || warm.stdout}`);
  await sink.waitForCount(warmup, { timeoutMs: CASE_TIMEOUT_MS, quietMs: QUIET_MS });
  const base = sink.count();
  const cpuBefore = machineCpuTicks();
  const started = Date.now();
  const source = runSmtpSource({
    port,
    messages: c.messages,
    sessions: c.sessions,
    size: c.size,
    from: 'bench@client.test',
    to: 'sink@sink.test',
    timeoutMs: CASE_TIMEOUT_MS,
  });
  const counted = (await sink.waitForCount(base + c.messages, { timeoutMs: CASE_TIMEOUT_MS, quietMs: QUIET_MS })) - base;
  const sent = await source.catch((err: unknown) => ({ code: -1, stdout: '', stderr: String(err) }));
  const cpuAfter = machineCpuTicks();
  const seconds = ((sink.lastMessageAt() ?? Date.now()) - started) / 1000;
  const problems: string[] = [];
  if (sent.code !== 0) problems.push(`smtp-source exited ${String(sent.code)}: ${(sent.stderr || sent.stdout).trim().split('\n').slice(-3).join(' ')}`);
  if (counted < c.messages) problems.push(`${c.messages - counted} of ${c.messages} messages did not reach the sink`);
  return {
    counted,
    expected: c.messages,
    seconds,
    rate: seconds > 0 ? counted / seconds : 0,
    // /proc/stat counts in USER_HZ (100 per second on Linux)
    cpuMsPerMessage: counted > 0 ? ((cpuAfter.busy - cpuBefore.busy) * 10) / counted : 0,
    ...(problems.length ? { problem: problems.join('; ') } : {}),
  };
}

/** Busy (non-idle, non-iowait) CPU ticks of the whole machine so far, from /proc/stat. */
function machineCpuTicks(): { busy: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = fields.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - (fields[3] ?? 0) - (fields[4] ?? 0) };
}

/** Samples VmRSS and reads VmHWM (the kernel's own peak) at the end; `stop()` returns the larger in MiB. */
function sampleRss(pid: number): { stop(): number } {
  let peakKiB = 0;
  let stopped = false;
  const read = () => {
    try {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      for (const key of ['VmRSS', 'VmHWM']) {
        const kib = Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
        peakKiB = Math.max(peakKiB, kib);
      }
    } catch {
      // the process is gone: keep what was seen
    }
  };
  const timer = setInterval(read, RSS_SAMPLE_MS);
  return {
    stop() {
      if (!stopped) {
        stopped = true;
        clearInterval(timer);
        read();
      }
      return peakKiB / 1024;
    },
  };
}
