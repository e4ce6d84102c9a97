/**
 * Removes Authentication-Results fields that claim this server's authserv-id
 * from a message stream (RFC 8601 section 5: a receiver must delete or obscure
 * such fields arriving from outside, or its users would trust forged results).
 *
 * Contract: only the header block is looked at; fields are judged whole (with
 * their continuation lines), other fields and the body pass through byte for
 * byte. The authserv-id comparison ignores case. `removed` counts the fields
 * dropped. Lines must end with CRLF (the message guard upstream sees to that).
 */
import { Transform, type TransformCallback } from 'node:stream';

/** a single field longer than this is passed on without being judged (it is not ours to parse) */
const MAX_FIELD_BYTES = 64 * 1024;

export class ForeignAuthResultsFilter extends Transform {
  removed = 0;
  private inHeader = true;
  /** the unfinished line, without its CRLF */
  private partial: Buffer = Buffer.alloc(0);
  /** lines of the field being collected, each with its CRLF */
  private field: Buffer[] = [];
  private fieldBytes = 0;
  private readonly authservId: string;

  constructor(authservId: string) {
    super();
    this.authservId = authservId.toLowerCase();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    if (!this.inHeader) {
      done(null, chunk);
      return;
    }
    let data = this.partial.length > 0 ? Buffer.concat([this.partial, chunk]) : chunk;
    this.partial = Buffer.alloc(0);
    let start = 0;
    while (this.inHeader) {
      const end = data.indexOf('\r\n', start, 'latin1');
      if (end < 0) break;
      this.line(data.subarray(start, end + 2));
      start = end + 2;
    }
    if (!this.inHeader) {
      if (start < data.length) this.push(data.subarray(start));
    } else {
      data = data.subarray(start);
      if (this.fieldBytes + data.length > MAX_FIELD_BYTES) {
        // an absurdly long field: give up judging it and pass it and the rest on
        this.flushField(false);
        this.push(data);
        this.inHeader = false;
      } else {
        this.partial = Buffer.from(data);
      }
    }
    done();
  }

  override _flush(done: TransformCallback): void {
    if (this.inHeader) {
      this.flushField(this.isOurs());
      if (this.partial.length > 0) this.push(this.partial);
    }
    done();
  }

  private line(line: Buffer): void {
    const first = line[0];
    if (first === 0x20 || first === 0x09) {
      this.field.push(line);
      this.fieldBytes += line.length;
      return;
    }
    this.flushField(this.isOurs());
    if (line.length === 2) {
      // the blank line: the header block is over
      this.push(line);
      this.inHeader = false;
      return;
    }
    this.field = [line];
    this.fieldBytes = line.length;
  }

  private flushField(drop: boolean): void {
    if (this.field.length === 0) return;
    if (drop) this.removed++;
    else for (const line of this.field) this.push(line);
    this.field = [];
    this.fieldBytes = 0;
  }

  private isOurs(): boolean {
    if (this.field.length === 0) return false;
    const text = Buffer.concat(this.field).toString('latin1');
    const match = /^authentication-results[ \t]*:([^]*)$/i.exec(text);
    if (!match) return false;
    // the authserv-id is the first token of the value, after any comments
    const value = match[1]!.replace(/\r\n/g, '').replace(/\([^)]*\)/g, ' ').trim();
    const id = value.split(/[;\s]/)[0]!.toLowerCase();
    return id === this.authservId;
  }
}
