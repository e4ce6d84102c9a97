/**
 * `npm run bench [-- --messages N] [-- --rounds N] [-- --bundle]`: end-to-end
 * throughput of the relay against Postfix on this machine, for 1 KiB and 100 KiB
 * messages with 1 and 50 concurrent sessions, plus the relay's peak memory. Each
 * case is measured in rounds that alternate the two MTAs (which goes first swaps
 * every round), and the tables show medians.
 *
 * Needs root and the Debian package postfix (for postfix, smtp-source and
 * smtp-sink). Talks only to 127.0.0.1. Prints a table and writes it with the
 * machine's description (its disk's sync rates among it) to bench/last-results.md. Every process it starts is
 * stopped and every directory removed, also on failure or Ctrl-C.
 */
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { postfixAvailable } from '../test/helpers/postfix';
import { PROJECT_ROOT, removeDir, writeTempDir } from '../test/helpers/relay-process';
import { benchCases, parseArgs } from './cases';
import { measurePostfix, measureRelay } from './measure';
import { measureDiskSync } from './disk-sync';
import { diskSyncText, machineInfo, markdownReport, problems, textTable, type ResultRow } from './report';

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('the benchmark runs private Postfix instances and smtp-sink, which need root');
  if (!postfixAvailable()) throw new Error('install the Debian package postfix (postfix, smtp-source, smtp-sink); see .ci/run');
  if (args.bundle && !existsSync(join(PROJECT_ROOT, 'dist', 'ownrelay.js'))) throw new Error('dist/ownrelay.js is missing: run `npm run bundle` first');

  // On the project's own disk, not the system temp dir (often tmpfs): fsync must cost what it costs.
  const parent = join(PROJECT_ROOT, '.cache', 'bench');
  mkdirSync(parent, { recursive: true, mode: 0o755 });
  const workDir = writeTempDir('run', parent);
  // Postfix's daemons run as the postfix user and must reach their queue below it.
  chmodSync(workDir, 0o755);
  const cleanup = () => removeDir(workDir);
  process.once('SIGINT', () => {
    cleanup();
    process.exit(130);
  });

  try {
    const info = { ...machineInfo(workDir), diskSync: measureDiskSync(workDir) };
    const relayMode = args.bundle ? 'from dist/ownrelay.js' : 'from the TypeScript sources (tsx)';
    console.log(`ownrelay vs Postfix on ${info.nproc} CPUs (${info.cpu}); ownrelay ${relayMode}; spool on ${info.spoolFilesystem}; ${args.rounds} round(s)`);
    console.log(`disk: ${diskSyncText(info.diskSync)}\n`);
    const rows: ResultRow[] = [];
    for (const benchCase of benchCases(args)) {
      const row: ResultRow = { benchCase, relay: [], postfix: [] };
      for (let round = 0; round < args.rounds; round++) {
        process.stdout.write(`${benchCase.name}, ${benchCase.messages} messages${args.rounds > 1 ? `, round ${round + 1}` : ''}:`);
        const measureOne = {
          ownrelay: async () => row.relay.push(await measureRelay(benchCase, { workDir, bundle: args.bundle })),
          postfix: async () => row.postfix.push(await measurePostfix(benchCase, { workDir })),
        };
        for (const mta of round % 2 === 0 ? (['ownrelay', 'postfix'] as const) : (['postfix', 'ownrelay'] as const)) {
          process.stdout.write(` ${mta} ... `);
          await measureOne[mta]();
          const latest = mta === 'ownrelay' ? row.relay.at(-1)! : row.postfix.at(-1)!;
          process.stdout.write(`${latest.rate.toFixed(0)} msg/s;`);
        }
        console.log('');
      }
      rows.push(row);
    }
    console.log(`\n${textTable(rows, info.nproc)}`);
    for (const p of problems(rows)) console.log(`problem: ${p}`);
    const reportFile = join(PROJECT_ROOT, 'bench', 'last-results.md');
    writeFileSync(reportFile, markdownReport(rows, info, relayMode, args.rounds));
    console.log(`\nwritten to ${reportFile}`);
  } finally {
    cleanup();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : String(err));
    process.exit(1);
  },
);
