/**
 * Delivery status notifications (bounces, delay warnings and the success notices
 * of RFC 3461 NOTIFY=SUCCESS), RFC 3464 inside an RFC 6522 multipart/report:
 *   1. text/plain for the person who sent the message,
 *   2. message/delivery-status for software,
 *   3. the original message: text/rfc822-headers with its header block, or, for a
 *      failure the sender asked RET=FULL for, the whole message (message/rfc822,
 *      or message/global for an internationalized one, RFC 6532).
 *
 * Much of the content comes from elsewhere (remote replies, the original
 * headers, addresses), so everything is sanitised here: no CR, LF or control
 * characters inside header values, CRLF line endings throughout, no line longer
 * than 998 bytes, and a boundary checked not to occur in the content.
 */
import { randomBytes } from 'node:crypto';
import { rfc5322Date } from '../stages/message-header';

export type DsnAction = 'failed' | 'delayed' | 'delivered' | 'relayed';

export interface DsnRecipient {
  address: string;
  action: DsnAction;
  /** enhanced status code, e.g. "5.1.1" (see statusFromReply) */
  status: string;
  /** the reply that decided the outcome, e.g. "550 5.1.1 no such user" */
  diagnostic?: string;
  /** the host that gave `diagnostic` */
  remoteMta?: string;
  /** RFC 3461 ORCPT as the client gave it, decoded: "rfc822;alice@example.com" */
  originalRecipient?: string;
}

export interface DsnInput {
  /** our host name */
  reportingMta: string;
  queueId: string;
  /** envelope sender of the original message; never '' (a bounce is never bounced) */
  originalFrom: string;
  arrivalDate: Date;
  recipients: DsnRecipient[];
  /** header block of the original message (see headerBlock) */
  originalHeaders: Buffer;
  /** the whole original message, to return instead of its headers (RET=FULL) */
  originalMessage?: Buffer;
  /** RFC 3461 ENVID of the original message, decoded */
  envelopeId?: string;
  now?: Date;
}

const CRLF = '\r\n';
/** Folded lines aim for this length; nothing ever gets near RFC 5322's hard 998. */
const FOLD_AT_BYTES = 78;
/** Longer runs without a space are cut; with an indent a line stays well under 998 bytes. */
const PIECE_MAX_BYTES = 900;
const MAX_LINE_BYTES = 998;
const MAX_HEADER_BLOCK_BYTES = 64 * 1024;

/** Control characters (CR and LF included) become spaces; runs of whitespace collapse. */
function clean(value: string): string {
  return value.replace(/[\x00-\x1f\x7f]+/g, ' ').replace(/ {2,}/g, ' ').trim();
}

/** For the 7-bit delivery-status part: anything outside printable ASCII becomes '?'. */
function ascii(value: string): string {
  return clean(value).replace(/[^\x20-\x7e]/g, '?');
}

/**
 * An address for Final-Recipient: "rfc822; addr", or for a non-ASCII address the
 * 7-bit "utf-8; addr" form of RFC 6533 (utf-8-addr-xtext, \x{HEX} escapes).
 */
function recipientField(address: string): string {
  const a = clean(address);
  if (/^[\x20-\x7e]*$/.test(a)) return `rfc822; ${a}`;
  const xtext = Array.from(a, (ch) => (/^[\x21-\x2a\x2c-\x3c\x3e-\x5b\x5d-\x7e]$/.test(ch) ? ch : `\\x{${ch.codePointAt(0)!.toString(16).toUpperCase()}}`)).join('');
  return `utf-8; ${xtext}`;
}

/** Splits on spaces; a run longer than PIECE_MAX_BYTES is cut (between code points) into pieces. */
function pieces(text: string): string[] {
  const out: string[] = [];
  for (const word of text.split(' ')) {
    let piece = '';
    for (const ch of word) {
      if (Buffer.byteLength(piece) + Buffer.byteLength(ch) > PIECE_MAX_BYTES) {
        out.push(piece);
        piece = '';
      }
      piece += ch;
    }
    if (piece !== '') out.push(piece);
  }
  return out;
}

