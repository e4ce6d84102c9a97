/**
 * The fast path for nodemailer's DataStream (server/delivery/data-stuffing.ts)
 * relies on internals of the exact pinned nodemailer, and must give exactly the
 * bytes upstream gives, however the message is split into chunks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SMTPServer } from 'smtp-server';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import DataStream from '../../node_modules/nodemailer/dist/cjs/smtp-connection/data-stream.js';
import { PassThrough, Writable } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import { batchWritesPerTurn, FastDataSMTPConnection, passesUnchanged, withFastStuffing, type DataStreamState } from '../../server/delivery/data-stuffing';

const ROOT = join(__dirname, '..', '..');

interface Encoded {
  bytes: string;
  inByteCount: number;
  outByteCount: number;
}

/** Runs `chunks` through a DataStream, upstream's or with the fast path, and collects the output. */
function encode(chunks: Buffer[], fast: boolean, counter?: { upstreamCalls: number }): Promise<Encoded> {
  const stream = new DataStream() as unknown as DataStreamState;
  if (fast) {
    const upstream = stream._transform;
    stream._transform = withFastStuffing(function counted(this: DataStreamState, chunk, encoding, done) {
      if (counter) counter.upstreamCalls++;
      return upstream.call(this, chunk, encoding, done);
    });
  }
  const out: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => out.push(chunk));
  return new Promise((resolve, reject) => {
    stream.on('error', reject);
    stream.on('end', () => resolve({ bytes: Buffer.concat(out).toString('latin1'), inByteCount: stream.inByteCount, outByteCount: stream.outByteCount }));
    for (const chunk of chunks) stream.write(chunk);
    stream.end();
  });
}

/** Every split of `text` into at most three chunks. */
function splits(text: string): Buffer[][] {
  const bytes = Buffer.from(text, 'latin1');
  const out: Buffer[][] = [[bytes]];
  for (let a = 1; a < bytes.length; a++) {
    out.push([bytes.subarray(0, a), bytes.subarray(a)]);
    for (let b = a + 1; b < bytes.length; b++) out.push([bytes.subarray(0, a), bytes.subarray(a, b), bytes.subarray(b)]);
  }
  return out;
}

test('nodemailer is the exact version the fast path was written for, with the internals it uses', () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'node_modules', 'nodemailer', 'package.json'), 'utf8')) as { version: string };
  const declared = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }).dependencies['nodemailer'];
  assert.equal(pkg.version, '10.6.1');
  assert.equal(declared, '10.6.1', 'package.json pins the exact version');
  const source = DataStream.prototype._transform.toString();
  for (const field of ['inByteCount', 'outByteCount', 'lastByte']) assert.match(source, new RegExp(`this\\.${field}`), `_transform keeps ${field}`);
  const createSendStream = (SMTPConnection.prototype as unknown as { _createSendStream?: () => unknown })._createSendStream;
  assert.equal(typeof createSendStream, 'function');
  assert.match(String(createSendStream), /new data_stream_js_1\.default\(\)[\s\S]*return dataStream;/, '_createSendStream still makes and returns a DataStream');
});

test('every short text of CR, LF, dot and letter, split every way, comes out as upstream makes it', async () => {
  const alphabet = ['\r', '\n', '.', 'a'];
  let texts = [''];
  for (let length = 1; length <= 5; length++) {
    texts = texts.flatMap((text) => alphabet.map((c) => text + c));
    for (const text of texts) {
      for (const chunks of splits(text)) {
        assert.deepEqual(await encode(chunks, true), await encode(chunks, false), JSON.stringify(chunks.map((c) => c.toString('latin1'))));
      }
    }
  }
});

test('passesUnchanged says yes exactly where upstream changes nothing', () => {
  assert.equal(passesUnchanged(Buffer.from('line one\r\nline two\r\n'), false), true);
  assert.equal(passesUnchanged(Buffer.from('\nmore\r\n'), 0x0d), true, 'the LF of a CRLF split between chunks');
  assert.equal(passesUnchanged(Buffer.from('.leading dot\r\n'), false), false);
  assert.equal(passesUnchanged(Buffer.from('.after a line end\r\n'), 0x0a), false);
  assert.equal(passesUnchanged(Buffer.from('x.\r\n'), 0x0a), true, 'a dot that does not start a line');
  assert.equal(passesUnchanged(Buffer.from('a\r\n.b\r\n'), false), false);
  assert.equal(passesUnchanged(Buffer.from('bare\nLF'), false), false);
  assert.equal(passesUnchanged(Buffer.from('bare\rCR'), false), false);
  assert.equal(passesUnchanged(Buffer.from('no LF after\r'), false), true, 'a CR at the end waits for the next chunk');
  assert.equal(passesUnchanged(Buffer.from('x'), 0x0d), false, 'the previous chunk ended in a bare CR');
});

