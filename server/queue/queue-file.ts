/**
 * The queue file format: one file per message, envelope first, then the bytes.
 *
 *   "ORQ1 <n>\n"      magic and the byte length n of the JSON envelope
 *   <n bytes JSON>   the QueueEnvelope (maybe followed by spaces: room it may grow into)
 *   "\n"
 *   <message>        the message as received (CRLF lines, our Received header first)
 *
 * The envelope's `size` is the message's length in bytes; a file whose message
 * is longer or shorter is corrupt.
 * The envelope is small and read without touching the message; the message is
 * streamed from `bodyOffset`. Anything that does not parse is a CorruptQueueFile.
 */
import { open } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import type { QueueEnvelope } from './envelope';

const MAGIC = 'ORQ1 ';
const MAX_ENVELOPE_BYTES = 4 * 1024 * 1024;

export class CorruptQueueFile extends Error {
  constructor(
    readonly path: string,
    detail: string,
  ) {
    super(`corrupt queue file ${path}: ${detail}`);
    this.name = 'CorruptQueueFile';
  }
}

/**
 * The queue-file header. With `reserveBytes`, the JSON is followed by that many
 * spaces (still valid JSON), room for encodeEnvelopeInPlace to grow the envelope
 * after the message bytes are written.
 */
export function encodeHeader(envelope: QueueEnvelope, reserveBytes = 0): Buffer {
  const json = Buffer.from(JSON.stringify(envelope), 'utf8');
  const region = reserveBytes > 0 ? Buffer.concat([json, Buffer.alloc(reserveBytes, 0x20)]) : json;
  return Buffer.concat([Buffer.from(`${MAGIC}${region.length}\n`, 'latin1'), region, Buffer.from('\n', 'latin1')]);
}

/**
 * The envelope JSON padded to exactly the JSON region of `header` (as made by
 * encodeHeader), and where that region starts; undefined when it does not fit.
 */
export function encodeEnvelopeInPlace(header: Buffer, envelope: QueueEnvelope): { json: Buffer; position: number } | undefined {
  const newline = header.indexOf(0x0a);
  const region = header.length - newline - 2;
  const json = Buffer.from(JSON.stringify(envelope), 'utf8');
  if (json.length > region) return undefined;
  return { json: Buffer.concat([json, Buffer.alloc(region - json.length, 0x20)]), position: newline + 1 };
}

export interface QueueFileInfo {
  envelope: QueueEnvelope;
  /** where the message starts in the file */
  bodyOffset: number;
  /** message size in bytes */
  size: number;
}

/** Reads and checks the envelope; throws CorruptQueueFile for anything malformed. */
export async function readQueueFile(path: string): Promise<QueueFileInfo> {
  const handle = await open(path, 'r');
  try {
    const { size: fileSize } = await handle.stat();
    const head = Buffer.alloc(Math.min(fileSize, 64 * 1024));
    await handle.read(head, 0, head.length, 0);
    const newline = head.indexOf(0x0a);
    const prefix = newline > 0 ? head.subarray(0, newline).toString('latin1') : '';
    const match = /^ORQ1 (\d{1,8})$/.exec(prefix);
    if (!match) throw new CorruptQueueFile(path, 'bad header');
    const length = Number(match[1]);
    if (length > MAX_ENVELOPE_BYTES) throw new CorruptQueueFile(path, 'envelope too large');
    const start = newline + 1;
    const bodyOffset = start + length + 1;
    if (bodyOffset > fileSize) throw new CorruptQueueFile(path, 'truncated envelope');
    let json = head.subarray(start, start + length);
    if (start + length > head.length) {
      json = Buffer.alloc(length);
      await handle.read(json, 0, length, start);
    }
    const envelope = parseEnvelope(path, json);
    const size = fileSize - bodyOffset;
    if (envelope.size !== undefined && envelope.size !== size) {
      throw new CorruptQueueFile(path, `the message is ${size} bytes but was ${envelope.size} when queued (${size < envelope.size ? 'truncated' : 'appended to'})`);
    }
    return { envelope, bodyOffset, size };
  } finally {
    await handle.close();
  }
}

function parseEnvelope(path: string, json: Buffer): QueueEnvelope {
  let value: unknown;
  try {
    value = JSON.parse(json.toString('utf8'));
  } catch {
    throw new CorruptQueueFile(path, 'envelope is not JSON');
  }
  const env = value as Partial<QueueEnvelope> | null;
  const valid =
    env !== null &&
    typeof env === 'object' &&
    env.version === 1 &&
    typeof env.id === 'string' &&
    typeof env.from === 'string' &&
    typeof env.receivedAt === 'number' &&
    typeof env.attempts === 'number' &&
    Array.isArray(env.recipients) &&
    env.recipients.length > 0 &&
    env.recipients.every((r) => r && typeof r.address === 'string' && ['pending', 'delivered', 'failed'].includes(r.status) && (r.notify === undefined || Array.isArray(r.notify))) &&
    typeof env.client === 'object' &&
    env.client !== null &&
    (env.size === undefined || (Number.isSafeInteger(env.size) && env.size >= 0)) &&
    (env.headers === undefined || typeof env.headers === 'string') &&
    (env.insertedHeaders === undefined || (Number.isSafeInteger(env.insertedHeaders?.at) && env.insertedHeaders!.at >= 0 && typeof env.insertedHeaders?.text === 'string'));
  if (!valid) throw new CorruptQueueFile(path, 'envelope fields missing or of the wrong type');
  return env as QueueEnvelope;
}

/** Streams the message bytes of a queue file. */
export function openMessage(path: string, bodyOffset: number): Readable {
  return createReadStream(path, { start: bodyOffset, highWaterMark: 256 * 1024 });
}