/**
 * Folds `first` + " " + `text` into lines of about FOLD_AT_BYTES; continuation
 * lines start with `indent` (whitespace, so a header stays one header).
 */
function fold(first: string, text: string, indent = ' '): string[] {
  const lines: string[] = [];
  let line = first;
  let hasContent = first.trim() !== '';
  for (const piece of pieces(text)) {
    const candidate = hasContent ? `${line} ${piece}` : `${line}${piece}`;
    if (hasContent && Buffer.byteLength(candidate) > FOLD_AT_BYTES) {
      lines.push(line);
      line = indent + piece;
    } else {
      line = candidate;
    }
    hasContent = true;
  }
  lines.push(line);
  return lines;
}

/** A header field, its value cleaned of control characters and folded into lines of about 78 bytes. */
export function foldedHeader(name: string, value: string): string {
  return fold(`${name}:`, clean(value)).join(CRLF);
}


/**
 * The enhanced status code of an SMTP reply: "550 5.1.1 ..." -> "5.1.1";
 * "550 no such user" -> "5.0.0"; a reply whose enhanced code contradicts its
 * basic code -> the basic code's class with ".0.0"; anything that is not an SMTP
 * reply (a local error text) -> `fallback`.
 */
export function statusFromReply(reply: string, fallback: string): string {
  const m = /^\s*(?:([245])\d\d(?:[ -]|$))?\s*(?:([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d))?/.exec(reply);
  const basic = m?.[1];
  const enhanced = m?.[2] !== undefined ? `${m[2]}.${m[3]}.${m[4]}` : undefined;
  if (basic !== undefined) return enhanced !== undefined && m?.[2] === basic ? enhanced : `${basic}.0.0`;
  return enhanced ?? fallback;
}

/**
 * The header block of a message: everything before the first empty line, with
 * the last header line's line ending, capped at 64 KiB (cut at a line end when
 * possible). A copy, so the caller's message buffer can be released.
 */
export function headerBlock(message: Buffer): Buffer {
  if (message[0] === 0x0a || (message[0] === 0x0d && message[1] === 0x0a)) return Buffer.alloc(0);
  const window = message.subarray(0, MAX_HEADER_BLOCK_BYTES + 4);
  const ends = [window.indexOf('\r\n\r\n'), window.indexOf('\n\n')].map((i, k) => (i < 0 ? -1 : i + (k === 0 ? 2 : 1)));
  const found = ends.filter((i) => i >= 0);
  let block = found.length > 0 ? message.subarray(0, Math.min(...found)) : message;
  if (block.length > MAX_HEADER_BLOCK_BYTES) {
    const lastLf = block.lastIndexOf(0x0a, MAX_HEADER_BLOCK_BYTES - 1);
    block = block.subarray(0, lastLf >= 0 ? lastLf + 1 : MAX_HEADER_BLOCK_BYTES);
  }
  return Buffer.from(block);
}

/**
 * The original headers made safe to embed: CRLF line endings, no NUL, lines over
 * 998 bytes split into continuation lines (never inside a UTF-8 sequence), no
 * trailing empty lines.
 */
function embeddableHeaders(headers: Buffer): Buffer {
  const text = headers.toString('latin1').replace(/\0/g, '').replace(/\r\n|\r|\n/g, '\n').replace(/\n+$/, '');
  if (text === '') return Buffer.alloc(0);
  const out: string[] = [];
  for (let line of text.split('\n')) {
    while (line.length > MAX_LINE_BYTES - 2) {
      let cut = MAX_LINE_BYTES - 2;
      while (cut > 1 && (line.charCodeAt(cut) & 0xc0) === 0x80) cut--; // UTF-8 continuation byte
      out.push(line.slice(0, cut));
      line = ' ' + line.slice(cut);
    }
    out.push(line);
  }
  return Buffer.from(out.join(CRLF) + CRLF, 'latin1');
}

/** What the text part says about the recipients with each action, in this order. */
const ACTION_TEXT: Record<DsnAction, string> = {
  failed: 'Your message could not be delivered to the recipients below. This is a permanent error; the message was not delivered and has been removed from the queue.',
  delayed: 'Your message has not yet been delivered to the recipients below. Delivery is still being retried; you do not need to send it again.',
  delivered: 'Your message was delivered to the mailboxes of the recipients below, as you asked to be told.',
  relayed: 'Your message was passed on to the next mail server for the recipients below, as you asked to be told. That server does not send delivery notices, so you will hear nothing more unless it returns the message.',
};

function humanText(input: DsnInput, reportingMta: string): string {
  const lines: string[] = [`This is the mail system at host ${reportingMta}.`, ''];
  const describe = (r: DsnRecipient): void => {
    lines.push(...fold('', `<${clean(r.address)}>`, ''));
    const reason = r.diagnostic !== undefined && clean(r.diagnostic) !== '' ? clean(r.diagnostic) : `status ${ascii(r.status)}`;
    const from = r.remoteMta !== undefined && clean(r.remoteMta) !== '' ? `host ${clean(r.remoteMta)} said:` : 'reason:';
    lines.push(...fold('   ', `${from} ${reason}`, '   '), '');
  };
  for (const action of Object.keys(ACTION_TEXT) as DsnAction[]) {
    const recipients = input.recipients.filter((r) => r.action === action);
    if (recipients.length === 0) continue;
    lines.push(...fold('', ACTION_TEXT[action], ''), '');
    recipients.forEach(describe);
  }
  const attached = input.originalMessage ? 'Your message is attached.' : 'The headers of your message are attached.';
  lines.push(...fold('', `${attached} Queue id: ${ascii(input.queueId)}.`, ''));
  return lines.join(CRLF) + CRLF;
}

function deliveryStatus(input: DsnInput, reportingMta: string): string {
  const lines = [
    // RFC 3464 2.2: Original-Envelope-Id comes first
    ...(input.envelopeId !== undefined && ascii(input.envelopeId) !== '' ? [foldedHeader('Original-Envelope-Id', ascii(input.envelopeId))] : []),
    foldedHeader('Reporting-MTA', `dns; ${reportingMta}`),
    foldedHeader('X-Ownrelay-Queue-ID', ascii(input.queueId)),
    foldedHeader('Arrival-Date', rfc5322Date(input.arrivalDate)),
  ];
  for (const r of input.recipients) {
    const fallback = FALLBACK_STATUS[r.action];
    const status = /^[245]\.\d{1,3}\.\d{1,3}$/.test(r.status) && STATUS_CLASSES[r.action].includes(r.status[0]!) ? r.status : fallback;
    lines.push('');
    if (r.originalRecipient !== undefined && /^[^;]+;./.test(ascii(r.originalRecipient))) {
      // RFC 3464 2.3.1: "addr-type; address", as ORCPT gave it
      const orcpt = ascii(r.originalRecipient);
      const semicolon = orcpt.indexOf(';');
      lines.push(foldedHeader('Original-Recipient', `${orcpt.slice(0, semicolon).trim()}; ${orcpt.slice(semicolon + 1).trim()}`));
    }
    lines.push(foldedHeader('Final-Recipient', recipientField(r.address)), `Action: ${r.action}`, `Status: ${status}`);
    if (r.remoteMta !== undefined && ascii(r.remoteMta) !== '') lines.push(foldedHeader('Remote-MTA', `dns; ${ascii(r.remoteMta)}`));
    if (r.diagnostic !== undefined && ascii(r.diagnostic) !== '') {
      const text = ascii(r.diagnostic);
      // RFC 3464: "smtp" for SMTP replies; Postfix uses "X-Unix" for local error text.
      lines.push(foldedHeader('Diagnostic-Code', `${/^[245]\d\d(\s|-|$)/.test(text) ? 'smtp' : 'X-Unix'}; ${text}`));
    }
  }
  return lines.join(CRLF) + CRLF;
}

/** The status of each action when none fits (RFC 3464 2.3.4). */
export const FALLBACK_STATUS: Record<DsnAction, string> = { failed: '5.0.0', delayed: '4.0.0', delivered: '2.0.0', relayed: '2.0.0' };
/** The status classes each action may have: a failure after persistent 4xx replies may keep its 4.x.x. */
const STATUS_CLASSES: Record<DsnAction, string> = { failed: '45', delayed: '4', delivered: '2', relayed: '2' };

function subject(recipients: DsnRecipient[]): string {
  if (recipients.some((r) => r.action === 'failed')) return 'Undelivered Mail Returned to Sender';
  if (recipients.every((r) => r.action === 'delayed')) return 'Delayed Mail (still being retried)';
  if (recipients.every((r) => r.action === 'delivered' || r.action === 'relayed')) return 'Successful Mail Delivery Report';
  return 'Mail Delivery Status Report';
}

/** The returned message as the third part: the whole message, or its headers. */
function originalPart(input: DsnInput): { type: string; body: Buffer } {
  const full = input.originalMessage;
  if (!full) return { type: 'text/rfc822-headers', body: embeddableHeaders(input.originalHeaders) };
  // the queued message already has CRLF line ends and lines the size limits allow
  const body = full.length >= 2 && full[full.length - 2] === 0x0d && full[full.length - 1] === 0x0a ? full : Buffer.concat([full, Buffer.from(CRLF)]);
  // RFC 6532: a message with UTF-8 in its header fields is returned as message/global
  return { type: is8bit(input.originalHeaders) ? 'message/global' : 'message/rfc822', body };
}

function is8bit(data: Buffer): boolean {
  return data.some((byte) => byte > 0x7f);
}

/**
 * Builds the DSN message (CRLF, ready to queue with the null sender). Throws for
 * an empty `originalFrom` or no recipients: RFC 5321 section 6.1 forbids bouncing
 * a bounce, and an empty report is a caller bug.
 */
export function buildDsn(input: DsnInput): Buffer {
  const to = clean(input.originalFrom);
  if (to === '') throw new Error('no DSN for the null sender');
  if (input.recipients.length === 0) throw new Error('a DSN needs at least one recipient');
  const now = input.now ?? new Date();
  const reportingMta = ascii(input.reportingMta);

  const parts = [
    { type: 'text/plain; charset=utf-8', body: Buffer.from(humanText(input, reportingMta), 'utf8') },
    { type: 'message/delivery-status', body: Buffer.from(deliveryStatus(input, reportingMta), 'latin1') },
    originalPart(input),
  ];
  const content = Buffer.concat([...parts.map((p) => p.body), Buffer.from(to)]);
  let boundary: string;
  do boundary = `=_dsn_${randomBytes(12).toString('hex')}`;
  while (content.includes(boundary));

  const any8bit = parts.some((p) => is8bit(p.body)) || /[^\x00-\x7f]/.test(to);
  const idLocal = [randomBytes(6).toString('hex'), ascii(input.queueId).replace(/[^A-Za-z0-9_-]/g, '')].filter((s) => s !== '').join('.');
  const head = [
    foldedHeader('From', `Mail Delivery System <MAILER-DAEMON@${reportingMta}>`),
    foldedHeader('To', `<${to}>`),
    foldedHeader('Subject', subject(input.recipients)),
    foldedHeader('Date', rfc5322Date(now)),
    foldedHeader('Message-ID', `<${idLocal}@${reportingMta}>`),
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status;${CRLF} boundary="${boundary}"`,
    ...(any8bit ? ['Content-Transfer-Encoding: 8bit'] : []),
    '',
    'This is a MIME-encapsulated message.',
    '',
  ].join(CRLF);

  const chunks: Buffer[] = [Buffer.from(head + CRLF, 'utf8')];
  for (const part of parts) {
    const cte = is8bit(part.body) ? '8bit' : '7bit';
    // The CRLF after the body belongs to the next delimiter (RFC 2046), so the body keeps its own last CRLF.
    chunks.push(Buffer.from(`--${boundary}${CRLF}Content-Type: ${part.type}${CRLF}Content-Transfer-Encoding: ${cte}${CRLF}${CRLF}`, 'latin1'), part.body, Buffer.from(CRLF));
  }
  chunks.push(Buffer.from(`--${boundary}--${CRLF}`, 'latin1'));
  return Buffer.concat(chunks);
}
