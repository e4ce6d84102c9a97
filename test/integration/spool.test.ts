/**
 * The spool's contracts, checked on a real directory: a 250 only after the file is
 * in incoming/; an I/O error answers 451 and leaves nothing half-written; an
 * unreadable file goes to corrupt/ without stopping the relay; messages that were
 * being delivered when the process died are delivered after a restart.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, mkdir, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../server/log/logger';
import { CorruptQueueFile, encodeHeader, readQueueFile } from '../../server/queue/queue-file';
import { newQueueId } from '../../server/queue/queue-id';
import { Spool } from '../../server/queue/spool';
import type { QueueEnvelope } from '../../server/queue/envelope';
import { SmtpDialog } from '../helpers/smtp-dialog';
import { filesIn, spoolCounts, waitFor } from '../helpers/spool-files';
import { startTestRelay } from '../helpers/test-relay';

function envelopeFor(to: string): QueueEnvelope {
  return {
    version: 1,
    id: newQueueId(),
    receivedAt: Date.now(),
    from: 'sender@elsewhere.test',
    recipients: [{ address: to, status: 'pending' }],
    attempts: 0,
    client: { address: '127.0.0.1', helo: 'client.test', listener: 'test' },
  };
}

async function sendOne(port: number, body = 'Subject: t\r\n\r\nhello\r\n'): Promise<string> {
  const dialog = await SmtpDialog.connect(port);
  await dialog.read();
  await dialog.command('EHLO client.test');
  await dialog.command('MAIL FROM:<sender@elsewhere.test>');
  await dialog.command('RCPT TO:<alice@relay.test>');
  await dialog.command('DATA');
  dialog.write(`${body}.\r\n`);
  const reply = await dialog.read();
  dialog.close();
  return reply.text;
}

test('a committed message is in incoming/ with its envelope and exact bytes; an aborted one leaves nothing', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ownrelay-spool-'));
  try {
    const spool = await Spool.open(dir, silentLogger());
    const envelope = envelopeFor('alice@relay.test');
    const writer = await spool.beginMessage(envelope);
    await writer.writeChunk(Buffer.from('Subject: a\r\n\r\n'));
    await writer.writeChunk(Buffer.from('.leading dot\r\n'));
    const entry = await writer.commit();
    assert.deepEqual(await filesIn(join(dir, 'incoming')), [envelope.id]);
    const info = await readQueueFile(spool.pathOf(entry));
    assert.deepEqual(info.envelope, envelope);
    const raw = await readFile(spool.pathOf(entry));
    assert.equal(raw.subarray(info.bodyOffset).toString(), 'Subject: a\r\n\r\n.leading dot\r\n');

    const aborted = await spool.beginMessage(envelopeFor('bob@relay.test'));
    await aborted.writeChunk(Buffer.from('partial'));
    await aborted.abort();
    assert.deepEqual(await spoolCounts(dir), { tmp: 0, incoming: 1, active: 0, deferred: 0, hold: 0, corrupt: 0 });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a queue file records the size of its message, so one cut short or appended to is corrupt, in memory and on disk alike', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ownrelay-spool-size-'));
  try {
    const spool = await Spool.open(dir, silentLogger());
    // 20 bytes: committed from memory; 600 KiB in 1 KiB chunks: flushed to disk as it arrives
    for (const [chunks, chunk] of [[1, Buffer.from('Subject: s\r\n\r\nhi\r\n')], [600, Buffer.alloc(1024, 'x')]] as const) {
      const envelope = envelopeFor('alice@relay.test');
      const writer = await spool.beginMessage(envelope);
      for (let i = 0; i < chunks; i++) await writer.writeChunk(chunk);
      const path = spool.pathOf(await writer.commit());
      const info = await readQueueFile(path);
      assert.equal(info.size, chunks * chunk.length);
      assert.equal(info.envelope.size, info.size);

      await truncate(path, info.bodyOffset + info.size - 1);
      await assert.rejects(readQueueFile(path), (err: Error) => err instanceof CorruptQueueFile && /is \d+ bytes but was \d+ when queued \(truncated\)/.test(err.message));
      await appendFile(path, 'xy');
      await assert.rejects(readQueueFile(path), /\(appended to\)/);
    }
    // a file written before the size was recorded is read as before
    const old = envelopeFor('alice@relay.test');
    await writeFile(join(dir, 'incoming', old.id), Buffer.concat([encodeHeader(old), Buffer.from('hello\r\n')]));
    assert.equal((await readQueueFile(join(dir, 'incoming', old.id))).size, 7);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('an envelope whose added fields or size have the wrong shape is corrupt, not delivered', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ownrelay-spool-shape-'));
  try {
    const bad = [{ size: -1 }, { size: '7' }, { headers: 5 }, { insertedHeaders: 'Date: x' }, { insertedHeaders: { at: -1, text: 'x' } }, { insertedHeaders: { at: 3 } }];
    for (const fields of bad) {
      const path = join(dir, newQueueId());
      await writeFile(path, Buffer.concat([encodeHeader({ ...envelopeFor('alice@relay.test'), ...fields } as unknown as QueueEnvelope), Buffer.from('hello\r\n')]));
      await assert.rejects(readQueueFile(path), /envelope fields missing or of the wrong type/, JSON.stringify(fields));
    }
    const good = join(dir, newQueueId());
    await writeFile(good, Buffer.concat([encodeHeader({ ...envelopeFor('alice@relay.test'), size: 7, headers: 'A: b\r\n', insertedHeaders: { at: 0, text: 'C: d\r\n' } }), Buffer.from('hello\r\n')]));
    assert.equal((await readQueueFile(good)).envelope.insertedHeaders?.text, 'C: d\r\n');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('an envelope update on disk that fits always leaves room for the size commit adds', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ownrelay-spool-room-'));
  try {
    const spool = await Spool.open(dir, silentLogger());
    const reserve = 64;
    let fitted = 0;
    let refused = 0;
    for (let length = 0; length <= reserve + 48; length += 4) {
      const envelope = envelopeFor('alice@relay.test');
      const writer = await spool.beginMessage(envelope, reserve);
      await writer.writeChunk(Buffer.alloc(300 * 1024, 'y')); // on disk before the update
      envelope.headers = `X-Checked: ${'z'.repeat(length)}\r\n`;
      try {
        await writer.updateEnvelope(envelope);
      } catch (err) {
        assert.match(String(err), /outgrew the room reserved for it/);
        await writer.abort();
        refused++;
        continue;
      }
      const info = await readQueueFile(spool.pathOf(await writer.commit()));
      assert.equal(info.envelope.headers, envelope.headers);
      assert.equal(info.envelope.size, 300 * 1024);
      fitted++;
    }
    assert.ok(fitted > 0 && refused > 0, `fitted ${fitted}, refused ${refused}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('when the spool cannot take the message, DATA gets 451 4.3.0 and no partial file remains', async () => {
  const relay = await startTestRelay();
  try {
    const incoming = join(relay.dir, 'spool', 'incoming');
    // make the final rename fail: incoming/ becomes a plain file
    await rm(incoming, { recursive: true });
    await writeFile(incoming, 'not a directory');
    assert.match(await sendOne(relay.ports[0]!), /^451 4\.3\.0 /);
    assert.deepEqual(await filesIn(join(relay.dir, 'spool', 'tmp')), []);
    await rm(incoming);
    await mkdir(incoming);
    assert.match(await sendOne(relay.ports[0]!), /^250 2\.0\.0 Ok: queued as /);
  } finally {
    await relay.stop();
  }
});

test('an unreadable queue file is moved to corrupt/ with a log line, and the relay goes on delivering', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ownrelay-corrupt-'));
  try {
    const spool = await Spool.open(join(dir, 'spool'), silentLogger());
    const garbageId = newQueueId();
    const truncatedId = newQueueId();
    await writeFile(join(spool.dir, 'incoming', garbageId), 'this is not a queue file\r\n');
    const header = encodeHeader(envelopeFor('alice@relay.test'));
    await writeFile(join(spool.dir, 'deferred', `${Date.now() - 1000}.${truncatedId}`), header.subarray(0, header.length - 20));
    // a whole envelope, but the message is shorter than it was when queued
    const cutShort = { ...envelopeFor('alice@relay.test'), size: 40 };
    await writeFile(join(spool.dir, 'deferred', `${Date.now() - 1000}.${cutShort.id}`), Buffer.concat([encodeHeader(cutShort), Buffer.from('Subject: cut\r\n\r\nhal')]));
    const relay = await startTestRelay(() => ({}), { dir });
    try {
      await relay.waitForLog((l) => l.event === 'corrupt' && l.queueId === garbageId);
      await relay.waitForLog((l) => l.event === 'corrupt' && l.queueId === truncatedId);
      const cut = await relay.waitForLog((l) => l.event === 'corrupt' && l.queueId === cutShort.id);
      assert.match(JSON.stringify(cut), /truncated/);
      const corrupt = await filesIn(join(spool.dir, 'corrupt'));
      assert.equal(corrupt.length, 3);
      assert.ok(corrupt.some((name) => name.startsWith(garbageId)));
      assert.match(await sendOne(relay.ports[0]!), /^250 /);
      await relay.waitForLog((l) => l.event === 'delivered');
      // the file is removed just after the delivery is logged
      await waitFor(async () => (await spoolCounts(spool.dir)).incoming === 0);
      const counts = await spoolCounts(spool.dir);
      assert.deepEqual(counts, { tmp: 0, incoming: 0, active: 0, deferred: 0, hold: 0, corrupt: 3 });
    } finally {
      await relay.stop();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('messages left in active/ and tmp/ by a crash: the first are delivered after restart, the second removed', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ownrelay-recover-'));
  try {
    const spool = await Spool.open(join(dir, 'spool'), silentLogger());
    const envelope = envelopeFor('alice@relay.test');
    const writer = await spool.beginMessage(envelope);
    await writer.writeChunk(Buffer.from('Subject: in flight\r\n\r\nbody\r\n'));
    const entry = await writer.commit();
    await spool.move(entry, 'active');
    await writeFile(join(spool.dir, 'tmp', newQueueId()), 'half a message that never got a 250');
    const relay = await startTestRelay(() => ({}), { dir });
    try {
      await relay.waitForLog((l) => l.event === 'delivered' && l.queueId === envelope.id);
      const mailbox = join(dir, 'mail', 'relay.test', 'alice', 'new');
      const files = await waitFor(async () => ((await filesIn(mailbox)).length === 1 ? filesIn(mailbox) : undefined));
      assert.match(await readFile(join(mailbox, files[0]!), 'utf8'), /Subject: in flight/);
      await waitFor(async () => (await spoolCounts(spool.dir)).incoming === 0);
      assert.deepEqual(await spoolCounts(spool.dir), { tmp: 0, incoming: 0, active: 0, deferred: 0, hold: 0, corrupt: 0 });
    } finally {
      await relay.stop();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
