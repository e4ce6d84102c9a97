/**
 * Passing RFC 3461 parameters on to the next server, when it offers DSN:
 * RET and ENVID on MAIL FROM, each recipient's own NOTIFY and ORCPT on its RCPT TO.
 *
 * nodemailer (pinned) takes DSN parameters per envelope only: one NOTIFY and one
 * ORCPT for every recipient. A relay must keep each recipient's own (4.2: ORCPT
 * unchanged, NOTIFY as given), so DsnSMTPConnection replaces the internal method
 * that makes the RCPT TO parameters, `_getDsnRcptToArgs`, which upstream calls
 * right after it puts the recipient at the end of `_recipientQueue` (both in the
 * pipelined and the one-by-one envelope). test/unit/dsn-passing.test.ts and the
 * delivery tests check this on the wire, so an upgrade that changes it fails them.
 */
import type { EnvelopeDsn, RecipientDsn, RecipientState } from '../queue/envelope';
import { FastDataSMTPConnection } from './data-stuffing';
import type { OutboundDsn } from './types';

/** RFC 3461 4: xtext, every byte outside "!".."~" and "+" and "=" as +HH (upper case hex). */
export function xtext(value: string): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    out += byte >= 0x21 && byte <= 0x7e && byte !== 0x2b && byte !== 0x3d ? String.fromCharCode(byte) : `+${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** " NOTIFY=... ORCPT=type;xtext" for a recipient, or "" when it gave neither. */
export function rcptParameters(dsn: RecipientDsn | undefined): string {
  if (!dsn) return '';
  let out = '';
  if (dsn.notify !== undefined) out += ` NOTIFY=${dsn.notify.length === 0 ? 'NEVER' : dsn.notify.join(',')}`;
  if (dsn.orcpt !== undefined) {
    const semicolon = dsn.orcpt.indexOf(';');
    // the address type is an atom; only the address is xtext (smtp-server checked the form)
    out += ` ORCPT=${dsn.orcpt.slice(0, semicolon)};${xtext(dsn.orcpt.slice(semicolon + 1))}`;
  }
  return out;
}

/** nodemailer's envelope `dsn` option for RET and ENVID (it encodes them and sends them only to servers that offer DSN). */
export function mailParameters(dsn: EnvelopeDsn | undefined): { ret?: string; envid?: string } | undefined {
  if (!dsn || (dsn.ret === undefined && dsn.envid === undefined)) return undefined;
  return { ...(dsn.ret !== undefined ? { ret: dsn.ret } : {}), ...(dsn.envid !== undefined ? { envid: dsn.envid } : {}) };
}

interface RecipientQueue {
  _recipientQueue?: string[];
}

/** The SMTP client of delivery: FastDataSMTPConnection that also sends each recipient's own NOTIFY and ORCPT. */
export class DsnSMTPConnection extends FastDataSMTPConnection {
  /**
   * The recipients' parameters for the next transaction; set by the caller only
   * when the server offered DSN, and cleared (undefined) otherwise.
   */
  recipientDsn: OutboundDsn['recipients'] | undefined;

  _getDsnRcptToArgs(): string {
    const queue = (this as unknown as RecipientQueue)._recipientQueue;
    const recipient = queue?.[queue.length - 1];
    return recipient === undefined ? '' : rcptParameters(this.recipientDsn?.get(recipient));
  }
}

/** The DSN parameters of a queued message, to pass on; undefined when its client gave none. */
export function outboundDsn(envelope: { dsn?: EnvelopeDsn; recipients: readonly RecipientState[] }): OutboundDsn | undefined {
  let recipients: Map<string, RecipientDsn> | undefined;
  for (const r of envelope.recipients) {
    if (r.notify === undefined && r.orcpt === undefined) continue;
    (recipients ??= new Map()).set(r.address, { notify: r.notify, orcpt: r.orcpt });
  }
  if (!recipients && !envelope.dsn) return undefined;
  return { ...(envelope.dsn ? { envelope: envelope.dsn } : {}), recipients: recipients ?? new Map() };
}
