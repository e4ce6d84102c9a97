/**
 * The filter that removes Authentication-Results fields claiming our
 * authserv-id, fed whole and one byte at a time.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { ForeignAuthResultsFilter } from '../../server/inbound/header-filter';

async function run(input: string, chunkSize?: number): Promise<{ output: string; removed: number }> {
  const bytes = Buffer.from(input, 'latin1');
  const chunks: Buffer[] = [];
  if (chunkSize) for (let i = 0; i < bytes.length; i += chunkSize) chunks.push(bytes.subarray(i, i + chunkSize));
  else chunks.push(bytes);
  const filter = new ForeignAuthResultsFilter('MX.Customer.test');
  const out: Buffer[] = [];
  Readable.from(chunks).pipe(filter);
  for await (const chunk of filter) out.push(chunk as Buffer);
  return { output: Buffer.concat(out).toString('latin1'), removed: filter.removed };
}

const message = [
  'Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000',
  'Authentication-Results: mx.customer.test; dkim=pass header.d=bank.test',
  'Authentication-Results:',
  '  (a comment) mx.customer.test;',
  '  spf=pass smtp.mailfrom=bank.test',
  'authentication-results : other.test; dmarc=fail header.from=bank.test',
  'Authentication-Results: mx.customer.test.evil.test; spf=pass',
  'From: ceo@bank.test',
  'Subject: hi',
  '',
  'Authentication-Results: mx.customer.test; in the body, untouched',
  '',
].join('\r\n');

const expected = [
  'Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000',
  'authentication-results : other.test; dmarc=fail header.from=bank.test',
  'Authentication-Results: mx.customer.test.evil.test; spf=pass',
  'From: ceo@bank.test',
  'Subject: hi',
  '',
  'Authentication-Results: mx.customer.test; in the body, untouched',
  '',
].join('\r\n');

test('fields with our authserv-id are removed, folded or not; others and the body pass unchanged', async () => {
  assert.deepEqual(await run(message), { output: expected, removed: 2 });
});

test('the result does not depend on how the stream is cut', async () => {
  for (const size of [1, 2, 3, 7, 64]) assert.deepEqual(await run(message, size), { output: expected, removed: 2 }, `chunks of ${size}`);
});

test('a message without a body, or ending inside a field, loses nothing else', async () => {
  assert.deepEqual(await run('Subject: x\r\nAuthentication-Results: mx.customer.test; spf=pass\r\n'), { output: 'Subject: x\r\n', removed: 1 });
  assert.deepEqual(await run('Subject: x\r\nX-Tail: no line end'), { output: 'Subject: x\r\nX-Tail: no line end', removed: 0 });
});
