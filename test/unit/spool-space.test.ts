/**
 * SpoolSpace: when a free-space measurement may be reused, and when MAIL FROM
 * must measure afresh. The file system itself is measured for real in the last
 * test; the full-disk behaviour end to end is in spool-full.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { REUSE_HEADROOM_BYTES, REUSE_MS, SpoolSpace, freeBytes } from '../../server/queue/spool-space';

const MiB = 1024 * 1024;

/** A SpoolSpace over a file system whose free space and clock the test sets; counts measurements. */
function gauge(initialFree: number | undefined) {
  const state = { free: initialFree, now: 1_000_000, measurements: 0 };
  const space = new SpoolSpace(
    '/spool',
    () => {
      state.measurements++;
      return state.free;
    },
    () => state.now,
  );
  return { space, state };
}

test('a measurement far above the limit is reused within a second, then taken again', () => {
  const { space, state } = gauge(10_000 * MiB);
  for (let i = 0; i < 5; i++) assert.deepEqual(space.roomForMessage(100 * MiB, 0), { room: true });
  assert.equal(state.measurements, 1);
  state.now += REUSE_MS;
  state.free = 50 * MiB;
  assert.deepEqual(space.roomForMessage(100 * MiB, 0), { room: false, freeBytes: 50 * MiB, neededBytes: 100 * MiB });
  assert.equal(state.measurements, 2);
});

test('near the limit every message measures afresh, so a filling disk is noticed at once', () => {
  const { space, state } = gauge(100 * MiB + REUSE_HEADROOM_BYTES - 1);
  assert.deepEqual(space.roomForMessage(100 * MiB, 0), { room: true });
  state.free = 99 * MiB;
  assert.deepEqual(space.roomForMessage(100 * MiB, 0), { room: false, freeBytes: 99 * MiB, neededBytes: 100 * MiB });
  assert.equal(state.measurements, 2);
});

test('a large declared SIZE counts against the headroom of a reused measurement', () => {
  const { space, state } = gauge(100 * MiB + REUSE_HEADROOM_BYTES + 10 * MiB);
  assert.deepEqual(space.roomForMessage(100 * MiB, 0), { room: true });
  state.free = 100 * MiB;
  // 20 MiB declared: the measurement has less than the headroom to spare, so it is taken again
  assert.deepEqual(space.roomForMessage(100 * MiB, 20 * MiB), { room: false, freeBytes: 100 * MiB, neededBytes: 120 * MiB });
  assert.equal(state.measurements, 2);
});

test('a clock that went back does not extend a measurement', () => {
  const { space, state } = gauge(10_000 * MiB);
  space.roomForMessage(100 * MiB, 0);
  state.now -= 10;
  space.roomForMessage(100 * MiB, 0);
  assert.equal(state.measurements, 2);
});

test('a spool that cannot be measured lets mail in, and is tried again each time', () => {
  const { space, state } = gauge(undefined);
  assert.deepEqual(space.roomForMessage(100 * MiB, 0), { room: true });
  assert.deepEqual(space.roomForMessage(100 * MiB, 0), { room: true });
  assert.equal(state.measurements, 2);
});

test('with no minimum and no declared size nothing is measured', () => {
  const { space, state } = gauge(0);
  assert.deepEqual(space.roomForMessage(0, 0), { room: true });
  assert.equal(state.measurements, 0);
});

test('freeBytes measures a real file system, and names none for a missing path', () => {
  const free = freeBytes(tmpdir());
  assert.ok(typeof free === 'number' && free > 0);
  assert.equal(freeBytes('/nonexistent/spool/dir'), undefined);
  assert.deepEqual(new SpoolSpace(tmpdir()).roomForMessage(1, 0), { room: true });
  assert.equal(new SpoolSpace(tmpdir()).roomForMessage(free * 4, 0).room, false);
});
