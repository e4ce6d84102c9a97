/**
 * Messages written from slabs (queue/message-slabs.ts), on a real spool: every
 * file holds exactly its own message, delivery gets the same bytes, and every
 * slab comes back, whichever way a message ends.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { silentLogger } from '../../server/log/logger';
import { SLAB_BYTES } from '../../server/queue/message-slabs';
import { readQueueFile } from '../../server/queue/queue-file';
import { newQueueId } from '../../server/queue/queue-id';
import { Spool } from '../../server/queue/spool';
import type { QueueEnvelope } from '../../server/queue/envelope';
import { filesIn } from '../helpers/spool-files';

function envelope(): QueueEnvelope {
  return {
    version: 1,
    id: newQueueId(),
    receivedAt: Date.now(),
    from: 'sender@elsewhere.test',
    recipients: [{ address: 'alice@relay.test', status: 'pending' }],
    attempts: 0,
    client: { address: '127.0.0.1', helo: 'client.test', listener: 'test' },
  };
}

/** Writes `message` in chunks of `chunkBytes` and commits it; resolves with the bytes found in its queue file. */
async function queue(spool: Spool, message: Buffer, chunkBytes: number): Promise<{ onDisk: Buffer; writer: Awaited<ReturnType<Spool['beginMessage']>> }> {
  const writer = await spool.beginMessage(envelope());
  for (let at = 0; at < message.length; at += chunkBytes) await writer.writeChunk(message.subarray(at, at + chunkBytes));
  const path = spool.pathOf(await writer.commit());
  const info = await readQueueFile(path);
  return { onDisk: (await readFile(path)).subarray(info.bodyOffset), writer };
}

describe('messages written from slabs', () => {
  let dir: string;
  let spool: Spool;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ownrelay-slabs-'));
    spool = await Spool.open(dir, silentLogger());
  });

  after(async () => {
    await spool.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('a message that fits is written from its slab, delivery gets the same bytes, and the slab comes back once released', async () => {
    const message = randomBytes(100 * 1024);
    const { onDisk, writer } = await queue(spool, message, 7 * 1024);
    assert.ok(onDisk.equals(message), 'the queue file holds the message');
    assert.deepEqual(spool.io.slabs.counts.lent, 1, 'the slab is kept for delivery');
    const kept = writer.takeCommittedMessage();
    assert.ok(kept && kept.bytes.equals(message), 'delivery gets the same bytes');
    assert.equal(writer.takeCommittedMessage(), undefined, 'they are taken once');
    kept.release();
    assert.equal(spool.io.slabs.counts.lent, 0);
  });

  test('a message that outgrows its slab moves out of it with every byte, and the slab comes back at once', async () => {
    const message = randomBytes(SLAB_BYTES + 50 * 1024);
    const { onDisk, writer } = await queue(spool, message, 10 * 1024);
    assert.ok(onDisk.equals(message));
    assert.equal(spool.io.slabs.counts.lent, 0);
    assert.equal(writer.takeCommittedMessage(), undefined, 'a message written to disk in pieces is read back for delivery');
  });

  test('an aborted message and a commit that fails give their slab back, and leave no file', async () => {
    const aborted = await spool.beginMessage(envelope());
    await aborted.writeChunk(Buffer.from('Subject: never\r\n\r\n'));
    assert.equal(spool.io.slabs.counts.lent, 1);
    await aborted.abort();
    assert.equal(spool.io.slabs.counts.lent, 0);

    const failing = await spool.beginMessage(envelope());
    await failing.writeChunk(Buffer.from('Subject: no room\r\n\r\n'));
    // the spool's tmp/ is gone: the thread cannot create the file
    await rm(join(dir, 'tmp'), { recursive: true });
    try {
      await assert.rejects(failing.commit(), /ENOENT/);
    } finally {
      await mkdir(join(dir, 'tmp'), { mode: 0o700 });
    }
    assert.equal(spool.io.slabs.counts.lent, 0);
    assert.equal(failing.takeCommittedMessage(), undefined);
    assert.deepEqual(await filesIn(join(dir, 'tmp')), []);
  });

  test('many messages at once each get their own bytes; released slabs are reused rather than made anew', async () => {
    const messages = Array.from({ length: 60 }, (_, i) => randomBytes(1024 + i * 997));
    const queued = await Promise.all(messages.map((message) => queue(spool, message, 4096)));
    queued.forEach(({ onDisk, writer }, i) => {
      assert.ok(onDisk.equals(messages[i]!), `message ${i} on disk`);
      const kept = writer.takeCommittedMessage()!;
      assert.ok(kept.bytes.equals(messages[i]!), `message ${i} for delivery`);
      kept.release();
    });
    const made = spool.io.slabs.counts.made;
    for (let i = 0; i < 30; i++) (await queue(spool, randomBytes(2048), 512)).writer.takeCommittedMessage()!.release();
    assert.equal(spool.io.slabs.counts.made, made, 'one message at a time needs no new slab');
    assert.equal(spool.io.slabs.counts.lent, 0);
  });

  test('after a trim, slabs made again under old numbers reach the spool thread: files hold their own bytes', async () => {
    const lent = Array.from({ length: 6 }, () => spool.io.slabs.acquire()!);
    for (const lease of lent) lease.release();
    spool.io.slabs.trim();
    spool.io.slabs.trim();
    assert.equal(spool.io.slabs.counts.made, 0);
    const messages = Array.from({ length: 6 }, (_, i) => randomBytes(5000 + i));
    const queued = await Promise.all(messages.map((message) => queue(spool, message, 1000)));
    queued.forEach(({ onDisk, writer }, i) => {
      assert.ok(onDisk.equals(messages[i]!), `message ${i}`);
      writer.takeCommittedMessage()!.release();
    });
  });

  test('a complete message queued at once (a bounce) gives its slab back', async () => {
    const entry = await spool.enqueue(envelope(), Buffer.from('Subject: bounce\r\n\r\nreport\r\n'));
    assert.equal(spool.io.slabs.counts.lent, 0);
    assert.equal((await readFile(spool.pathOf(entry))).subarray((await readQueueFile(spool.pathOf(entry))).bodyOffset).toString(), 'Subject: bounce\r\n\r\nreport\r\n');
  });

  test('with every slab lent, a message is kept in memory of its own, and its bytes are still exact', async () => {
    const lent = [];
    for (let lease = spool.io.slabs.acquire(); lease; lease = spool.io.slabs.acquire()) lent.push(lease);
    const message = randomBytes(30 * 1024);
    const { onDisk, writer } = await queue(spool, message, 3000);
    assert.ok(onDisk.equals(message));
    const kept = writer.takeCommittedMessage();
    assert.ok(kept && kept.bytes.equals(message));
    assert.ok(!(kept.bytes.buffer instanceof SharedArrayBuffer), 'not on a slab');
    for (const lease of lent) lease.release();
  });
});
