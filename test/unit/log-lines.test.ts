import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { RELAY_UNIT_NAME } from '../../infra/render/systemd-unit';
import { formatLogEntry, matchesFilter, matchingEntries, parseLogLine } from '../../server/cli/log-lines';
import { RELAY_UNIT, journalctlArgs, sinceMs } from '../../server/cli/logs-command';

const accepted = { level: 'info', time: '2026-11-30T02:37:39.123Z', service: 'ownrelay', event: 'accepted', queueId: 'AAA', msg: 'accepted AAA from <a@example.org>' };
const bounced = { level: 'warn', time: '2026-11-30T02:40:00.000Z', event: 'bounced', queueId: 'AAA', bounceId: 'BBB', msg: 'bounced AAA: DSN BBB to <a@example.org>' };
const bounceDelivered = { level: 'info', time: '2026-11-30T02:40:01.000Z', event: 'delivered', queueId: 'BBB', msg: 'delivered BBB to <a@example.org>: 250 ok' };

describe("reading the relay's log", () => {
  test('only JSON objects are log entries; other lines are passed over', () => {
    assert.deepEqual(parseLogLine(JSON.stringify(accepted)), accepted);
    for (const other of ['', 'Warning: something from the runtime', '{"broken', '[1,2]', 'null']) assert.equal(parseLogLine(other), undefined, other);
  });

  test("a queue id selects the message's lines, and a notice's story starts at the line of the message it came from", () => {
    assert.ok(matchesFilter(accepted, { queueId: 'AAA' }));
    assert.ok(matchesFilter(bounced, { queueId: 'AAA' }));
    assert.ok(matchesFilter(bounced, { queueId: 'BBB' }));
    assert.ok(matchesFilter(bounceDelivered, { queueId: 'BBB' }));
    assert.equal(matchesFilter(accepted, { queueId: 'BBB' }), false);
  });

  test('events and a start time narrow it down; a line without a time is not after any start', () => {
    assert.ok(matchesFilter(bounced, { events: ['bounced', 'failed'] }));
    assert.equal(matchesFilter(accepted, { events: ['bounced'] }), false);
    assert.ok(matchesFilter(bounced, { sinceMs: Date.parse('2026-11-30T02:40:00Z') }));
    assert.equal(matchesFilter(accepted, { sinceMs: Date.parse('2026-11-30T02:40:00Z') }), false);
    assert.equal(matchesFilter({ event: 'x' }, { sinceMs: 0 }), false);
  });

  test('a line reads: time to the second, level, event, message', () => {
    assert.equal(formatLogEntry(accepted), '2026-11-30T02:37:39Z info  accepted         accepted AAA from <a@example.org>');
    assert.equal(formatLogEntry({ msg: 'no fields' }), '- -     -                no fields');
  });

  test('the entries of a stream come in order, filtered, each with its text unchanged', async () => {
    const text = [JSON.stringify(accepted), 'not json', JSON.stringify(bounced), JSON.stringify(bounceDelivered)].join('\n');
    const found = [];
    for await (const { entry, text: line } of matchingEntries(Readable.from([text]), { queueId: 'BBB' })) found.push([entry.event, line]);
    assert.deepEqual(found, [['bounced', JSON.stringify(bounced)], ['delivered', JSON.stringify(bounceDelivered)]]);
  });

  test('--since takes an age or a time, and anything else is an error', () => {
    const now = Date.parse('2026-11-30T12:00:00Z');
    assert.equal(sinceMs('30m', now), now - 30 * 60_000);
    assert.equal(sinceMs('2d', now), now - 2 * 86_400_000);
    assert.equal(sinceMs('2026-11-30T08:00:00Z', now), Date.parse('2026-11-30T08:00:00Z'));
    assert.throws(() => sinceMs('yesterday-ish', now), /give an age \(90s, 30m, 4h, 2d\) or a time/);
  });

  test('the journal is read for the unit the deploy installs, as the relay wrote its lines', () => {
    assert.equal(RELAY_UNIT, RELAY_UNIT_NAME);
    assert.deepEqual(journalctlArgs({}), ['-u', 'ownrelay.service', '-o', 'cat', '--no-pager']);
    assert.deepEqual(journalctlArgs({ sinceMs: 1_764_470_400_500, follow: true }), ['-u', 'ownrelay.service', '-o', 'cat', '--no-pager', '--since=@1764470400', '--follow']);
  });
});
