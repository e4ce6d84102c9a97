/**
 * The last delivery error per domain (`ownrelay status`): its rules, and its file,
 * which carries the list across restarts and never stops the relay when it is bad.
 */
import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { DeliveryErrors } from '../../server/admin/delivery-errors';

let dir: string;
let file: string;
let warnings: Array<Record<string, unknown>>;
let logger: pino.Logger;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'ownrelay-delivery-errors-'));
  file = join(dir, 'state', 'delivery-errors.json');
  warnings = [];
  logger = pino({ level: 'warn', base: null }, new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) warnings.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  }));
});

afterEach(() => rmSync(dir, { recursive: true, force: true }));

const deferred = (address: string, reply: string) => ({ address, outcome: 'deferred' as const, reply, remoteHost: `mx.${address.split('@')[1]}` });

test('one entry per domain, most recent first, counted until a delivery clears it', () => {
  const errors = new DeliveryErrors();
  errors.record('q1', deferred('a@one.test', '451 4.3.0 busy'));
  errors.record('q2', deferred('b@two.test', '421 4.7.0 slow down'));
  errors.record('q3', deferred('c@one.test', '451 4.3.0 still busy'));
  assert.deepEqual(errors.list().map((e) => [e.domain, e.count, e.queueId, e.reply]), [
    ['one.test', 2, 'q3', '451 4.3.0 still busy'],
    ['two.test', 1, 'q2', '421 4.7.0 slow down'],
  ]);
  errors.record('q4', { address: 'd@one.test', outcome: 'delivered', reply: '250 ok' });
  assert.deepEqual(errors.list().map((e) => e.domain), ['two.test']);
});

test('the list outlives a restart: written at close, read back in the same order', () => {
  const first = new DeliveryErrors({ file, logger });
  first.record('q1', deferred('a@one.test', '451 4.3.0 busy'));
  first.record('q2', { address: 'b@two.test', outcome: 'failed', reply: '550 5.1.1 no such user' });
  assert.equal(existsSync(file), false, 'not written at every change');
  first.close();
  assert.equal(existsSync(file), true);
  const second = new DeliveryErrors({ file, logger });
  assert.deepEqual(second.list(), first.list());
  assert.deepEqual(warnings, []);

  // a delivery clears the domain in the file too
  second.record('q3', { address: 'c@two.test', outcome: 'delivered', reply: '250 ok' });
  second.close();
  assert.deepEqual(new DeliveryErrors({ file, logger }).list().map((e) => e.domain), ['one.test']);
});

test('a delivery that changes nothing writes nothing', () => {
  const errors = new DeliveryErrors({ file, logger });
  errors.record('q1', { address: 'a@one.test', outcome: 'delivered', reply: '250 ok' });
  errors.close();
  assert.equal(existsSync(file), false);
});

test('a corrupt file is logged and ignored, and replaced at the next write', () => {
  mkdirSync(join(dir, 'state'));
  for (const content of ['{"version":1,"errors":[{"domain":"x.test"}]}', 'not json', '{"version":2,"errors":[]}']) {
    writeFileSync(file, content);
    warnings = [];
    const errors = new DeliveryErrors({ file, logger });
    assert.deepEqual(errors.list(), []);
    assert.equal(warnings.length, 1, content);
    assert.equal(warnings[0]!.event, 'delivery-errors-file');
    assert.match(String(warnings[0]!.msg), /ignoring the unreadable list/);
  }
  const errors = new DeliveryErrors({ file, logger });
  errors.record('q1', deferred('a@one.test', '451 4.3.0 busy'));
  errors.close();
  assert.equal(JSON.parse(readFileSync(file, 'utf8')).errors[0].domain, 'one.test');
});

test('a file that cannot be written is logged; the list still works in memory', () => {
  // the state "directory" is a file: no one, root included, can create a file in it
  writeFileSync(join(dir, 'state'), 'not a directory');
  const errors = new DeliveryErrors({ file, logger });
  errors.record('q1', deferred('a@one.test', '451 4.3.0 busy'));
  errors.close();
  assert.equal(errors.list().length, 1);
  assert.deepEqual(warnings.map((w) => String(w.msg).replace(/ from .*| to .*/, '')), ['cannot read the last delivery errors', 'cannot write the last delivery errors']);
});
