/**
 * `ownrelay logs` run as a child process over the log of a relay that ran as a
 * child process: one message delivered into a local Maildir, one deferred by a
 * destination that refuses connections. The log is the file the relay's output
 * went to, as `npm start > relay.log` makes one; the journal path (journalctl)
 * is run for real too, and the test on a booted server reads the journal.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { adminTestRelayConfig } from '../helpers/admin-relay-config';
import { runCli } from '../helpers/ownrelay-cli';
import { closedPort } from '../helpers/ports';
import { removeDir, startRelayProcess, writeTempDir } from '../helpers/relay-process';
import { sendMessage } from '../helpers/smtp-dialog';
import { waitFor } from '../helpers/spool-files';

test("ownrelay logs tells one message's story from the relay's log, filters by event and time, and says when nothing matched", { timeout: 120_000 }, async () => {
  const dir = writeTempDir('ownrelay-logs');
  const logFile = join(dir, 'relay.log');
  const relay = await startRelayProcess(
    adminTestRelayConfig(dir, { 'stuck.test': await closedPort() }),
    { logFile },
  );
  try {
    const delivered = await sendMessage(relay.ports[0]!, { from: 'app@relay.test', to: 'alice@relay.test', subject: 'story' });
    const deferred = await sendMessage(relay.ports[0]!, { from: 'app@relay.test', to: 'bob@stuck.test', subject: 'story' });
    const logged = () => readFileSync(logFile, 'utf8');
    await waitFor(async () => logged().includes(`"delivered ${delivered} to`) && logged().includes(`"queued-for-retry","queueId":"${deferred}"`), 20_000, 'both outcomes in the log');

    const story = await runCli(['logs', '--file', logFile, delivered]);
    assert.equal(story.code, 0, story.stderr);
    const lines = story.stdout.trimEnd().split('\n');
    assert.equal(lines.length, 2, story.stdout);
    assert.match(lines[0]!, new RegExp(`^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ info  accepted +accepted ${delivered} from <app@relay\\.test>$`));
    assert.match(lines[1]!, new RegExp(`^\\S+Z info  delivered +delivered ${delivered} to <alice@relay\\.test>: 250 `));

    const waiting = await runCli(['logs', '--file', logFile, deferred]);
    assert.deepEqual(waiting.stdout.trimEnd().split('\n').map((line) => line.split(/\s+/)[2]), ['accepted', 'deferred', 'queued-for-retry']);

    // the same lines as JSON, from standard input, only some events
    const json = await runCli(['logs', '--file', '-', '--event', 'deferred,delivered', '--json'], { input: logged() });
    const events = json.stdout.trimEnd().split('\n').map((line) => JSON.parse(line) as { event: string; queueId: string });
    assert.deepEqual(events.map((e) => [e.event, e.queueId]).sort(), [['deferred', deferred], ['delivered', delivered]].sort());

    const future = await runCli(['logs', '--file', logFile, '--since', '2999-01-01T00:00:00Z']);
    assert.equal(future.code, 1);
    assert.equal(future.stdout, '');
    assert.match(future.stderr, /no log line matched/);
    const recent = await runCli(['logs', '--file', logFile, '--event', 'accepted', '--since', '10m', '--event', 'queued-for-retry']);
    assert.deepEqual(recent.stdout.trimEnd().split('\n').map((line) => line.split(/\s+/)[2]), ['accepted', 'accepted', 'queued-for-retry']);

    const unknown = await runCli(['logs', '--file', logFile, '0MX0000000000000000']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no log line matched for 0MX0000000000000000/);
    const missing = await runCli(['logs', '--file', join(dir, 'nope.log')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /cannot read .*nope\.log: ENOENT/);
    const follow = await runCli(['logs', '--file', logFile, '--follow']);
    assert.equal(follow.code, 1);
    assert.match(follow.stderr, /tail -f FILE \| ownrelay logs --file -/);

    // a reader that stops early (`| head`) ends the command quietly
    const many = join(dir, 'many.log');
    writeFileSync(many, `${logged()}`.repeat(5000));
    const head = await runCli(['logs', '--file', many], { closeStdoutAfterBytes: 1 });
    assert.equal(head.code, 0, head.stderr);
    assert.doesNotMatch(head.stderr, /EPIPE/);

    // without --file the journal is read: journalctl takes the arguments (this machine's journal has no relay lines)
    const journal = await runCli(['logs', '--since', '1h']);
    assert.doesNotMatch(journal.stderr, /cannot run journalctl|exited with/, journal.stderr);
  } finally {
    await relay.stop();
    removeDir(dir);
  }
});
