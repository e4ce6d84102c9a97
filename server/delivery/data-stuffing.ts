/**
 * A fast path for nodemailer's DataStream (smtp-connection/data-stream.js of the
 * pinned version), which puts a message into the form of the DATA phase: a bare CR
 * or LF becomes CRLF, and a dot that starts a line is doubled (RFC 5321 4.5.2).
 *
 * Upstream looks at every byte in JavaScript. A chunk in which every CR is
 * followed by LF, every LF follows a CR and no line starts with a dot comes out of
 * it unchanged; the spool's messages, whose line ends were made CRLF when they
 * were received, nearly always are such chunks. This recognises them with native
 * searches (a few per line instead of a JavaScript step per byte) and passes them
 * on at once; any other chunk goes to upstream's loop. The output bytes and the
 * stream's counters are upstream's.
 *
 * FastDataSMTPConnection, the SMTP client delivery uses, puts this on the stream
 * of every message and also sends the writes of one turn of the data together.
 */
import type { Transform, TransformCallback, Writable } from 'node:stream';
import SMTPConnection from 'nodemailer/lib/smtp-connection';

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const LF_DOT = Buffer.from('\n.');

/** The state upstream's DataStream keeps, which the fast path keeps the same way. */
export interface DataStreamState extends Transform {
  inByteCount: number;
  outByteCount: number;
  /** the last byte of the previous chunk; false before the first */
  lastByte: number | false;
}

type TransformFn = (chunk: Buffer | string, encoding: BufferEncoding, done: TransformCallback) => void;

/** Whether upstream would pass `chunk` unchanged after a chunk ending in `lastByte`. */
export function passesUnchanged(chunk: Buffer, lastByte: number | false): boolean {
  const first = chunk[0];
  if (lastByte === CR ? first !== LF : first === LF) return false;
  if (first === DOT && (lastByte === LF || lastByte === false)) return false;
  if (chunk.indexOf(LF_DOT) !== -1) return false;
  // every LF must follow a CR, and every CR come before an LF (or end the chunk):
  // from one line end to the next, the next CR must sit just before the next LF
  for (let from = first === LF ? 1 : 0; ; ) {
    const lf = chunk.indexOf(LF, from);
    const cr = chunk.indexOf(CR, from);
    if (lf === -1) return cr === -1 || cr === chunk.length - 1;
    if (cr !== lf - 1) return false;
    from = lf + 1;
  }
}

/** `upstream` (DataStream.prototype._transform) with unchanged chunks passed on natively. */
export function withFastStuffing(upstream: TransformFn): TransformFn {
  return function transform(this: DataStreamState, chunk, encoding, done) {
    if (typeof chunk === 'string' || chunk.length === 0 || !passesUnchanged(chunk, this.lastByte)) {
      return upstream.call(this, chunk, encoding, done);
    }
    this.inByteCount += chunk.length;
    this.outByteCount += chunk.length;
    this.lastByte = chunk[chunk.length - 1]!;
    this.push(chunk);
    done();
  };
}

/** The internal of nodemailer's SMTPConnection that makes each message's DataStream. */
interface SendStreamMaker {
  _createSendStream(callback: (...args: unknown[]) => void): DataStreamState;
}
const createSendStream = (SMTPConnection.prototype as unknown as SendStreamMaker)._createSendStream;

/**
 * Writes of `stream` to `socket` made in one turn of the event loop leave in one
 * system call (and, with Nagle off, one TCP segment): the socket is corked before
 * each chunk is written and uncorked once the turn is over. A small message and
 * its terminating dot are then one write instead of two. Nothing stays corked
 * past the turn, so backpressure and the commands after the data work as before.
 */
export function batchWritesPerTurn(stream: Transform, socket: Writable): void {
  let corked = false;
  // before the pipe's own 'data' listener, which writes the chunk
  stream.prependListener('data', () => {
    if (corked) return;
    corked = true;
    socket.cork();
    setImmediate(() => {
      corked = false;
      socket.uncork();
    });
  });
}

/**
 * nodemailer's SMTPConnection, with the fast path on the DataStream of every
 * message and the writes of each turn of its data batched.
 */
export class FastDataSMTPConnection extends SMTPConnection {
  _createSendStream(callback: (...args: unknown[]) => void): DataStreamState {
    const stream = createSendStream.call(this, callback);
    stream._transform = withFastStuffing(stream._transform as TransformFn);
    if (this._socket) batchWritesPerTurn(stream, this._socket);
    return stream;
  }

  /**
   * Makes sure no byte this connection was given is written after this call:
   * when its socket still holds unwritten bytes (a transaction that ended before
   * the server took all its data; nodemailer's close() ends a socket gracefully,
   * which would still send them), the socket is destroyed, which drops them, and
   * the connection is closed. Delivery calls this as each transaction ends,
   * because the memory a message is sent from may then be reused for another
   * message (see queue/message-slabs.ts). True when it closed the connection.
   */
  dropUnsentData(): boolean {
    const socket = this._socket;
    if (!socket || socket.destroyed || socket.writableLength === 0) return false;
    socket.destroy();
    this.close();
    return true;
  }
}
