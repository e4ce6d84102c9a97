/**
 * The data stage: streams a message into the spool and decides the DATA reply.
 *
 * Contract: the returned promise resolves to the queued entry only after the
 * spool's commit (fsync, rename, directory fsync), so the listener's 250 means
 * durable. On any refusal or I/O error the client stream is drained to its end,
 * the partial file is removed, and an SmtpError says why (552 size, 554 bare line
 * endings or a mail loop, 550 a failed check, 451 local error).
 *
 * On the way to the spool, Authentication-Results fields that claim this
 * server's authserv-id are removed. With `inspect`, the same bytes also go to the
 * inbound checks; their header fields are stored with the envelope (they are
 * known only at the end) and put in front of the message when it is passed on.
 * With `fillHeaders` (submission), a missing Date or Message-ID is added the same
 * way (see missing-headers.ts), but below this relay's Received field.
 */
import { PassThrough, type Readable } from 'node:stream';
import type { InspectedMessage } from '../inbound/authentication';
import { ForeignAuthResultsFilter } from '../inbound/header-filter';
import type { QueueEnvelope } from '../queue/envelope';
import type { QueueEntry, Spool, MessageWriter } from '../queue/spool';
import { countHops, MAX_HOPS } from './hop-count';
import type { HeldBytes } from '../queue/message-slabs';
import { MessageGuard } from './message-guard';
import { headerTextOf } from './message-header';
import { missingHeaderFields, type HeaderFill } from './missing-headers';
import { SmtpError, asSmtpError } from './smtp-error';

export interface ReceiveOptions {
  maxMessageBytes: number;
  bareLineEndings: 'normalize' | 'reject';
  /** this server's authserv-id (its hostname): such Authentication-Results from outside are removed */
  authservId: string;
  /** inbound checks, given the message as it is spooled; resolves once they are done */
  inspect?: (message: Readable) => Promise<InspectedMessage>;
  /** add a Date or Message-ID field the message lacks (RFC 6409 8.2, 8.3) */
  fillHeaders?: HeaderFill;
}

/** room left in the queue-file envelope for the checks' header fields of messages too large to keep in memory */
const INSPECTION_RESERVE_BYTES = 4096;
/** the same for an added Date and Message-ID */
const FILL_RESERVE_BYTES = 512;

export interface Received {
  entry: QueueEntry;
  size: number;
  /** the queued message bytes, when small enough to keep (saves reading them back); the caller releases them */
  message?: HeldBytes;
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
  const filter = new ForeignAuthResultsFilter(options.authservId);
  let writer: MessageWriter | undefined;
  try {
    writer = await spool.beginMessage(envelope, (options.inspect ? INSPECTION_RESERVE_BYTES : 0) + (options.fillHeaders ? FILL_RESERVE_BYTES : 0));
    await writer.writeChunk(traceHeader);
  } catch (err) {
    await writer?.abort().catch(() => undefined);
    await drain(stream);
    throw asSmtpError(err, 'spool write failed');
  }
  const feed = options.inspect ? new PassThrough() : undefined;
  const inspection = feed ? options.inspect!(feed).catch((err: unknown) => err as Error) : undefined;
  try {
    await copyToSpool(stream, guard, filter, writer, feed);
  } catch (err) {
    feed?.end();
    await writer.abort().catch(() => undefined);
    throw asSmtpError(err, 'spool write failed');
  }
  if (guard.exceeded) {
    await writer.abort();
    throw new SmtpError(552, '5.3.4', `Message exceeds the maximum size of ${options.maxMessageBytes} bytes`, `message over ${options.maxMessageBytes} bytes`);
  }
  const headerText = headerTextOf(guard.head());
  const hops = countHops(headerText) + 1; // our own Received header is not in the client's stream
  if (hops > MAX_HOPS) {
    await writer.abort();
    throw new SmtpError(554, '5.4.6', `Too many hops (${hops}): a mail loop?`, `hop count ${hops} over ${MAX_HOPS}`);
  }
  if (guard.bareLineEnding) {
    await writer.abort();
    throw new SmtpError(554, '5.6.0', 'Bare CR or LF in message; lines must end with CRLF', 'bare CR or LF in DATA');
  }
  const filled = options.fillHeaders ? missingHeaderFields(headerText, options.fillHeaders) : '';
  // below this relay's Received field, so the trace fields stay one block at the top
  if (filled !== '') envelope.insertedHeaders = { at: traceHeader.length, text: filled };
  if (filled !== '' && !inspection) {
    try {
      await writer.updateEnvelope(envelope);
    } catch (err) {
      await writer.abort();
      throw asSmtpError(err, 'spool write failed');
    }
  }
  if (inspection) {
    const inspected = await inspection;
    if (inspected instanceof Error) {
      await writer.abort();
      throw asSmtpError(inspected, 'inbound checks failed');
    }
    if (inspected.refusal) {
      await writer.abort();
      throw inspected.refusal;
    }
    try {
      envelope.headers = inspected.headers;
      await writer.updateEnvelope(envelope);
    } catch {
      // only a message already partly on disk with huge results gets here: keep the summary
      envelope.headers = inspected.compactHeaders;
      await writer.updateEnvelope(envelope).catch(async (err: unknown) => {
        await writer!.abort();
        throw asSmtpError(err, 'spool write failed');
      });
    }
  }
  try {
    const entry = await writer.commit();
    // the size is that of the message as queued, trace header included
    return { entry, size: writer.messageBytes, message: writer.takeCommittedMessage(), bodyOffset: writer.headerBytes };
  } catch (err) {
    throw asSmtpError(err, 'spool commit failed');
  }
}

/**
 * Copies the client's stream through the guard into the spool file. The client's
 * stream is never destroyed: after a write error the rest is read and dropped,
 * so the session stays in sync and can answer 451 after the final dot.
 */
function copyToSpool(stream: Readable, guard: MessageGuard, filter: ForeignAuthResultsFilter, writer: MessageWriter, feed?: PassThrough): Promise<void> {
  return new Promise((resolve, reject) => {
    let writeError: Error | undefined;
    let writing = Promise.resolve();
    filter.on('data', (chunk: Buffer) => {
      feed?.write(chunk);
      if (writeError) return;
      filter.pause();
      writing = writer.writeChunk(chunk).then(
        () => void filter.resume(),
        (err: Error) => {
          writeError = err;
          filter.resume();
        },
      );
    });
    filter.on('end', () => {
      feed?.end();
      void writing.then(() => (writeError ? reject(writeError) : resolve()));
    });
    const abandoned = () => reject(new Error('client stream ended before the end of DATA'));
    stream.on('error', abandoned);
    stream.on('close', () => {
      if (!stream.readableEnded) abandoned();
    });
    stream.pipe(guard).pipe(filter);
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
