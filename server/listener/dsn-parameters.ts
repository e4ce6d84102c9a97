/**
 * RFC 3461 parameters as smtp-server parsed them, in the form the envelope keeps.
 * smtp-server has already refused malformed values with 501 (an unknown NOTIFY
 * keyword, NEVER with others, RET other than FULL or HDRS, ORCPT without an
 * address type, control characters after xtext decoding); these only copy.
 */
import type { SMTPServerAddress, SMTPServerSession } from 'smtp-server';
import type { EnvelopeDsn, NotifyCondition, RecipientDsn } from '../queue/envelope';

/** NOTIFY and ORCPT of one RCPT TO; undefined when it had neither. */
export function recipientDsn(address: SMTPServerAddress): RecipientDsn | undefined {
  const { dsn } = address;
  if (!dsn || (dsn.notify === undefined && dsn.orcpt === undefined)) return undefined;
  const out: RecipientDsn = {};
  // NOTIFY=NEVER (never combined with others) becomes []
  if (dsn.notify !== undefined) out.notify = dsn.notify.filter((v): v is NotifyCondition => v !== 'NEVER');
  if (dsn.orcpt !== undefined) out.orcpt = dsn.orcpt;
  return out;
}

/** `{ dsn: { ret, envid } }` for the envelope when MAIL FROM had RET or ENVID, else `{}`. */
export function envelopeDsn(session: SMTPServerSession): { dsn?: EnvelopeDsn } {
  const given = session.envelope.dsn;
  if (!given || (given.ret === null && given.envid === null)) return {};
  const dsn: EnvelopeDsn = {};
  if (given.ret === 'FULL' || given.ret === 'HDRS') dsn.ret = given.ret;
  if (given.envid !== null) dsn.envid = given.envid;
  return { dsn };
}
