import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { measureDiskSync } from '../../bench/disk-sync';

describe('bench: the disk sync calibration', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ownrelay-disk-sync-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('measures both rates on real files and leaves nothing behind', () => {
    const rates = measureDiskSync(dir, 100);
    for (const rate of [rates.newFilesPerSecond, rates.appendsPerSecond]) {
      assert.ok(Number.isFinite(rate) && rate > 0, `rate ${rate}`);
    }
    assert.deepEqual(readdirSync(dir), []);
  });

  test('a directory that cannot be written to is an error', () => {
    assert.throws(() => measureDiskSync(join(dir, 'missing'), 100), /ENOENT/);
    assert.deepEqual(readdirSync(dir), []);
  });
});
