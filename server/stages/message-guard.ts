/**
 * A Transform for the DATA stream that enforces the message size while streaming
 * and never passes on a bare CR or LF (the raw material of SMTP smuggling).
 *
 * - size: once more than `maxBytes` arrived, nothing more is passed on (the rest is
 *   drained and counted) and `exceeded` is set; the caller answers 552.
 * - line endings: in "normalize" mode a bare LF or bare CR becomes CRLF; in "reject"
 *   mode nothing more is passed on and `bareLineEnding` is set; the caller answers 554.
 */
import { Transform, type TransformCallback } from 'node:stream';

const CR = 0x0d;
const LF = 0x0a;

/** how much of the message start is kept for header checks (see `head`) */
const HEAD_BYTES = 64 * 1024;

export class MessageGuard extends Transform {
  bytesIn = 0;
  /** the first HEAD_BYTES of the message as passed on, for header checks after DATA */
  private headChunks: Buffer[] = [];
  private headBytes = 0;
  exceeded = false;
  bareLineEnding = false;
  private pendingCr = false;

  constructor(
    private readonly maxBytes: number,
    private readonly mode: 'normalize' | 'reject',
  ) {
    super();
  }

  get refused(): boolean {
    return this.exceeded || this.bareLineEnding;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.bytesIn += chunk.length;
    if (this.bytesIn > this.maxBytes) this.exceeded = true;
    if (this.refused) return done();
    const out = this.fixLineEndings(chunk);
    if (out && out.length > 0) {
      if (this.headBytes < HEAD_BYTES) {
        this.headChunks.push(out.subarray(0, HEAD_BYTES - this.headBytes));
        this.headBytes += Math.min(out.length, HEAD_BYTES - this.headBytes);
      }
      this.push(out);
    }
    done();
  }

  /** The start of the message as it will be queued (at most 64 KiB). */
  head(): Buffer {
    return Buffer.concat(this.headChunks, this.headBytes);
  }

  override _flush(done: TransformCallback): void {
    if (this.pendingCr && !this.refused) {
      // a CR as the very last byte (smtp-server strips the final CRLF, so this is bare)
      if (this.mode === 'reject') this.bareLineEnding = true;
      else this.push(Buffer.from('\r\n'));
    }
    done();
  }

  /** Returns the bytes to pass on; null when the chunk made the message refused. */
  private fixLineEndings(chunk: Buffer): Buffer | null {
    // fast path: no CR or LF issues when every LF is preceded by CR and every CR followed by LF
    let start = 0;
    const parts: Buffer[] = [];
    if (this.pendingCr) {
      this.pendingCr = false;
      if (chunk[0] === LF) {
        parts.push(Buffer.from('\r\n'));
        start = 1;
      } else if (this.mode === 'reject') {
        this.bareLineEnding = true;
        return null;
      } else {
        parts.push(Buffer.from('\r\n'));
      }
    }
    let copyFrom = start;
    for (let i = start; i < chunk.length; i++) {
      const byte = chunk[i];
      if (byte !== CR && byte !== LF) {
        // skip ahead quickly to the next CR or LF
        const nextLf = chunk.indexOf(LF, i);
        const nextCr = chunk.indexOf(CR, i);
        const next = nextLf < 0 ? nextCr : nextCr < 0 ? nextLf : Math.min(nextLf, nextCr);
        if (next < 0) break;
        i = next - 1;
        continue;
      }
      if (byte === CR) {
        if (i + 1 === chunk.length) {
          // decide with the next chunk
          parts.push(chunk.subarray(copyFrom, i));
          copyFrom = chunk.length;
          this.pendingCr = true;
          break;
        }
        if (chunk[i + 1] === LF) {
          i++;
          continue;
        }
      }
      // a bare CR, or an LF without CR before it
      if (this.mode === 'reject') {
        this.bareLineEnding = true;
        return null;
      }
      parts.push(chunk.subarray(copyFrom, i), Buffer.from('\r\n'));
      copyFrom = i + 1;
    }
    if (copyFrom === start && parts.length === 0) return start === 0 ? chunk : chunk.subarray(start);
    if (copyFrom < chunk.length) parts.push(chunk.subarray(copyFrom));
    return Buffer.concat(parts);
  }
}
