/**
 * A fast path for smtp-server's reading of the DATA phase (used by
 * smtp-server-adapter.ts, for the exact pinned version).
 *
 * Upstream's SMTPStream._feedDataStream looks at every byte of the message in
 * JavaScript for a dot at the start of a line: the end of the data ("\r\n.\r\n")
 * or an escape dot to remove. Where a chunk (with the few bytes upstream kept back
 * from the one before) holds no "\n." at all, that loop finds nothing, and all
 * upstream does is keep the last four bytes back and pass the rest on. This does
 * the same for such chunks, with one native search instead of the loop; every
 * other chunk, and the first of each message, goes to upstream unchanged. So the
 * bytes the message stream receives, and where the data ends, are upstream's.
 */
import type { SMTPStream } from '../../node_modules/smtp-server/dist/cjs/smtp-stream.js';

const LF_DOT = Buffer.from('\n.');
/** bytes upstream keeps back so that a terminator split between chunks is still found */
const KEPT_BACK = 4;

type Feed = SMTPStream['_feedDataStream'];

/** `upstream` with chunks that hold no line-start dot handled natively. */
export function withFastDataScan(upstream: Feed): Feed {
  return function feedDataStream(this: SMTPStream, chunk, done) {
    if (this._atDataStart) return upstream.call(this, chunk, done);
    const kept = this._lastBytes;
    const joined = kept && kept.length ? Buffer.concat([kept, chunk], kept.length + chunk.length) : chunk;
    if (joined.indexOf(LF_DOT) !== -1) {
      // upstream's first step is this same join; it gets the joined bytes with nothing kept
      this._lastBytes = false;
      return upstream.call(this, joined, done);
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
