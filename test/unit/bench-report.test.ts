import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DEFAULT_ROUNDS, benchCases, parseArgs } from '../../bench/cases';
import type { Measurement } from '../../bench/measure';
import { markdownReport, median, problems, summarize, textTable, type MachineInfo, type ResultRow } from '../../bench/report';

function measured(rate: number, extra: Partial<Measurement> = {}): Measurement {
  return { counted: 100, expected: 100, seconds: 100 / rate, rate, cpuMsPerMessage: 2000 / rate, ...extra };
}

const [oneKiB50] = benchCases({ rounds: 3, bundle: true }).filter((c) => c.sessions === 50 && c.size === 1024);

describe('bench arguments', () => {
  test('measure three rounds by default, and take --rounds N or --rounds=N', () => {
    assert.equal(parseArgs([]).rounds, DEFAULT_ROUNDS);
    assert.equal(DEFAULT_ROUNDS, 3);
    assert.equal(parseArgs(['--rounds', '5']).rounds, 5);
    assert.deepEqual(parseArgs(['--rounds=1', '--messages', '200', '--bundle']), { rounds: 1, messages: 200, bundle: true });
  });

  test('refuse a round count that is not a whole number from 1 to 20, saying how to call it', () => {
    for (const bad of [['--rounds', '0'], ['--rounds', '2.5'], ['--rounds', '21'], ['--rounds'], ['--rounds=']]) {
      assert.throws(() => parseArgs(bad), /--rounds needs a whole number from 1 to 20[\s\S]*usage: npm run bench/, bad.join(' '));
    }
  });
});

describe('bench summary', () => {
  test('median of odd and even counts', () => {
    assert.equal(median([3, 1, 2]), 2);
    assert.equal(median([4, 1, 3, 2]), 2.5);
    assert.equal(median([]), 0);
  });

  test('rates are medians of the rounds, the ratio the median of the paired rounds, the peak the largest', () => {
    const row: ResultRow = {
      benchCase: oneKiB50!,
      relay: [measured(1000, { peakRssMiB: 101 }), measured(1300, { peakRssMiB: 120 }), measured(1100, { peakRssMiB: 99 })],
      // round 2's Postfix was fast too: the pair's ratio stays modest even though the relay's best round was that one
      postfix: [measured(500), measured(1000), measured(600)],
    };
    const summary = summarize(row, 2);
    assert.deepEqual(summary.relayRate, { median: 1100, min: 1000, max: 1300 });
    assert.deepEqual(summary.postfixRate, { median: 600, min: 500, max: 1000 });
    // ratios per round: 2.0, 1.3 and 1.83: the median is round 3's
    assert.ok(Math.abs(summary.ratio! - 1100 / 600) < 1e-9);
    assert.equal(summary.peakRssMiB, 120);
    assert.ok(Math.abs(summary.relayCpuMsPerMessage - 2000 / 1100) < 1e-9);
    // two CPUs at the relay's median CPU cost, against Postfix's median rate
    assert.ok(Math.abs(summary.fullCpuRatio! - (2 * 1000) / (2000 / 1100) / 600) < 1e-9);
  });

  test('the ratio is the median of the paired ratios, not the ratio of the medians', () => {
    const row: ResultRow = { benchCase: oneKiB50!, relay: [measured(900), measured(1000), measured(1200)], postfix: [measured(300), measured(900), measured(1000)] };
    // per round 3.0, 1.11, 1.2 -> 1.2; the medians' ratio would be 1000 / 900 = 1.11
    assert.ok(Math.abs(summarize(row, 2).ratio! - 1.2) < 1e-9);
  });

  test('tables show the median, the range of the rounds, and a mark when messages were lost; problems name the round', () => {
    const row: ResultRow = {
      benchCase: oneKiB50!,
      relay: [measured(1000, { peakRssMiB: 100 }), measured(1200, { peakRssMiB: 110, counted: 95, problem: '5 of 100 messages did not reach the sink' })],
      postfix: [measured(500), measured(700)],
    };
    const table = textTable([row], 2);
    assert.match(table, /1 KiB x 50 sessions, 5000 msgs\s+1100 \(1000-1200\) \[messages lost: see problems\]\s+600 \(500-700\)\s+1\.86x\s+110\b/);
    assert.deepEqual(problems([row]), ['1 KiB x 50 sessions, ownrelay, round 2: 5 of 100 messages did not reach the sink']);

    const info: MachineInfo = { date: '2026-11-29T00:00:00.000Z', nproc: 2, cpu: 'test CPU', memory: '1 GiB', node: 'v20', postfix: '3.7', spoolFilesystem: 'ext4', diskSync: { newFilesPerSecond: 3096.6, appendsPerSecond: 4541.2 } };
    const report = markdownReport([row], info, 'from dist/ownrelay.js', 2);
    assert.match(report, /\| 1 KiB x 50 sessions, 5000 msgs \| 1100 \(1000-1200\) \[messages lost: see problems\] \| 600 \(500-700\) \| 1\.86x \|/);
    assert.match(report, /Rounds: 2 per case and MTA/);
    assert.match(report, /on a `ext4` file system; one at a time, a new 1 KiB file written and fsynced 3097\/s, 1 KiB appended and fdatasynced 4541\/s/);
    assert.match(report, /## Problems\n\n- 1 KiB x 50 sessions, ownrelay, round 2: 5 of 100/);
  });

  test('a single round shows no range', () => {
    const row: ResultRow = { benchCase: oneKiB50!, relay: [measured(1000)], postfix: [measured(500)] };
    assert.match(textTable([row], 2), /5000 msgs\s+1000\s+500\s+2\.00x/);
    assert.deepEqual(problems([row]), []);
  });
});
