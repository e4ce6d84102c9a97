import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MessageSlabs, ownedBytes } from '../../server/queue/message-slabs';

describe('slabs for queue files between commit and delivery', () => {
  test('a lease is a view of the asked length on a slab of its own; a released slab is lent again, not made again', () => {
    const shown: number[] = [];
    const slabs = new MessageSlabs((slab, memory) => {
      assert.equal(memory?.byteLength, 1024);
      shown.push(slab);
    }, 1024, 4);
    const a = slabs.acquire(100)!;
    const b = slabs.acquire()!;
    assert.equal(a.bytes.length, 100);
    assert.equal(b.bytes.length, 1024, 'without a length, the whole slab');
    assert.notEqual(a.slab, b.slab);
    a.bytes.fill(1);
    b.bytes.fill(2);
    assert.ok(a.bytes.every((byte) => byte === 1), 'leases do not share memory');
    assert.deepEqual(slabs.counts, { made: 2, lent: 2 });
    a.release();
    const c = slabs.acquire(10)!;
    assert.equal(c.slab, a.slab);
    assert.deepEqual(shown, [0, 1], 'each slab is shown once, when it is made');
    assert.deepEqual(slabs.counts, { made: 2, lent: 2 });
  });

  test('a length over the slab size, or a pool whose slabs are all lent, gets no lease', () => {
    const slabs = new MessageSlabs(undefined, 1024, 2);
    assert.equal(slabs.acquire(1025), undefined);
    const held = [slabs.acquire()!, slabs.acquire()!];
    assert.equal(slabs.acquire(1), undefined);
    held[0]!.release();
    assert.ok(slabs.acquire(1));
  });

  test('releasing twice gives the slab back once', () => {
    const slabs = new MessageSlabs(undefined, 1024, 2);
    const lease = slabs.acquire()!;
    lease.release();
    lease.release();
    assert.deepEqual(slabs.counts, { made: 1, lent: 0 });
    const first = slabs.acquire()!;
    const second = slabs.acquire()!;
    assert.notEqual(first.slab, second.slab, 'a double release must not lend one slab twice');
  });

  test('owned bytes have nothing to give back', () => {
    const held = ownedBytes(Buffer.from('abc'));
    held.release();
    assert.equal(held.bytes.toString(), 'abc');
  });

  test('a trim frees the free slabs beyond the most lent at once since the last trim, and tells which', () => {
    const shown: Array<[number, boolean]> = [];
    const slabs = new MessageSlabs((slab, memory) => shown.push([slab, memory !== undefined]), 1024, 8);
    const busy = Array.from({ length: 5 }, () => slabs.acquire()!);
    for (const lease of busy.slice(2)) lease.release();
    assert.equal(slabs.trim(), 0, 'five were lent at once since the start: all five stay');
    assert.equal(slabs.trim(), 3, 'since the last trim at most two were lent: three go');
    assert.deepEqual(slabs.counts, { made: 2, lent: 2 });
    assert.deepEqual(shown.slice(5).map(([, kept]) => kept), [false, false, false]);
    // lent slabs are never trimmed, and a freed number is made again when needed
    assert.equal(slabs.trim(), 0);
    const again = [slabs.acquire()!, slabs.acquire()!];
    assert.ok(again.every((lease) => lease.slab < 5), 'numbers are reused');
    assert.deepEqual(shown.slice(8).map(([slab, kept]) => [slab < 5, kept]), [[true, true], [true, true]]);
    assert.ok(busy[0]!.bytes.length === 1024 && busy[1]!.bytes.length === 1024);
    assert.deepEqual(slabs.counts, { made: 4, lent: 4 });
  });
});

