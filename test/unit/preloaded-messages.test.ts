import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { QueueEnvelope } from '../../server/queue/envelope';
import { PreloadedMessages, type PreloadedMessage } from '../../server/queue/preloaded-messages';

/** A message whose bytes count their releases. */
function preloaded(id: string, bytes: number): PreloadedMessage & { releases: () => number } {
  let releases = 0;
  const message = { bytes: Buffer.alloc(bytes, 'x'), release: () => void releases++ };
  return { info: { envelope: { id } as QueueEnvelope, bodyOffset: 100, size: bytes }, message, releases: () => releases };
}

describe('messages kept in memory for their first attempt', () => {
  test('a kept message is found once: its info leaves it kept, take removes it', () => {
    const kept = new PreloadedMessages();
    const one = preloaded('A', 1024);
    kept.offer('A', one);
    assert.equal(kept.info('A'), one.info);
    assert.equal(kept.take('A'), one);
    assert.equal(kept.take('A'), undefined);
    assert.equal(kept.info('A'), undefined);
  });

  test('a message over 256 KiB is not kept (its attempt reads the file), and its bytes are released at once', () => {
    const kept = new PreloadedMessages();
    const big = preloaded('BIG', 256 * 1024 + 1);
    kept.offer('BIG', big);
    assert.equal(kept.take('BIG'), undefined);
    assert.equal(big.releases(), 1);
    kept.offer('EDGE', preloaded('EDGE', 256 * 1024));
    assert.ok(kept.take('EDGE'));
  });

  test('at most 4 MiB are kept at once, and a taken message frees its share', () => {
    const kept = new PreloadedMessages();
    for (let i = 0; i < 16; i++) kept.offer(`M${i}`, preloaded(`M${i}`, 256 * 1024));
    const over = preloaded('OVER', 1);
    kept.offer('OVER', over);
    assert.equal(kept.info('OVER'), undefined, 'the budget is full');
    assert.equal(over.releases(), 1, 'what is not kept is released');
    assert.ok(kept.take('M0'));
    kept.offer('NEXT', preloaded('NEXT', 256 * 1024));
    assert.ok(kept.info('NEXT'), 'room again after a take');
  });

  test("a taken message is the taker's to release; a dropped one is released once", () => {
    const kept = new PreloadedMessages();
    const taken = preloaded('T', 10);
    const dropped = preloaded('D', 10);
    kept.offer('T', taken);
    kept.offer('D', dropped);
    kept.take('T');
    kept.drop('D');
    kept.drop('D');
    kept.drop('NONE');
    assert.equal(taken.releases(), 0);
    assert.equal(dropped.releases(), 1);
    assert.equal(kept.info('D'), undefined);
  });

  test('a second offer for the same id is released, not kept over the first', () => {
    const kept = new PreloadedMessages();
    const first = preloaded('A', 10);
    const second = preloaded('A', 10);
    kept.offer('A', first);
    kept.offer('A', second);
    assert.equal(second.releases(), 1);
    assert.equal(kept.take('A'), first);
  });
});
