/**
 * The data stage: streams a message into the spool and decides the DATA reply.
 *
 * Contract: the returned promise resolves to the queued entry only after the
 * spool's commit (fsync, rename, directory fsync), so the listener's 250 means
 * durable. On any refusal or I/O error the client stream is drained to its end,
 * the partial file is removed, and an SmtpError says why (552 size, 554 bare line
 * endings or a mail loop, 451 local error).
 */
import type { Readable } from 'node:stream';
import type { QueueEnvelope } from '../queue/envelope';
import type { QueueEntry, Spool, MessageWriter } from '../queue/spool';
import { countHops, MAX_HOPS } from './hop-count';
import { MessageGuard } from './message-guard';
import { SmtpError, asSmtpError } from './smtp-error';

export interface ReceiveOptions {
  maxMessageBytes: number;
  bareLineEndings: 'normalize' | 'reject';
}

export interface Received {
  entry: QueueEntry;
  size: number;
  /** the queued message bytes, when small enough to keep (saves reading them back) */
  message?: Buffer;
  /** where the message starts in the queue file */
  bodyOffset: number;
}

export async function receiveMessage(
  spool: Spool,
  envelope: QueueEnvelope,
  traceHeader: Buffer,
  stream: Readable,
  options: ReceiveOptions,
): Promise<Received> {
  const guard = new MessageGuard(options.maxMessageBytes, options.bareLineEndings);
  let writer: MessageWriter | undefined;
  try {
    writer = await spool.beginMessage(envelope);
    await writer.writeChunk(traceHeader);
  } catch (err) {
    await writer?.abort().catch(() => undefined);
    await drain(stream);
    throw asSmtpError(err, 'spool write failed');
  }
  try {
    await copyToSpool(stream, guard, writer);
  } catch (err) {
    await writer.abort().catch(() => undefined);
    throw asSmtpError(err, 'spool write failed');
  }
  if (guard.exceeded) {
    await writer.abort();
    throw new SmtpError(552, '5.3.4', `Message exceeds the maximum size of ${options.maxMessageBytes} bytes`, `message over ${options.maxMessageBytes} bytes`);
  }
  const hops = countHops(guard.head()) + 1; // our own Received header is not in the client's stream
  if (hops > MAX_HOPS) {
    await writer.abort();
    throw new SmtpError(554, '5.4.6', `Too many hops (${hops}): a mail loop?`, `hop count ${hops} over ${MAX_HOPS}`);
  }
  if (guard.bareLineEnding) {
    await writer.abort();
    throw new SmtpError(554, '5.6.0', 'Bare CR or LF in message; lines must end with CRLF', 'bare CR or LF in DATA');
  }
  try {
    const entry = await writer.commit();
    // the size is that of the message as queued, trace header included
    return { entry, size: writer.bytesWritten - writer.headerBytes, message: writer.committedMessage(), bodyOffset: writer.headerBytes };
  } catch (err) {
    throw asSmtpError(err, 'spool commit failed');
  }
}

/**
 * Copies the client's stream through the guard into the spool file. The client's
 * stream is never destroyed: after a write error the rest is read and dropped,
 * so the session stays in sync and can answer 451 after the final dot.
 */
function copyToSpool(stream: Readable, guard: MessageGuard, writer: MessageWriter): Promise<void> {
  return new Promise((resolve, reject) => {
    let writeError: Error | undefined;
    let writing = Promise.resolve();
    guard.on('data', (chunk: Buffer) => {
      if (writeError) return;
      guard.pause();
      writing = writer.writeChunk(chunk).then(
        () => void guard.resume(),
        (err: Error) => {
          writeError = err;
          guard.resume();
        },
      );
    });
    guard.on('end', () => {
      void writing.then(() => (writeError ? reject(writeError) : resolve()));
    });
    const abandoned = () => reject(new Error('client stream ended before the end of DATA'));
    stream.on('error', abandoned);
    stream.on('close', () => {
      if (!stream.readableEnded) abandoned();
    });
    stream.pipe(guard);
  });
}

/** Reads the client's stream to its end so the SMTP session stays in sync. */
function drain(stream: Readable): Promise<void> {
  if (stream.readableEnded || stream.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    stream.on('end', resolve);
    stream.on('close', resolve);
    stream.on('error', () => resolve());
    stream.resume();
  });
}