test('a large message of CRLF lines passes without upstream\'s byte loop, and unchanged', async () => {
  const line = 'The quick brown fox jumps over the lazy dog, and then some more words.\r\n';
  const message = Buffer.from(line.repeat(1400) + '.a line that starts with a dot\r\n' + line.repeat(10), 'latin1');
  const chunks: Buffer[] = [];
  for (let at = 0; at < message.length; at += 16384) chunks.push(message.subarray(at, at + 16384));
  const counter = { upstreamCalls: 0 };
  const fast = await encode(chunks, true, counter);
  assert.deepEqual(fast, await encode(chunks, false));
  assert.equal(fast.bytes, line.repeat(1400) + '..a line that starts with a dot\r\n' + line.repeat(10) + '.\r\n');
  assert.equal(counter.upstreamCalls, 1, `upstream encoded ${counter.upstreamCalls} of ${chunks.length} chunks: only the one with the dot`);
});

test('a message sent through the connection arrives at a real smtp-server with its dots and line ends intact', async () => {
  const received: string[] = [];
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    onData(stream, _session, callback) {
      const parts: Buffer[] = [];
      stream.on('data', (part: Buffer) => parts.push(part));
      stream.on('end', () => {
        received.push(Buffer.concat(parts).toString('latin1'));
        callback();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.server.address() as { port: number }).port;
  const body = `Subject: dots\r\n\r\n.\r\n..two\r\nbare LF\nbare CR\rend\r\n${'plain line\r\n'.repeat(5000)}.last\r\n`;
  const streams: DataStreamState[] = [];
  class Watched extends FastDataSMTPConnection {
    override _createSendStream(callback: (...args: unknown[]) => void): DataStreamState {
      const stream = super._createSendStream(callback);
      streams.push(stream);
      return stream;
    }
  }
  const connection = new Watched({ host: '127.0.0.1', port, ignoreTLS: true, logger: false });
  try {
    await new Promise<void>((resolve, reject) => connection.connect((err) => (err ? reject(err) : resolve())));
    await new Promise<void>((resolve, reject) =>
      connection.send({ from: 'a@client.test', to: ['b@server.test'] }, Buffer.from(body, 'latin1'), (err) => (err ? reject(err) : resolve())),
    );
  } finally {
    connection.quit();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  assert.equal(streams.length, 1);
  assert.ok(streams[0] instanceof DataStream, 'the message went through a DataStream');
  assert.notEqual(streams[0]._transform, DataStream.prototype._transform, 'with the fast path in place');
  assert.deepEqual(received, [body.replace('bare LF\n', 'bare LF\r\n').replace('bare CR\r', 'bare CR\r\n')]);
});

/** A socket stand-in that records each write it gets: one entry per system call a socket would make. */
function recordingSocket(delayMs = 0): { socket: Writable; writes: string[][] } {
  const writes: string[][] = [];
  const later = (done: () => void) => (delayMs ? setTimeout(done, delayMs) : setImmediate(done));
  const socket = new Writable({
    highWaterMark: 16384,
    write(chunk: Buffer, _encoding, done) {
      writes.push([chunk.toString('latin1')]);
      later(done);
    },
    writev(chunks, done) {
      writes.push(chunks.map(({ chunk }) => (chunk as Buffer).toString('latin1')));
      later(done);
    },
  });
  return { socket, writes };
}

test('the writes of one turn of the event loop leave together, and nothing stays corked', async () => {
  const { socket, writes } = recordingSocket();
  const stream = new PassThrough();
  stream.pipe(socket, { end: false });
  batchWritesPerTurn(stream, socket);
  stream.write('message\r\n');
  stream.end('.\r\n');
  await new Promise((resolve) => stream.once('end', resolve));
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(writes, [['message\r\n', '.\r\n']]);
  assert.equal(socket.writableCorked, 0);
  // once that write is done, what comes after the data (the next command) is written at once
  while (socket.writableLength > 0) await tick();
  socket.write('QUIT\r\n');
  assert.deepEqual(writes.at(-1), ['QUIT\r\n']);
});

test('a large message through a slow socket is written whole, with backpressure, and nothing stays corked', async () => {
  const { socket, writes } = recordingSocket(2);
  const stream = new PassThrough();
  stream.pipe(socket, { end: false });
  batchWritesPerTurn(stream, socket);
  const chunk = 'x'.repeat(65536);
  const ended = new Promise((resolve) => stream.once('end', resolve));
  for (let i = 0; i < 32; i++) if (!stream.write(chunk)) await new Promise((resolve) => stream.once('drain', resolve));
  stream.end();
  await ended;
  while (socket.writableLength > 0) await tick();
  assert.equal(writes.flat().join(''), chunk.repeat(32));
  assert.equal(socket.writableCorked, 0);
});
