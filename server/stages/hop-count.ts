/**
 * Mail loop protection: a message that already passed through too many hops is
 * refused (554 5.4.6), like Postfix's hopcount_limit (50). Two relays that forward
 * to each other would otherwise pass a message back and forth forever.
 */
export const MAX_HOPS = 50;

/** Counts the Received: fields of a header block (see headerTextOf). */
export function countHops(headerText: string): number {
  return (headerText.match(/(?:^|\n)received[ \t]*:/gi) ?? []).length;
}
