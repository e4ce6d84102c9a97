/**
 * The fast path for smtp-server's DATA phase (server/listener/data-scan.ts) must
 * give exactly what upstream gives: the same message bytes, the same end of the
 * data, the same commands after it, however the bytes are split into chunks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SMTPStream } from '../../node_modules/smtp-server/dist/cjs/smtp-stream.js';
import { withFastDataScan } from '../../server/listener/data-scan';

interface Outcome {
  messages: string[];
  commands: string[];
  dataBytes: number[];
}

/** Every part the message streams emitted, to tell parts that share an input chunk's memory from copies. */
type PartLog = Buffer[];

/** Feeds `chunks` (a DATA command, its data, then more commands) to a parser and records what it made of them. */
async function parse(chunks: Buffer[], fast: boolean, counter?: { upstreamCalls: number }, partLog?: PartLog): Promise<Outcome> {
  const parser = new SMTPStream();
  if (fast) {
    const upstream = parser._feedDataStream;
    parser._feedDataStream = withFastDataScan(function counted(this: SMTPStream, chunk, done) {
      if (counter) counter.upstreamCalls++;
      return upstream.call(this, chunk, done);
    });
  }
  const outcome: Outcome = { messages: [], commands: [], dataBytes: [] };
  parser.oncommand = (command, callback) => {
    const text = command.toString('latin1');
    outcome.commands.push(text);
    if (text === 'DATA') {
      const parts: Buffer[] = [];
      const data = parser.startDataMode();
      data.on('data', (part: Buffer) => {
        parts.push(part);
        partLog?.push(part);
      });
      data.on('end', () => {
        outcome.messages.push(Buffer.concat(parts).toString('latin1'));
        outcome.dataBytes.push(data.byteLength);
        parser.continue();
      });
    }
    callback?.();
  };
  for (const chunk of chunks) {
    await new Promise<void>((resolve, reject) => parser.write(chunk, (err) => (err ? reject(err) : resolve())));
  }
  await new Promise<void>((resolve) => parser.end(resolve));
  return outcome;
}

/** A deterministic pseudo-random sequence, so that a failure can be repeated. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1103515245 + 12345) & 0x7fffffff;
    return state / 0x80000000;
  };
}

function splitRandomly(bytes: Buffer, next: () => number): Buffer[] {
  const chunks: Buffer[] = [];
  let at = 0;
  while (at < bytes.length) {
    const size = 1 + Math.floor(next() * (next() < 0.5 ? 8 : 200));
    chunks.push(bytes.subarray(at, at + size));
    at += size;
  }
  return chunks;
}

test('data with dots, CRs and LFs anywhere, split anywhere, parses as upstream parses it', async () => {
  const next = random(42);
  const alphabet = ['\r', '\n', '.', 'a', '\r\n', '\r\n.', '\r\n..', 'text '];
  for (let round = 0; round < 600; round++) {
    let body = '';
    const pieces = Math.floor(next() * 120);
    for (let i = 0; i < pieces; i++) body += alphabet[Math.floor(next() * alphabet.length)];
    // the data ends, and commands follow in the same chunk or later ones
    const wire = Buffer.from(`DATA\r\n${body}\r\n.\r\nNOOP\r\nQUIT\r\n`, 'latin1');
    const chunks = splitRandomly(wire, next);
    assert.deepEqual(await parse(chunks, true), await parse(chunks, false), `round ${round}: ${JSON.stringify(wire.toString('latin1'))}`);
  }
});

test('a large message of ordinary lines is read without upstream\'s byte loop, and unchanged', async () => {
  const line = 'The quick brown fox jumps over the lazy dog, and then some more words.\r\n';
  const body = line.repeat(1400) + '..a line that started with a dot\r\n' + line.repeat(10);
  const wire = Buffer.from(`DATA\r\n${body}.\r\nQUIT\r\n`, 'latin1');
  const chunks = splitRandomly(wire, random(7)).map((chunk) => Buffer.from(chunk));
  const counter = { upstreamCalls: 0 };
  const fast = await parse(chunks, true, counter);
  assert.deepEqual(fast, await parse(chunks, false));
  assert.equal(fast.messages[0], line.repeat(1400) + '.a line that started with a dot\r\n' + line.repeat(10));
  assert.deepEqual(fast.commands, ['DATA', 'QUIT']);
  // upstream reads from the line end before the escaped dot and from the one before
  // the terminator; everything else (hundreds of chunks) is read natively
  assert.ok(chunks.length > 300, `${chunks.length} chunks`);
  assert.equal(counter.upstreamCalls, 2, `upstream read ${counter.upstreamCalls} of ${chunks.length} chunks`);
});

test('the bytes kept back at the end of a chunk are passed on without copying the next chunk to join them', async () => {
  const line = 'The quick brown fox jumps over the lazy dog, and then some more words.\r\n';
  const wire = Buffer.from(`DATA\r\n${line.repeat(3000)}.\r\nQUIT\r\n`, 'latin1');
  // chunks as sockets deliver them: each on memory of its own
  const chunks: Buffer[] = [];
  for (let at = 0, next = random(11); at < wire.length; ) {
    const size = 1000 + Math.floor(next() * 3000);
    const own = Buffer.allocUnsafeSlow(Math.min(size, wire.length - at));
    wire.copy(own, 0, at, at + own.length);
    chunks.push(own);
    at += own.length;
  }
  const parts: PartLog = [];
  const fast = await parse(chunks, true, undefined, parts);
  assert.deepEqual(fast, await parse(chunks, false));
  const inputs = new Set(chunks.map((chunk) => chunk.buffer));
  const copies = parts.filter((part) => !inputs.has(part.buffer));
  assert.ok(chunks.length > 50, `${chunks.length} chunks`);
  // at most two: the data that shares a chunk with the DATA command (upstream's
  // command reader hands it over), and a terminator split between two chunks
  assert.ok(copies.length <= 2, `${copies.length} of ${parts.length} parts were copies`);
});
