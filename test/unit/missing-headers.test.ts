import assert from 'node:assert/strict';
import { test } from 'node:test';
import { headerTextOf } from '../../server/stages/message-header';
import { missingHeaderFields as missingIn } from '../../server/stages/missing-headers';

const fill = { messageId: '<Q1@relay.test>', date: new Date('2026-11-29T15:20:58Z') };

/** As the data stage calls it: on the header block of the message as queued. */
const missingHeaderFields = (message: Buffer, values: typeof fill) => missingIn(headerTextOf(message), values);

test('a message without Date and Message-ID gets both', () => {
  assert.equal(missingHeaderFields(Buffer.from('Subject: hi\r\nFrom: a@b.test\r\n\r\nbody\r\n'), fill), 'Date: Sun, 29 Nov 2026 15:20:58 +0000\r\nMessage-ID: <Q1@relay.test>\r\n');
});

test('fields present in any case, or as the first line, are kept and not added again', () => {
  assert.equal(missingHeaderFields(Buffer.from('date: Sat, 28 Nov 2026 10:00:00 +0100\r\nMESSAGE-ID: <x@y>\r\n\r\n'), fill), '');
  assert.equal(missingHeaderFields(Buffer.from('Subject: a\r\nMessage-Id : <x@y>\r\n\r\n'), fill), 'Date: Sun, 29 Nov 2026 15:20:58 +0000\r\n');
});

test('only the header block counts: a Message-ID in the body or in a folded line is not the field', () => {
  const text = 'Subject: about\r\n Message-ID: folded, not a field\r\n\r\nMessage-ID: <in@body>\r\nDate: in the body\r\n';
  assert.equal(missingHeaderFields(Buffer.from(text), fill), 'Date: Sun, 29 Nov 2026 15:20:58 +0000\r\nMessage-ID: <Q1@relay.test>\r\n');
});

test('a message that is all header lines, or empty, is handled', () => {
  assert.equal(missingHeaderFields(Buffer.from('Date: x\r\nMessage-ID: <a@b>\r\n'), fill), '');
  assert.equal(missingHeaderFields(Buffer.alloc(0), fill).split('\r\n').length, 3);
});
