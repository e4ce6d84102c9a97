import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SuspendedDestinations } from '../../server/queue/suspended-destinations';
import type { RecipientResult } from '../../server/delivery/types';

const down = (reply = 'connect ECONNREFUSED'): RecipientResult[] => [
  { address: 'a@x.test', outcome: 'deferred', reply, unreachable: true },
  { address: 'b@x.test', outcome: 'deferred', reply, unreachable: true },
];

test('a destination whose every recipient was unreachable is suspended until its time runs out', () => {
  const suspended = new SuspendedDestinations();
  assert.equal(suspended.record('mx:x.test', down(), 1000, 10_000), 'suspended');
  assert.deepEqual(suspended.current('mx:x.test', 10_500), { until: 11_000, reason: 'connect ECONNREFUSED' });
  assert.equal(suspended.current('mx:y.test', 10_500), undefined, 'other destinations are not affected');
  // a second failure while suspended extends it without announcing it again
  assert.equal(suspended.record('mx:x.test', down('timed out'), 1000, 10_800), undefined);
  assert.deepEqual(suspended.current('mx:x.test', 11_500), { until: 11_800, reason: 'timed out' });
  assert.equal(suspended.current('mx:x.test', 11_800), undefined, 'expired');
});

test('any answer from the destination lifts the suspension; a 4xx or a partly unreachable result never suspends', () => {
  const suspended = new SuspendedDestinations();
  suspended.record('mx:x.test', down(), 60_000, 0);
  const greylisted: RecipientResult[] = [{ address: 'a@x.test', outcome: 'deferred', reply: '451 4.7.1 greylisted', remoteHost: 'mx.x.test' }];
  assert.equal(suspended.record('mx:x.test', greylisted, 60_000, 1), 'lifted');
  assert.equal(suspended.current('mx:x.test', 2), undefined);
  assert.equal(suspended.record('mx:x.test', greylisted, 60_000, 3), undefined);
  assert.equal(suspended.record('mx:x.test', [down()[0]!, { address: 'b@x.test', outcome: 'delivered', reply: '250 ok' }], 60_000, 4), undefined);
  assert.equal(suspended.record('mx:x.test', [], 60_000, 5), undefined, 'no results, nothing learned');
  assert.equal(suspended.current('mx:x.test', 6), undefined);
});

test('clear lifts every suspension', () => {
  const suspended = new SuspendedDestinations();
  suspended.record('mx:x.test', down(), 60_000, 0);
  suspended.record('hop:h:25:none:', down(), 60_000, 0);
  suspended.clear();
  assert.equal(suspended.current('mx:x.test', 1), undefined);
  assert.equal(suspended.current('hop:h:25:none:', 1), undefined);
});

test('list names the suspended destinations, soonest to end first, without expired ones', () => {
  const suspended = new SuspendedDestinations();
  suspended.record('mx:late.test', down('timed out'), 5000, 0, 'late.test');
  suspended.record('mx:soon.test', down(), 1000, 0, 'soon.test');
  suspended.record('hop:h:587:required:', down(), 500, 0, 'h:587');
  assert.deepEqual(suspended.list(600), [
    { destination: 'soon.test', until: new Date(1000).toISOString(), reason: 'connect ECONNREFUSED' },
    { destination: 'late.test', until: new Date(5000).toISOString(), reason: 'timed out' },
  ]);
});
