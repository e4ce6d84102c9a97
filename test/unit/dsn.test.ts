import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { buildDsn, headerBlock, statusFromReply, type DsnInput } from '../../server/delivery/dsn';

// No MIME parser is installed, so this is a small, strict one: it fails on
// anything a real parser would have to guess about.

interface Entity {
  headers: Map<string, string[]>;
  body: string;
}

function parseEntity(text: string): Entity {
  const split = text.indexOf('\r\n\r\n');
  assert.ok(split >= 0, 'an entity has a blank line after its headers');
  const headers = new Map<string, string[]>();
  const unfolded = text.slice(0, split).replace(/\r\n(?=[ \t])/g, '');
  for (const line of unfolded.split('\r\n')) {
    const m = /^([\x21-\x39\x3b-\x7e]+):[ \t]*(.*)$/.exec(line);
    assert.ok(m, `a header line: ${JSON.stringify(line)}`);
    const name = m[1]!.toLowerCase();
    headers.set(name, [...(headers.get(name) ?? []), m[2]!]);
  }
  return { headers, body: text.slice(split + 4) };
}

function one(e: Entity, name: string): string {
  const values = e.headers.get(name.toLowerCase()) ?? [];
  assert.equal(values.length, 1, `exactly one ${name} header`);
  return values[0]!;
}

function parseMultipart(message: string): { top: Entity; boundary: string; parts: Entity[] } {
  const top = parseEntity(message);
  const m = /^multipart\/report;\s*report-type=delivery-status;\s*boundary="([^"]+)"$/.exec(one(top, 'Content-Type'));
  assert.ok(m, 'multipart/report with a quoted boundary');
  const boundary = m[1]!;
  const sections = top.body.split(`\r\n--${boundary}`);
  assert.ok(sections[0]!.split('\r\n').every((l) => !l.startsWith(`--${boundary}`)), 'no delimiter inside the preamble');
  const last = sections.pop()!;
  assert.equal(last, '--\r\n', 'the close delimiter ends the message');
  const parts = sections.slice(1).map((s) => {
    assert.ok(s.startsWith('\r\n'), 'a delimiter line ends right after the boundary');
    return parseEntity(s.slice(2));
  });
  return { top, boundary, parts };
}

/** RFC 3464 fields: groups separated by blank lines, each a map of unfolded fields. */
function statusGroups(body: string): Map<string, string>[] {
  return body
    .replace(/(\r\n)+$/, '')
    .split('\r\n\r\n')
    .map((group) => {
      const fields = new Map<string, string>();
      for (const line of group.replace(/\r\n(?=[ \t])/g, '').split('\r\n')) {
        const i = line.indexOf(':');
        assert.ok(i > 0, `a field: ${JSON.stringify(line)}`);
        fields.set(line.slice(0, i).toLowerCase(), line.slice(i + 1).trim());
      }
      return fields;
    });
}

function assertWellFormed(raw: Buffer): void {
  const text = raw.toString('latin1');
  assert.doesNotMatch(text, /\r(?!\n)/, 'no bare CR');
  assert.doesNotMatch(text, /(?<!\r)\n/, 'no bare LF');
  assert.ok(text.endsWith('\r\n'));
  for (const line of text.split('\r\n')) assert.ok(Buffer.byteLength(line, 'latin1') <= 998, `line of ${line.length} bytes`);
}

const ORIGINAL_HEADERS = Buffer.from('From: Sender <sender@example.net>\r\nTo: alice@example.com\r\nSubject: quarterly report\r\nMessage-ID: <m1@example.net>\r\n');

function input(over: Partial<DsnInput> = {}): DsnInput {
  return {
    reportingMta: 'mx.example.org',
    queueId: '01JABCDEF',
    originalFrom: 'sender@example.net',
    arrivalDate: new Date('2025-03-04T05:06:07Z'),
    recipients: [
      { address: 'alice@example.com', action: 'failed', status: '5.1.1', diagnostic: '550 5.1.1 <alice@example.com>: no such user', remoteMta: 'mx1.example.com' },
      { address: 'bob@example.com', action: 'failed', status: '5.4.7', diagnostic: 'delivery time expired' },
    ],
    originalHeaders: ORIGINAL_HEADERS,
    now: new Date('2025-03-09T05:06:07Z'),
    ...over,
  };
}

