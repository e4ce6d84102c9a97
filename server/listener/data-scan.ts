/**
 * A fast path for smtp-server's reading of the DATA phase (used by
 * smtp-server-adapter.ts, for the exact pinned version).
 *
 * Upstream's SMTPStream._feedDataStream looks at every byte of the message in
 * JavaScript for a dot at the start of a line ("\n."): the end of the data
 * ("\r\n.\r\n") or an escape dot to remove. Until its loop reaches the first such
 * dot, all it does is pass the bytes on. This finds that dot with one native
 * search and passes the bytes before it on itself; upstream gets the rest of the
 * chunk from the line end in front of the dot, so it still decides what the dot
 * means and where the data ends. A chunk with no such dot is passed on whole
 * except the last four bytes, kept back for the next chunk as upstream keeps them;
 * they are passed on by themselves before that chunk, not joined to it (a copy of
 * the whole chunk), unless a line-start dot lies across the boundary.
 * The bytes the message stream receives, and where the data ends, are upstream's.
 */
import type { SMTPStream } from '../../node_modules/smtp-server/dist/cjs/smtp-stream.js';

const LF_DOT = Buffer.from('\n.');
const DOT = 0x2e;
const LF = 0x0a;
/** bytes upstream keeps back so that a terminator split between chunks is still found */
const KEPT_BACK = 4;

type Feed = SMTPStream['_feedDataStream'];

/** `upstream` with the bytes before the first line-start dot of each chunk passed on natively. */
export function withFastDataScan(upstream: Feed): Feed {
  return function feedDataStream(this: SMTPStream, chunk, done) {
    const kept = this._lastBytes;
    const joined = kept && kept.length ? (passedOnAlone(this, kept, chunk) ? chunk : Buffer.concat([kept, chunk], kept.length + chunk.length)) : chunk;
    // upstream's first step is this same join; from here on it gets joined bytes with nothing kept
    this._lastBytes = false;
    // a dot first in the data may be the end of an empty message or an escape: upstream's own checks
    if (this._atDataStart && joined[0] === DOT) return upstream.call(this, joined, done);
    // upstream's loop looks at a dot at index i from 2 to length - 3, after the LF at i - 1
    const lf = joined.indexOf(LF_DOT, 1);
    if (lf !== -1 && lf < joined.length - 3) {
      // the bytes before the line end (CR LF) in front of the dot are message content
      const plain = lf - 1;
      if (plain > 0) {
        // written without waiting for 'drain', as upstream writes what precedes a dot
        this._countDataBytes(plain);
        if (this._dataStream?.writable) this._dataStream.write(joined.subarray(0, plain));
      }
      return upstream.call(this, plain > 0 ? joined.subarray(plain) : joined, done);
    }
    const keep = joined.length < KEPT_BACK ? joined : joined.subarray(joined.length - KEPT_BACK);
    this._lastBytes = keep;
    if (keep.length === joined.length) return done();
    const ready = joined.subarray(0, joined.length - keep.length);
    this._countDataBytes(ready.length);
    const dataStream = this._dataStream;
    if (!dataStream || !dataStream.writable || dataStream.write(ready) || dataStream.destroyed) return done();
    // a stream that the application destroys never drains, it only closes
    const resume = (): void => {
      dataStream.removeListener('drain', resume);
      dataStream.removeListener('close', resume);
      done();
    };
    dataStream.once('drain', resume);
    dataStream.once('close', resume);
  };
}

/**
 * Upstream joins the four bytes it kept back to the next chunk, which copies the
 * whole chunk. They only need the join when a line-start dot lies across the
 * boundary (an LF at or after the second kept byte, followed by the dot within
 * the chunk's first four bytes), or at the start of the data. Otherwise this
 * passes the kept bytes on by themselves and the chunk is scanned alone: every
 * line-start dot upstream's loop would look at then lies at index 4 or later of
 * the chunk, with the two bytes upstream compares in front of it in the chunk.
 */
function passedOnAlone(parser: SMTPStream, kept: Buffer, chunk: Buffer): boolean {
  if (parser._atDataStart || chunk.length < KEPT_BACK) return false;
  // kept + the chunk's first four bytes, looked at in place (this runs for every chunk)
  const at = (i: number): number => (i < kept.length ? kept[i]! : chunk[i - kept.length]!);
  for (let i = 1; i < kept.length + KEPT_BACK - 1; i++) if (at(i) === LF && at(i + 1) === DOT) return false;
  parser._lastBytes = false;
  parser._countDataBytes(kept.length);
  // written without waiting for 'drain', as upstream writes what precedes a dot
  if (parser._dataStream?.writable) parser._dataStream.write(kept);
  return true;
}
