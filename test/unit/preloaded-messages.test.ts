import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { QueueEnvelope } from '../../server/queue/envelope';
import { PreloadedMessages, type PreloadedMessage } from '../../server/queue/preloaded-messages';

function preloaded(id: string, bytes: number): PreloadedMessage {
  const message = Buffer.alloc(bytes, 'x');
  return { info: { envelope: { id } as QueueEnvelope, bodyOffset: 100, size: bytes }, message };
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

  test('a message over 256 KiB is not kept (its attempt reads the file)', () => {
    const kept = new PreloadedMessages();
    kept.offer('BIG', preloaded('BIG', 256 * 1024 + 1));
    assert.equal(kept.take('BIG'), undefined);
    kept.offer('EDGE', preloaded('EDGE', 256 * 1024));
    assert.ok(kept.take('EDGE'));
  });

  test('at most 4 MiB are kept at once, and a taken message frees its share', () => {
    const kept = new PreloadedMessages();
    for (let i = 0; i < 16; i++) kept.offer(`M${i}`, preloaded(`M${i}`, 256 * 1024));
    kept.offer('OVER', preloaded('OVER', 1));
    assert.equal(kept.info('OVER'), undefined, 'the budget is full');
    assert.ok(kept.take('M0'));
    kept.offer('NEXT', preloaded('NEXT', 256 * 1024));
    assert.ok(kept.info('NEXT'), 'room again after a take');
  });
});
