/**
 * Small pieces for reading and writing a message's header fields, shared by the
 * data stage and the messages the relay writes itself.
 */

/**
 * The header block at the start of `head` (the message as queued, CRLF lines),
 * without the blank line after it, as latin1 text. Only the header block is
 * turned into text: the data stage calls this once for every message.
 */
export function headerTextOf(head: Buffer): string {
  const end = head.indexOf('\r\n\r\n');
  return (end < 0 ? head : head.subarray(0, end)).toString('latin1');
}

/** RFC 5322 date-time in UTC, e.g. "Sun, 29 Nov 2026 15:20:58 +0000". */
export function rfc5322Date(date: Date): string {
  return date.toUTCString().replace(/GMT$/, '+0000');
}
