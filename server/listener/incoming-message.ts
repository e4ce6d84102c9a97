/**
 * What a DATA transaction becomes before its bytes arrive: the queue envelope
 * (a new queue id, the sender, each recipient with its own DSN parameters, the
 * client) and the Received trace field put in front of the message.
 */
import type { SMTPServerSession } from 'smtp-server';
import type { QueueEnvelope } from '../queue/envelope';
import { newQueueId } from '../queue/queue-id';
import { protocolName, receivedHeader } from '../stages/received-header';
import type { Transaction } from '../stages/session';
import { envelopeDsn } from './dsn-parameters';

/** The envelope of the message `transaction` is about to receive on the listener named `listenerName`, arriving at `now`. */
export function incomingEnvelope(session: SMTPServerSession, transaction: Transaction, listenerName: string, now: number): QueueEnvelope {
  return {
    version: 1,
    id: newQueueId(now),
    receivedAt: now,
    from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
    recipients: transaction.recipients.map((address) => ({ address, status: 'pending', ...transaction.dsn?.get(address) })),
    attempts: 0,
    client: {
      address: session.remoteAddress,
      helo: session.hostNameAppearsAs,
      listener: listenerName,
      ...(session.user ? { user: String(session.user) } : {}),
    },
    ...envelopeDsn(session),
  };
}

/** The Received field for `envelope` (RFC 5321 4.4): the client, this host, the protocol and TLS, and the recipient when there is one. */
export function traceHeaderFor(session: SMTPServerSession, hostname: string, envelope: QueueEnvelope, now: number): Buffer {
  const tlsInfo = session.secure ? (session as unknown as { tlsOptions?: { name?: string; version?: string } }).tlsOptions : undefined;
  return receivedHeader({
    helo: session.hostNameAppearsAs,
    remoteAddress: session.remoteAddress,
    hostname,
    queueId: envelope.id,
    protocol: protocolName(session.secure, Boolean(session.user)),
    tlsVersion: tlsInfo?.version,
    tlsCipher: tlsInfo?.name,
    recipient: envelope.recipients.length === 1 ? envelope.recipients[0]!.address : undefined,
    date: new Date(now),
  });
}
