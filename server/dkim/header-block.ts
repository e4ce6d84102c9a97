/**
 * Reading a message's header block and its From domain, without the body.
 *
 * Contract: readHeaderBlock consumes the stream only up to the blank line that
 * ends the header (or `limit` bytes), then destroys it. fromDomain returns the
 * lower-case domain of the first address of the first From field, or undefined
 * when there is no From field or no parsable address in it.
 */
import type { Readable } from 'node:stream';
import addressparser from 'nodemailer/lib/addressparser';

const HEADER_END = Buffer.from('\r\n\r\n', 'latin1');
/** header blocks are rarely over a few KiB; a From field past this is not looked for */
export const HEADER_LIMIT_BYTES = 64 * 1024;

export async function readHeaderBlock(stream: Readable, limit = HEADER_LIMIT_BYTES): Promise<Buffer> {
  let sofar: Buffer = Buffer.alloc(0);
  try {
    for await (const chunk of stream) {
      // search only what is new (and the 3 bytes before it, where a CRLFCRLF may start)
      const from = Math.max(0, sofar.length - (HEADER_END.length - 1));
      sofar = sofar.length === 0 ? (chunk as Buffer) : Buffer.concat([sofar, chunk as Buffer]);
      const end = sofar.indexOf(HEADER_END, from);
      if (end >= 0) return sofar.subarray(0, end + 2);
      if (sofar.length >= limit) return sofar.subarray(0, limit);
    }
    return sofar;
  } finally {
    stream.destroy();
  }
}

export function fromDomain(headerBlock: Buffer): string | undefined {
  const value = headerField(headerBlock.toString('latin1'), 'from');
  if (value === undefined) return undefined;
  for (const entry of addressparser(value, { flatten: true })) {
    const address = entry.address ?? '';
    const at = address.lastIndexOf('@');
    if (at > 0 && at < address.length - 1) return address.slice(at + 1).toLowerCase().replace(/\.$/, '');
  }
  return undefined;
}

/** The unfolded value of the first field called `name` (case-insensitive). */
export function headerField(headerText: string, name: string): string | undefined {
  const lines = headerText.split('\r\n');
  const prefix = `${name.toLowerCase()}:`;
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i]!.toLowerCase().startsWith(prefix)) continue;
    let value = lines[i]!.slice(prefix.length);
    while (i + 1 < lines.length && /^[ \t]/.test(lines[i + 1]!)) value += lines[++i];
    return value.trim();
  }
  return undefined;
}
