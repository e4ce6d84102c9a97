/**
 * RFC 6409 8.2 and 8.3: a message submitted without a Date or a Message-ID field
 * gets one from the submission server. Mail without a Message-ID is refused or
 * marked as spam by large providers, and many applications leave both out.
 *
 * Contract: `missingHeaderFields` looks at the message's header block (see
 * headerTextOf); it answers the fields to put in front of the message, each
 * ending in CRLF, or '' when it has both. A field counts when a header line
 * starts with its name (any case); continuation lines never do.
 */
import { rfc5322Date } from './message-header';

export interface HeaderFill {
  /** e.g. "<queue-id@host.example>" */
  messageId: string;
  /** when the message was accepted */
  date: Date;
}

export function missingHeaderFields(headerText: string, fill: HeaderFill): string {
  let fields = '';
  if (!/(?:^|\n)Date[ \t]*:/i.test(headerText)) fields += `Date: ${rfc5322Date(fill.date)}\r\n`;
  if (!/(?:^|\n)Message-ID[ \t]*:/i.test(headerText)) fields += `Message-ID: ${fill.messageId}\r\n`;
  return fields;
}
