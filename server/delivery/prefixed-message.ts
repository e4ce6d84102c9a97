/**
 * A message with header fields put in front of it, as OutboundMessage.open
 * wants it: every call opens the original again behind the same prefix.
 */
import { Readable } from 'node:stream';

export function openWithPrefix(prefix: Buffer, open: () => Readable): () => Readable {
  return () => Readable.from(prefixed(prefix, open()));
}

async function* prefixed(prefix: Buffer, rest: Readable): AsyncGenerator<Buffer> {
  yield prefix;
  for await (const chunk of rest) yield chunk as Buffer;
}
