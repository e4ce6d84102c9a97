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
import type { Measurement } from './measure';

export interface ResultRow {
  benchCase: BenchCase;
  relay: Measurement;
  postfix: Measurement;
}

export interface MachineInfo {
  date: string;
  nproc: number;
  cpu: string;
  memory: string;
  node: string;
  postfix: string;
  spoolFilesystem: string;
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
  const ratio = row.postfix.rate > 0 ? `${(row.relay.rate / row.postfix.rate).toFixed(2)}x` : 'n/a';
  return [
    `${row.benchCase.name}, ${row.benchCase.messages} msgs`,
    rateCell(row.relay),
    rateCell(row.postfix),
    ratio,
    row.relay.peakRssMiB !== undefined ? row.relay.peakRssMiB.toFixed(0) : 'n/a',
    row.relay.cpuMsPerMessage.toFixed(2),
    row.postfix.cpuMsPerMessage.toFixed(2),
    fullCpuRatio(row, nproc),
  ];
}

/**
 * The ratio the relay would reach if its messages kept every CPU of the machine
 * busy at the CPU cost per message it was measured with, against Postfix's
 * measured rate: what more parallelism alone could give, at most.
 */
function fullCpuRatio(row: ResultRow, nproc: number): string {
  if (row.relay.cpuMsPerMessage <= 0 || row.postfix.rate <= 0) return 'n/a';
  return `${((nproc * 1000) / row.relay.cpuMsPerMessage / row.postfix.rate).toFixed(2)}x`;
}

/** A rate, marked with the count when not every message arrived. */
function rateCell(m: Measurement): string {
  const rate = m.rate.toFixed(0);
  return m.counted < m.expected ? `${rate} (${m.counted}/${m.expected} arrived)` : rate;
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
    if (row.relay.problem) out.push(`${row.benchCase.name}, ownrelay: ${row.relay.problem}`);
    if (row.postfix.problem) out.push(`${row.benchCase.name}, postfix: ${row.postfix.problem}`);
  }
  return out;
}

export function markdownReport(rows: ResultRow[], info: MachineInfo, relayMode: string): string {
  const row = (r: string[]) => `| ${r.join(' | ')} |`;
  const issues = problems(rows);
  return [
    '# Benchmark: ownrelay vs Postfix',
    '',
    `Measured ${info.date} by \`npm run bench\` (bench/run.ts).`,
    '',
    `- Machine: ${info.nproc} CPUs (\`nproc\`), ${info.cpu}, ${info.memory} RAM`,
    `- Node ${info.node}; ownrelay run ${relayMode}; Postfix ${info.postfix}`,
    `- Spool and Postfix queue on a \`${info.spoolFilesystem}\` file system`,
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
    '- Both pass every message on to a fresh `smtp-sink`. Each case first sends a warm-up batch of N messages that is not timed (the relay\'s JIT compiler settles over a few thousand messages); then rate = messages counted at the sink / seconds from the start of smtp-source to the last message at the sink.',
    '- The relay runs as the shipped bundle does on a server, with the settings of its `#!` line: `' + bundleShebang().slice(2) + ' dist/ownrelay.js` (with `--bundle`), or from the TypeScript sources with tsx.',
    '- Peak RSS: the larger of VmHWM at the end and VmRSS sampled every 100 ms, of the relay\'s process.',
    '- CPU ms/msg: busy CPU time of the whole machine (the MTA, smtp-source, smtp-sink and the kernel) during the timed phase, per message.',
    '- Ratio at full CPU: the relay\'s rate if its messages kept all CPUs busy at that CPU cost (CPUs x 1000 / CPU ms per message), divided by Postfix\'s measured rate. It is the most that more parallelism alone could give on this machine; beyond it only less CPU per message helps.',
    ...(issues.length ? ['', '## Problems', '', ...issues.map((p) => `- ${p}`)] : []),
    '',
  ].join('\n');
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
