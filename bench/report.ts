/**
 * The benchmark's output: a plain-text table for the terminal and a markdown
 * report (bench/last-results.md) that also says on what machine and how the
 * figures were measured, so that they can be compared later.
 */
import { bundleShebang } from '../server/runtime-flags';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import type { BenchCase } from './cases';
import type { DiskSyncRates } from './disk-sync';
import type { Measurement } from './measure';

/** One case, measured `rounds` times per MTA: relay[i] and postfix[i] ran one after the other. */
export interface ResultRow {
  benchCase: BenchCase;
  relay: Measurement[];
  postfix: Measurement[];
}

/** What the tables show of a row: medians over the rounds, so one slow minute of the machine does not decide. */
export interface RowSummary {
  relayRate: Spread;
  postfixRate: Spread;
  /** median of the rounds' relay/postfix rate ratios (each pair measured minutes apart) */
  ratio?: number;
  /** the largest peak of any round */
  peakRssMiB?: number;
  relayCpuMsPerMessage: number;
  postfixCpuMsPerMessage: number;
  /** see fullCpuRatio */
  fullCpuRatio?: number;
}

export interface Spread {
  median: number;
  min: number;
  max: number;
}

export function median(values: number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function spread(values: number[]): Spread {
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) };
}

export function summarize(row: ResultRow, nproc: number): RowSummary {
  const ratios = row.relay.flatMap((relay, i) => {
    const postfix = row.postfix[i];
    return postfix && postfix.rate > 0 ? [relay.rate / postfix.rate] : [];
  });
  const peaks = row.relay.flatMap((m) => (m.peakRssMiB === undefined ? [] : [m.peakRssMiB]));
  const postfixRate = spread(row.postfix.map((m) => m.rate));
  const relayCpuMsPerMessage = median(row.relay.map((m) => m.cpuMsPerMessage));
  return {
    relayRate: spread(row.relay.map((m) => m.rate)),
    postfixRate,
    ...(ratios.length ? { ratio: median(ratios) } : {}),
    ...(peaks.length ? { peakRssMiB: Math.max(...peaks) } : {}),
    relayCpuMsPerMessage,
    postfixCpuMsPerMessage: median(row.postfix.map((m) => m.cpuMsPerMessage)),
    ...(relayCpuMsPerMessage > 0 && postfixRate.median > 0 ? { fullCpuRatio: fullCpuRatio(relayCpuMsPerMessage, postfixRate.median, nproc) } : {}),
  };
}

/**
 * The ratio the relay would reach if its messages kept every CPU of the machine
 * busy at the CPU cost per message it was measured with, against Postfix's
 * measured rate: what more parallelism alone could give, at most.
 */
function fullCpuRatio(relayCpuMsPerMessage: number, postfixRate: number, nproc: number): number {
  return (nproc * 1000) / relayCpuMsPerMessage / postfixRate;
}

export interface MachineInfo {
  date: string;
  nproc: number;
  cpu: string;
  memory: string;
  node: string;
  postfix: string;
  spoolFilesystem: string;
  /** how fast the spool's disk makes writes durable, one at a time (see disk-sync.ts) */
  diskSync?: DiskSyncRates;
}

export function machineInfo(workDir: string): MachineInfo {
  return {
    date: new Date().toISOString(),
    nproc: availableParallelism(),
    cpu: /^model name\s*:\s*(.+)$/m.exec(safeRead('/proc/cpuinfo'))?.[1]?.trim() ?? 'unknown',
    memory: `${Math.round(Number(/^MemTotal:\s+(\d+) kB/m.exec(safeRead('/proc/meminfo'))?.[1] ?? 0) / 1024 / 1024)} GiB`,
    node: process.version,
    postfix: safeExec('/usr/sbin/postconf', ['-d', '-h', 'mail_version']),
    spoolFilesystem: filesystemType(workDir),
  };
}

const HEADERS = ['case', 'ownrelay msg/s', 'postfix msg/s', 'ratio', 'ownrelay peak RSS MiB', 'CPU ms/msg ownrelay', 'CPU ms/msg postfix', 'ratio at full CPU'];

function cells(row: ResultRow, nproc: number): string[] {
  const summary = summarize(row, nproc);
  const times = (x: number | undefined) => (x === undefined ? 'n/a' : `${x.toFixed(2)}x`);
  return [
    `${row.benchCase.name}, ${row.benchCase.messages} msgs`,
    rateCell(summary.relayRate, row.relay),
    rateCell(summary.postfixRate, row.postfix),
    times(summary.ratio),
    summary.peakRssMiB !== undefined ? summary.peakRssMiB.toFixed(0) : 'n/a',
    summary.relayCpuMsPerMessage.toFixed(2),
    summary.postfixCpuMsPerMessage.toFixed(2),
    times(summary.fullCpuRatio),
  ];
}

/** The median rate, its range over the rounds, and a mark when some message did not arrive. */
function rateCell(rate: Spread, measurements: Measurement[]): string {
  const range = measurements.length > 1 ? ` (${rate.min.toFixed(0)}-${rate.max.toFixed(0)})` : '';
  const lost = measurements.some((m) => m.counted < m.expected) ? ' [messages lost: see problems]' : '';
  return `${rate.median.toFixed(0)}${range}${lost}`;
}

