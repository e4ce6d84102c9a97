import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { openWithAddedHeaders } from '../../server/delivery/prefixed-message';

async function text(stream: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString();
}

test('fields go in front and at their offset, wherever the chunks of the message split, and every open starts afresh', async () => {
  const message = 'Received: x\r\nSubject: s\r\n\r\nbody\r\n';
  const at = 'Received: x\r\n'.length;
  const added = { before: Buffer.from('A-R: 1\r\n'), inserted: { at, bytes: Buffer.from('Date: d\r\n') }, length: 17 };
  const expected = 'A-R: 1\r\nReceived: x\r\nDate: d\r\nSubject: s\r\n\r\nbody\r\n';
  for (let size = 1; size <= message.length; size++) {
    const chunks: Buffer[] = [];
    for (let i = 0; i < message.length; i += size) chunks.push(Buffer.from(message.slice(i, i + size)));
    const open = openWithAddedHeaders(added, () => Readable.from(chunks));
    assert.equal(await text(open()), expected, `chunks of ${size}`);
    assert.equal(await text(open()), expected, `opened again, chunks of ${size}`);
  }
  assert.equal(expected.length, message.length + added.length);
});

test('inserted fields alone, at the very start, or past the end of a short message', async () => {
  const open = (at: number, message: string) => text(openWithAddedHeaders({ inserted: { at, bytes: Buffer.from('X: 1\r\n') }, length: 6 }, () => Readable.from([Buffer.from(message)]))());
  assert.equal(await open(0, 'S: s\r\n\r\nb'), 'X: 1\r\nS: s\r\n\r\nb');
  assert.equal(await open(50, 'S: s\r\n'), 'S: s\r\nX: 1\r\n');
});