describe('buildDsn', () => {
  test('produces a multipart/report with the required top-level headers', () => {
    const raw = buildDsn(input());
    assertWellFormed(raw);
    const { top } = parseMultipart(raw.toString('latin1'));
    assert.equal(one(top, 'From'), 'Mail Delivery System <MAILER-DAEMON@mx.example.org>');
    assert.equal(one(top, 'To'), '<sender@example.net>');
    assert.equal(one(top, 'Subject'), 'Undelivered Mail Returned to Sender');
    assert.equal(one(top, 'Date'), 'Sun, 09 Mar 2025 05:06:07 +0000');
    assert.match(one(top, 'Message-ID'), /^<[A-Za-z0-9._-]+@mx\.example\.org>$/);
    assert.equal(one(top, 'Auto-Submitted'), 'auto-replied');
    assert.equal(one(top, 'MIME-Version'), '1.0');
  });

  test('has a text part, a delivery-status part and the original headers, in that order', () => {
    const { parts } = parseMultipart(buildDsn(input()).toString('latin1'));
    assert.deepEqual(parts.map((p) => one(p, 'Content-Type').split(';')[0]), ['text/plain', 'message/delivery-status', 'text/rfc822-headers']);
    assert.match(parts[0]!.body, /<alice@example\.com>/);
    assert.match(parts[0]!.body, /mx1\.example\.com said:/);
    assert.match(parts[0]!.body, /no such user/);
    assert.match(parts[0]!.body, /<bob@example\.com>/);
    assert.equal(parts[2]!.body, ORIGINAL_HEADERS.toString('latin1'), 'the headers keep their last CRLF');
  });

  test('reports per-message and per-recipient fields as RFC 3464 describes', () => {
    const { parts } = parseMultipart(buildDsn(input()).toString('latin1'));
    const [perMessage, alice, bob, ...rest] = statusGroups(parts[1]!.body);
    assert.equal(rest.length, 0);
    assert.equal(perMessage!.get('reporting-mta'), 'dns; mx.example.org');
    assert.equal(perMessage!.get('arrival-date'), 'Tue, 04 Mar 2025 05:06:07 +0000');
    assert.equal(alice!.get('final-recipient'), 'rfc822; alice@example.com');
    assert.equal(alice!.get('action'), 'failed');
    assert.equal(alice!.get('status'), '5.1.1');
    assert.equal(alice!.get('remote-mta'), 'dns; mx1.example.com');
    assert.equal(alice!.get('diagnostic-code'), 'smtp; 550 5.1.1 <alice@example.com>: no such user');
    assert.equal(bob!.get('status'), '5.4.7');
    assert.equal(bob!.has('remote-mta'), false);
    assert.equal(bob!.get('diagnostic-code'), 'X-Unix; delivery time expired');
  });

  test('uses the delay subject when every recipient is delayed', () => {
    const raw = buildDsn(input({ recipients: [{ address: 'a@example.com', action: 'delayed', status: '4.4.1', diagnostic: 'connection timed out' }] }));
    const { top, parts } = parseMultipart(raw.toString('latin1'));
    assert.equal(one(top, 'Subject'), 'Delayed Mail (still being retried)');
    assert.equal(statusGroups(parts[1]!.body)[1]!.get('action'), 'delayed');
    assert.match(parts[0]!.body, /still being retried/);
  });

  test('neutralises CR and LF in remote replies, host names and addresses', () => {
    const raw = buildDsn(input({
      originalFrom: 'sender@example.net\r\nBcc: victim@example.com',
      recipients: [{ address: 'a@example.com\r\nBcc: x', action: 'failed', status: '5.0.0', diagnostic: '550 no\r\nBcc: x\r\n\r\n--injected', remoteMta: 'mx\r\nBcc: x' }],
    }));
    assertWellFormed(raw);
    const text = raw.toString('latin1');
    assert.doesNotMatch(text, /^Bcc:/m);
    assert.doesNotMatch(text, /^--injected/m);
    const { top, parts } = parseMultipart(text);
    assert.equal(top.headers.has('bcc'), false);
    const fields = statusGroups(parts[1]!.body)[1]!;
    assert.equal(fields.get('diagnostic-code'), 'smtp; 550 no Bcc: x --injected');
  });

  test('folds a long diagnostic so that no line reaches 998 bytes, losing no characters', () => {
    const word = 'x'.repeat(5000);
    const diagnostic = `550 5.7.1 ${word} ${'blocked '.repeat(300)}end`;
    const raw = buildDsn(input({ recipients: [{ address: 'a@example.com', action: 'failed', status: '5.7.1', diagnostic }] }));
    assertWellFormed(raw);
    const { parts } = parseMultipart(raw.toString('latin1'));
    const code = statusGroups(parts[1]!.body)[1]!.get('diagnostic-code')!;
    assert.equal(code.replace(/\s/g, ''), `smtp;${diagnostic}`.replace(/\s/g, ''));
  });

  test('writes over-long original header lines and bare LFs as short CRLF lines', () => {
    const headers = Buffer.from(`Subject: a\nX-Long: ${'y'.repeat(3000)}\r\nTo: b\n`);
    const raw = buildDsn(input({ originalHeaders: headers }));
    assertWellFormed(raw);
    const { parts } = parseMultipart(raw.toString('latin1'));
    const part3 = parseEntity(parts[2]!.body + '\r\n');
    assert.equal(one(part3, 'X-Long').replace(/\s/g, ''), 'y'.repeat(3000));
    assert.equal(one(part3, 'To'), 'b');
  });

  test('marks 8-bit content and encodes a non-ASCII recipient as RFC 6533 utf-8 xtext', () => {
    const raw = buildDsn(input({
      originalHeaders: Buffer.from('Subject: Grüße\r\n'),
      recipients: [{ address: 'jörg+x@example.com', action: 'failed', status: '5.1.1' }],
    }));
    assertWellFormed(raw);
    const { top, parts } = parseMultipart(raw.toString('latin1'));
    assert.equal(one(top, 'Content-Transfer-Encoding'), '8bit');
    assert.equal(one(parts[1]!, 'Content-Transfer-Encoding'), '7bit');
    assert.equal(one(parts[2]!, 'Content-Transfer-Encoding'), '8bit');
    assert.equal(statusGroups(parts[1]!.body)[1]!.get('final-recipient'), 'utf-8; j\\x{F6}rg\\x{2B}x@example.com');
    assert.ok(parts[2]!.body.includes(Buffer.from('Grüße').toString('latin1')), 'original bytes kept');
  });

  test('uses a boundary that occurs only as delimiters', () => {
    const raw = buildDsn(input()).toString('latin1');
    const { boundary } = parseMultipart(raw);
    assert.equal(raw.split(boundary).length - 1, 5, 'Content-Type plus three delimiters and the close delimiter');
  });

  test('replaces a malformed status with the default for the action', () => {
    const raw = buildDsn(input({ recipients: [{ address: 'a@example.com', action: 'delayed', status: 'x\r\nBcc: y' }] }));
    const { parts } = parseMultipart(raw.toString('latin1'));
    assert.equal(statusGroups(parts[1]!.body)[1]!.get('status'), '4.0.0');
  });

  test('RFC 3461: Original-Envelope-Id leads the per-message fields, Original-Recipient the recipient fields', () => {
    const raw = buildDsn(input({
      envelopeId: 'order 17\r\nBcc: x',
      recipients: [{ address: 'alice@example.com', action: 'failed', status: '5.1.1', originalRecipient: 'rfc822;list@example.net' }],
    }));
    assertWellFormed(raw);
    const { parts } = parseMultipart(raw.toString('latin1'));
    const lines = parts[1]!.body.split('\r\n');
    assert.equal(lines[0], 'Original-Envelope-Id: order 17 Bcc: x', 'first, and on one line');
    const [, alice] = statusGroups(parts[1]!.body);
    assert.equal(alice!.get('original-recipient'), 'rfc822; list@example.net');
    assert.equal([...alice!.keys()][0], 'original-recipient', 'before Final-Recipient');
  });

  test('leaves out an ORCPT without an address type and an empty ENVID', () => {
    const raw = buildDsn(input({ envelopeId: '', recipients: [{ address: 'a@example.com', action: 'failed', status: '5.1.1', originalRecipient: 'no-type' }] }));
    const { parts } = parseMultipart(raw.toString('latin1'));
    const [perMessage, a] = statusGroups(parts[1]!.body);
    assert.equal(perMessage!.has('original-envelope-id'), false);
    assert.equal(a!.has('original-recipient'), false);
  });

  test('success notices: Action delivered or relayed with a 2.x.x status, their own subject and text', () => {
    const raw = buildDsn(input({
      recipients: [
        { address: 'a@example.com', action: 'delivered', status: '2.0.0', diagnostic: '250 2.0.0 delivered to mailbox a' },
        { address: 'b@example.com', action: 'relayed', status: '5.1.1', diagnostic: '250 ok', remoteMta: 'mx.example.com' },
      ],
    }));
    assertWellFormed(raw);
    const { top, parts } = parseMultipart(raw.toString('latin1'));
    assert.equal(one(top, 'Subject'), 'Successful Mail Delivery Report');
    const [, a, b] = statusGroups(parts[1]!.body);
    assert.equal(a!.get('action'), 'delivered');
    assert.equal(b!.get('action'), 'relayed');
    assert.equal(b!.get('status'), '2.0.0', 'a status of the wrong class falls back to the action\'s');
    assert.match(parts[0]!.body, /delivered to the mailboxes/);
    assert.match(parts[0]!.body, /passed on to the next mail server/);
  });

  test('RET=FULL: the whole message as message/rfc822, or message/global when its headers carry UTF-8', () => {
    const message = Buffer.from('Subject: quarterly report\r\n\r\nthe numbers\r\n');
    const { parts } = parseMultipart(buildDsn(input({ originalMessage: message })).toString('latin1'));
    assert.equal(one(parts[2]!, 'Content-Type'), 'message/rfc822');
    assert.equal(parts[2]!.body, message.toString('latin1'));
    assert.match(parts[0]!.body, /Your message is attached\./);

    const utf8 = Buffer.from('Subject: Grüße\r\n\r\nbody without a final line end');
    const raw = buildDsn(input({ originalHeaders: Buffer.from('Subject: Grüße\r\n'), originalMessage: utf8 }));
    assertWellFormed(raw);
    const global = parseMultipart(raw.toString('latin1')).parts[2]!;
    assert.equal(one(global, 'Content-Type'), 'message/global');
    assert.equal(one(global, 'Content-Transfer-Encoding'), '8bit');
    assert.equal(global.body, `${utf8.toString('latin1')}\r\n`, 'a CRLF is added where the message lacks one');
  });

  test('refuses to build a DSN for the null sender', () => {
    assert.throws(() => buildDsn(input({ originalFrom: '' })), /null sender/);
  });
});