export function textTable(rows: ResultRow[], nproc: number): string {
  const table = [HEADERS, ...rows.map((r) => cells(r, nproc))];
  const widths = HEADERS.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ');
  return [line(HEADERS), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map((r) => line(cells(r, nproc)))].join('\n');
}

export function problems(rows: ResultRow[]): string[] {
  const out: string[] = [];
  for (const row of rows) {
    const rounds = Math.max(row.relay.length, row.postfix.length);
    for (const [mta, measurements] of [['ownrelay', row.relay], ['postfix', row.postfix]] as const) {
      measurements.forEach((m, i) => {
        if (m.problem) out.push(`${row.benchCase.name}, ${mta}${rounds > 1 ? `, round ${i + 1}` : ''}: ${m.problem}`);
      });
    }
  }
  return out;
}

export function markdownReport(rows: ResultRow[], info: MachineInfo, relayMode: string, rounds: number): string {
  const row = (r: string[]) => `| ${r.join(' | ')} |`;
  const issues = problems(rows);
  return [
    '# Benchmark: ownrelay vs Postfix',
    '',
    `Measured ${info.date} by \`npm run bench\` (bench/run.ts).`,
    '',
    `- Machine: ${info.nproc} CPUs (\`nproc\`), ${info.cpu}, ${info.memory} RAM`,
    `- Node ${info.node}; ownrelay run ${relayMode}; Postfix ${info.postfix}`,
    `- Spool and Postfix queue on a \`${info.spoolFilesystem}\` file system${info.diskSync ? `; ${diskSyncText(info.diskSync)}` : ''}`,
    '',
    row(HEADERS),
    row(HEADERS.map((_, i) => (i === 0 ? '---' : '---:'))),
    ...rows.map((r) => row(cells(r, info.nproc))),
    '',
    '## Method',
    '',
    '- `smtp-source -s SESSIONS -m N -l SIZE` sends N messages, one message per connection (as Postfix\'s own figures are measured), to the MTA under test on 127.0.0.1.',
    '- ownrelay: its submission listener (no greeting delay), loopback in `relay.networks` so no AUTH, `delivery.routes` to the sink with `tls: none`, default delivery concurrency.',
    '- Postfix: a private instance with default settings except `relayhost = [127.0.0.1]:SINK` and no TLS.',
    `- Rounds: ${rounds} per case and MTA, one MTA after the other, the order swapped every round (the machine's speed drifts by a quarter or more within a day). A rate is the median of the rounds, with their range in brackets; the ratio is the median of the rounds' ratios; CPU per message is the median, peak RSS the largest of any round.`,
    '- Both pass every message on to a fresh `smtp-sink`. Each case first sends a warm-up batch of N messages that is not timed (the relay\'s JIT compiler settles over a few thousand messages); then rate = messages counted at the sink / seconds from the start of smtp-source to the last message at the sink.',
    '- The relay runs as the shipped bundle does on a server, with the settings of its `#!` line: `' + bundleShebang().slice(2) + ' dist/ownrelay.js` (with `--bundle`), or from the TypeScript sources with tsx.',
    '- Peak RSS: the larger of VmHWM at the end and VmRSS sampled every 100 ms, of the relay\'s process.',
    '- CPU ms/msg: busy CPU time of the whole machine (the MTA, smtp-source, smtp-sink and the kernel) during the timed phase, per message.',
    '- Ratio at full CPU: the relay\'s rate if its messages kept all CPUs busy at that CPU cost (CPUs x 1000 / CPU ms per message), divided by Postfix\'s measured rate. It is the most that more parallelism alone could give on this machine; beyond it only less CPU per message helps.',
    ...(issues.length ? ['', '## Problems', '', ...issues.map((p) => `- ${p}`)] : []),
    '',
  ].join('\n');
}

/**
 * The disk's sync rates in words. The goals were set where a new file with its
 * fsync cost about 1.8 ms (550/s), so that Postfix, which fsyncs each queue file,
 * was held near that rate and grouping the fsyncs of concurrent sessions was the
 * relay's lever; on a faster disk both MTAs are limited by CPU instead.
 */
export function diskSyncText(rates: DiskSyncRates): string {
  return `one at a time, a new 1 KiB file written and fsynced ${Math.round(rates.newFilesPerSecond)}/s, 1 KiB appended and fdatasynced ${Math.round(rates.appendsPerSecond)}/s`;
}

function safeRead(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** The file system type of `dir` as mounted (findmnt says ext4; stat -f only knows the family, "ext2/ext3"). */
function filesystemType(dir: string): string {
  const mounted = safeExec('findmnt', ['-n', '-o', 'FSTYPE', '--target', dir]);
  return mounted === 'unknown' || mounted === '' ? safeExec('stat', ['-f', '-c', '%T', dir]) : mounted;
}

function safeExec(file: string, args: string[]): string {
  try {
    return execFileSync(file, args, { encoding: 'utf8', timeout: 10_000 }).trim();
  } catch {
    return 'unknown';
  }
}
