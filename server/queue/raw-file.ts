/**
 * A file written through plain descriptors and libuv's callback API. The queue
 * writes thousands of small files a second; fs/promises' FileHandle objects
 * cost measurably more per file (object, finalizer, promise plumbing), and a
 * FileHandle write stream keeps the handle from closing.
 */
import fs from 'node:fs';
import { promisify } from 'node:util';

const openFd = promisify(fs.open);
function writeFd(fd: number, buffer: Buffer, offset: number, length: number, position: number | null = null): Promise<number> {
  return new Promise((resolve, reject) => fs.write(fd, buffer, offset, length, position, (err, written) => (err ? reject(err) : resolve(written))));
}
const fdatasync = promisify(fs.fdatasync);
const fsyncFd = promisify(fs.fsync);
const closeFd = promisify(fs.close);

export class RawFile {
  private closed = false;

  private constructor(readonly fd: number) {}

  static async open(path: string, flags: string, mode = 0o600): Promise<RawFile> {
    return new RawFile(await openFd(path, flags, mode));
  }

  async write(data: Buffer): Promise<void> {
    let offset = 0;
    while (offset < data.length) offset += await writeFd(this.fd, data, offset, data.length - offset);
  }

  /** Overwrites bytes at `position` without moving the append position. */
  async writeAt(data: Buffer, position: number): Promise<void> {
    let offset = 0;
    while (offset < data.length) offset += await writeFd(this.fd, data, offset, data.length - offset, position + offset);
  }

  /** Flushes the data and the metadata needed to read it back (the size). */
  datasync(): Promise<void> {
    return fdatasync(this.fd);
  }

  sync(): Promise<void> {
    return fsyncFd(this.fd);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await closeFd(this.fd);
  }
}