describe('statusFromReply', () => {
  test('takes the enhanced status code from a reply', () => {
    assert.equal(statusFromReply('550 5.1.1 <a@b>: no such user', '5.0.0'), '5.1.1');
    assert.equal(statusFromReply('452-4.2.2 mailbox full', '4.0.0'), '4.2.2');
    assert.equal(statusFromReply('554 5.7.123 policy', 'z'), '5.7.123');
    assert.equal(statusFromReply('4.4.1 connection timed out', 'z'), '4.4.1');
  });

  test('derives the status from the basic code when there is no usable enhanced code', () => {
    assert.equal(statusFromReply('550 no such user', 'z'), '5.0.0');
    assert.equal(statusFromReply('421 try later', 'z'), '4.0.0');
    assert.equal(statusFromReply('550 4.1.1 contradiction', 'z'), '5.0.0');
    assert.equal(statusFromReply('550 5.1.1234 too long', 'z'), '5.0.0');
  });

  test('returns the fallback for text that is not an SMTP reply', () => {
    assert.equal(statusFromReply('connect ECONNREFUSED 192.0.2.1:25', '4.4.1'), '4.4.1');
    assert.equal(statusFromReply('', '4.0.0'), '4.0.0');
    assert.equal(statusFromReply('5501 nonsense', '4.0.0'), '4.0.0');
  });
});

describe('headerBlock', () => {
  test('returns the header lines up to the first empty line', () => {
    assert.equal(headerBlock(Buffer.from('A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore')).toString(), 'A: 1\r\nB: 2\r\n');
    assert.equal(headerBlock(Buffer.from('A: 1\nB: 2\n\nbody')).toString(), 'A: 1\nB: 2\n');
  });

  test('returns nothing for a message that starts with an empty line, and everything when there is no body', () => {
    assert.equal(headerBlock(Buffer.from('\r\nbody')).length, 0);
    assert.equal(headerBlock(Buffer.from('A: 1\r\nB: 2\r\n')).toString(), 'A: 1\r\nB: 2\r\n');
  });

  test('caps the block at 64 KiB, cutting at a line end', () => {
    const line = `X-Filler: ${'z'.repeat(988)}\r\n`; // 1000 bytes
    const block = headerBlock(Buffer.from(line.repeat(100) + '\r\nbody'));
    assert.equal(block.length, 65 * 1000);
    assert.ok(block.toString().endsWith('\r\n'));
  });
});
