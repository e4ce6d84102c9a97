/**
 * RFC 6409 8.2 and 8.3: a message submitted without a Date or a Message-ID field
 * gets one from the submission server. Mail without a Message-ID is refused or
 * marked as spam by large providers, and many applications leave both out.
 *
 * Contract: `missingHeaderFields` looks only at the header block at the start of
 * `head` (the message as queued, CRLF lines); it answers the fields to put in
 * front of the message, each ending in CRLF, or '' when it has both. A field
 * counts when a header line starts with its name (any case); continuation lines
 * never do.
 */

export interface HeaderFill {
  /** e.g. "<queue-id@host.example>" */
  messageId: string;
  /** when the message was accepted */
  date: Date;
}

export function missingHeaderFields(head: Buffer, fill: HeaderFill): string {
  const end = head.indexOf('\r\n\r\n');
  const block = `\r\n${head.subarray(0, end < 0 ? head.length : end).toString('latin1')}`;
  let fields = '';
  if (!/\r\nDate[ \t]*:/i.test(block)) fields += `Date: ${rfc5322Date(fill.date)}\r\n`;
  if (!/\r\nMessage-ID[ \t]*:/i.test(block)) fields += `Message-ID: ${fill.messageId}\r\n`;
  return fields;
}

/** RFC 5322 date-time in UTC, e.g. "Sun, 29 Nov 2026 15:20:58 +0000". */
function rfc5322Date(date: Date): string {
  return date.toUTCString().replace(/GMT$/, '+0000');
}
