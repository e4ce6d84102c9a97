/**
 * The Received trace header (RFC 5321 4.4) we prepend to every accepted message.
 * Values from the client (HELO name) were validated by smtp-server; control
 * characters are removed anyway, since they would split the header.
 */
import { rfc5322Date } from './message-header';

export interface ReceivedInfo {
  helo: string;
  remoteAddress: string;
  hostname: string;
  queueId: string;
  /** ESMTP, ESMTPS (TLS) or ESMTPSA (TLS + AUTH), RFC 3848 */
  protocol: string;
  tlsVersion?: string;
  tlsCipher?: string;
  /** only when there is exactly one recipient, as is customary, to not leak Bcc lists */
  recipient?: string;
  date: Date;
}

const CONTROL = /[\x00-\x1f\x7f]/g;

export function receivedHeader(info: ReceivedInfo): Buffer {
  const clean = (text: string) => text.replace(CONTROL, '');
  const tls = info.tlsVersion ? `\r\n\t(using ${clean(info.tlsVersion)}${info.tlsCipher ? ` with cipher ${clean(info.tlsCipher)}` : ''})` : '';
  const forClause = info.recipient ? `\r\n\tfor <${clean(info.recipient)}>` : '';
  const text =
    `Received: from ${clean(info.helo) || 'unknown'} (${addressLiteral(clean(info.remoteAddress))})` +
    `\r\n\tby ${info.hostname} (ownrelay) with ${info.protocol} id ${info.queueId}${tls}${forClause};` +
    `\r\n\t${rfc5322Date(info.date)}\r\n`;
  return Buffer.from(text, 'utf8');
}

/** RFC 5321 4.1.3: [192.0.2.1], or [IPv6:2001:db8::1] */
function addressLiteral(address: string): string {
  return address.includes(':') ? `[IPv6:${address}]` : `[${address}]`;
}

export function protocolName(secure: boolean, authenticated: boolean): string {
  if (authenticated) return secure ? 'ESMTPSA' : 'ESMTPA';
  return secure ? 'ESMTPS' : 'ESMTP';
}
