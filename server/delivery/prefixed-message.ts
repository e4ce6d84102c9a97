/**
 * A message with the header fields the relay adds, as OutboundMessage.open wants
 * it: fields in front of the message, and fields inserted at a byte offset (just
 * after the relay's own Received field). Every call opens the original again.
 */
import { Readable } from 'node:stream';
import type { AddedHeaders } from '../queue/envelope';

export function openWithAddedHeaders(added: AddedHeaders, open: () => Readable): () => Readable {
  return () => Readable.from(withAddedHeaders(added, open()));
}

async function* withAddedHeaders(added: AddedHeaders, rest: Readable): AsyncGenerator<Buffer> {
  if (added.before) yield added.before;
  let position = 0;
  let inserted = added.inserted === undefined;
  for await (const data of rest) {
    const chunk = data as Buffer;
    if (!inserted && position + chunk.length >= added.inserted!.at) {
      const split = added.inserted!.at - position;
      if (split > 0) yield chunk.subarray(0, split);
      yield added.inserted!.bytes;
      if (split < chunk.length) yield chunk.subarray(split);
      inserted = true;
    } else {
      yield chunk;
    }
    position += chunk.length;
  }
  // a message shorter than the offset (never one this relay wrote): the fields go last
  if (!inserted) yield added.inserted!.bytes;
}
