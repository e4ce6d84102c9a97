import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { QueueItem } from '../../server/admin/queue-view';
import { formatQueueList } from '../../server/cli/format';

test('queue list says whether the queue is empty or only nothing matched the filter', () => {
  assert.equal(formatQueueList([]), 'Mail queue is empty\n');
  assert.equal(formatQueueList([], true), 'No queued message matches the filter\n');
});

test('queue list prints each message with its pending recipients and their last reply', () => {
  const item: QueueItem = {
    id: '0MX1CLLMI0001484491',
    state: 'deferred',
    nextAttempt: '2026-11-30T04:42:36.000Z',
    receivedAt: '2026-11-30T04:40:00.000Z',
    ageSeconds: 3,
    size: 418,
    from: 'app@example.org',
    attempts: 1,
    recipients: [{ address: 'orders@partner.example.net', status: 'pending', reply: '451 4.7.1 greylisted', remoteHost: 'mx.partner.example.net[192.0.2.9]:25' }],
  };
  const text = formatQueueList([item], true);
  assert.match(text, /^0MX1CLLMI0001484491\s+deferred\s+418 B\s+3s\s+1\s+<app@example\.org> next 04:42:36Z$/m);
  assert.match(text, /pending\s+<orders@partner\.example\.net>/);
  assert.match(text, /\(451 4\.7\.1 greylisted from mx\.partner\.example\.net\[192\.0\.2\.9\]:25\)/);
});
