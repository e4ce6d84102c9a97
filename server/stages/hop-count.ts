/**
 * Mail loop protection: a message that already passed through too many hops is
 * refused (554 5.4.6), like Postfix's hopcount_limit (50). Two relays that forward
 * to each other would otherwise pass a message back and forth forever.
 */
export const MAX_HOPS = 50;

/**
 * Counts the Received: header fields in the header block at the start of `head`
 * (the message as queued, so its lines end in CRLF). Only the header block is
 * turned into text: this runs for every message.
 */
export function countHops(head: Buffer): number {
  const end = head.indexOf('\r\n\r\n');
  const headers = (end < 0 ? head : head.subarray(0, end)).toString('latin1');
  return (headers.match(/(?:^|\n)received[ \t]*:/gi) ?? []).length;
}
