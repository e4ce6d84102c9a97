/**
 * Alias lists and forwards (`aliases: { team: [alice, bob], abuse: ops@dest.test }`)
 * on a relay that delivers to its Maildirs: each target gets one copy, the queue
 * keeps one recipient per target (so one whose mailbox cannot be written is
 * retried alone), DSNs name the alias as the original recipient, a forward goes
 * to the MX of its domain (found through a real DNS server on loopback) with the
 * sender unchanged, and aliases changed by a reload apply to the next message and
 * to the next attempt of queued ones. Mailboxes are read from disk.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { startDestination, type DestinationServer } from '../helpers/destination-server';
import { startDnsServer, type DnsServerHandle } from '../helpers/dns-server';
import { SmtpDialog } from '../helpers/smtp-dialog';
import { filesIn, waitFor, waitForDrainedSpool } from '../helpers/spool-files';
import { baseConfig, startTestRelay, type TestRelay } from '../helpers/test-relay';

const DOMAIN = { name: 'relay.test', delivery: 'maildir', mailboxes: ['alice', 'bob', 'carol'], aliases: { team: ['alice', 'bob'], root: 'carol' } };

let dns: DnsServerHandle;
let destination: DestinationServer;

before(async () => {
  dns = await startDnsServer({
    'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] },
    'mx.dest.test': { A: ['127.0.0.1'] },
  });
  destination = await startDestination();
});

after(async () => {
  await destination.close();
  await dns.close();
});

/** Sends one message over the mx listener (from carol@relay.test unless `from` says otherwise); returns the queue id. */
async function send(relay: TestRelay, rcpts: string[], subject: string, from = 'carol@relay.test'): Promise<string> {
  const dialog = await SmtpDialog.connect(relay.ports[0]!);
  try {
    assert.equal((await dialog.read()).code, 220);
    assert.equal((await dialog.command('EHLO client.test')).code, 250);
    assert.equal((await dialog.command(`MAIL FROM:<${from}>`)).code, 250);
    for (const rcpt of rcpts) assert.equal((await dialog.command(`RCPT TO:${rcpt}`)).code, 250, rcpt);
    assert.equal((await dialog.command('DATA')).code, 354);
    dialog.write(`Subject: ${subject}\r\n\r\nfor the team\r\n.\r\n`);
    const reply = await dialog.read();
    assert.equal(reply.code, 250, reply.text);
    return /queued as (\S+)/.exec(reply.text)![1]!;
  } finally {
    dialog.close();
  }
}

async function mailbox(relay: TestRelay, name: string): Promise<string[]> {
  const dir = join(relay.dir, 'mail', 'relay.test', name, 'new');
  return Promise.all((await filesIn(dir)).map((file) => readFile(join(dir, file), 'utf8')));
}

async function drained(relay: TestRelay): Promise<void> {
  await waitForDrainedSpool(join(relay.dir, 'spool'));
}

test('an alias list gives each member one copy; a success DSN names the list as the original recipient', async () => {
  const relay = await startTestRelay(() => ({ domains: [DOMAIN] }));
  try {
    const id = await send(relay, ['<team+standup@relay.test> NOTIFY=SUCCESS', '<bob@relay.test>'], 'standup');
    await drained(relay);
    const [alice, bob] = [await mailbox(relay, 'alice'), await mailbox(relay, 'bob')];
    assert.equal(alice.length, 1);
    // bob, named directly and as a member of the list, gets the message once
    assert.equal(bob.length, 1);
    assert.match(alice[0]!, /^Subject: standup$/m);

    const delivered = relay.logs.filter((l) => l.queueId === id && l.event === 'delivered');
    assert.deepEqual(delivered.map((l) => l.recipient ?? l.to).flat().sort(), ['alice@relay.test', 'bob@relay.test']);

    // the notice to carol: both members inherit NOTIFY=SUCCESS (bob named again later is the same recipient)
    const notices = await mailbox(relay, 'carol');
    assert.equal(notices.length, 1, 'one success notice');
    for (const member of ['alice', 'bob']) {
      assert.match(notices[0]!, new RegExp(`^Original-Recipient: rfc822; team\\+standup@relay\\.test\\r?\\nFinal-Recipient: rfc822; ${member}@relay\\.test\\r?\\nAction: delivered$`, 'm'));
    }
  } finally {
    await relay.stop();
  }
});

test('a member whose mailbox cannot be written is retried alone: the others are not written twice', async () => {
  const relay = await startTestRelay(() => ({ domains: [DOMAIN] }));
  try {
    // a plain file where bob's Maildir should be: creating bob/tmp fails until it is gone
    await mkdir(join(relay.dir, 'mail', 'relay.test'), { recursive: true });
    const blocker = join(relay.dir, 'mail', 'relay.test', 'bob');
    await writeFile(blocker, 'not a directory');
    const id = await send(relay, ['<team@relay.test>'], 'retry');

    await relay.waitForLog((l) => l.queueId === id && l.event === 'deferred');
    await waitFor(async () => (await mailbox(relay, 'alice')).length === 1 || undefined, 10_000, "alice's copy");
    // two more attempts at bob's mailbox (retries every 200 to 400 ms here)
    await waitFor(async () => relay.logs.filter((l) => l.queueId === id && l.event === 'deferred').length >= 3 || undefined, 10_000, 'more retries');
    assert.equal((await mailbox(relay, 'alice')).length, 1, 'the retries do not write to alice again');

    await rm(blocker);
    await drained(relay);
    assert.equal((await mailbox(relay, 'alice')).length, 1);
    assert.equal((await mailbox(relay, 'bob')).length, 1);
  } finally {
    await relay.stop();
  }
});

test('a list added by a reload applies to the next message; an alias to another domain is refused with its key path', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ownrelay-alias-'));
  const configPath = join(dir, 'config.yaml');
  const withAliases = (aliases: Record<string, unknown>) => stringify({ ...baseConfig(dir), domains: [{ ...DOMAIN, aliases }] });
  await writeFile(configPath, withAliases({ team: 'alice' }));
  const relay = await startTestRelay(() => ({ domains: [{ ...DOMAIN, aliases: { team: 'alice' } }] }), { dir, configPath });
  try {
    await send(relay, ['<team@relay.test>'], 'before');
    await drained(relay);
    assert.equal((await mailbox(relay, 'alice')).length, 1);
    assert.equal((await mailbox(relay, 'bob')).length, 0);

    await writeFile(configPath, withAliases({ team: ['alice', 'bob@'] }));
    await assert.rejects(relay.relay.reload(), /aliases\.team\.1: expected a mailbox of this domain or an address/);

    await writeFile(configPath, withAliases({ team: ['alice', 'bob'] }));
    await relay.relay.reload();
    await send(relay, ['<team@relay.test>'], 'after');
    await drained(relay);
    assert.equal((await mailbox(relay, 'alice')).length, 2);
    assert.equal((await mailbox(relay, 'bob')).length, 1);
    assert.match((await mailbox(relay, 'bob'))[0]!, /^Subject: after$/m);
  } finally {
    await relay.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test('a forward sends the mail to the MX of its address, sender unchanged, beside the local members of a list', async () => {
  const aliases = { abuse: 'Ops@dest.test', team: ['alice', 'lead@dest.test'] };
  const relay = await startTestRelay(() => ({ dns: { servers: dns.servers }, domains: [{ ...DOMAIN, aliases }] }), { mxPort: destination.port });
  const before = destination.messages.length;
  try {
    await send(relay, ['<abuse@relay.test>', '<team@relay.test>'], 'report', 'reporter@sender.example');
    await drained(relay);
    const arrived = destination.messages.slice(before);
    assert.equal(arrived.length, 1, 'both forwards in one transaction to dest.test');
    assert.equal(arrived[0]!.from, 'reporter@sender.example');
    assert.deepEqual([...arrived[0]!.to].sort(), ['Ops@dest.test', 'lead@dest.test']);
    assert.match(arrived[0]!.raw.toString('utf8'), /^Subject: report$/m);
    assert.equal((await mailbox(relay, 'alice')).length, 1);
    assert.equal((await mailbox(relay, 'abuse')).length, 0, 'nothing is kept for the forwarded alias');
  } finally {
    await relay.stop();
  }
});

test('a message queued before its alias changed is sent where the alias says at its next attempt', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ownrelay-alias-'));
  const configPath = join(dir, 'config.yaml');
  const config = (aliases: Record<string, unknown>) => ({ ...baseConfig(dir), dns: { servers: dns.servers }, domains: [{ ...DOMAIN, aliases }] });
  await writeFile(configPath, stringify(config({ team: 'alice' })));
  const relay = await startTestRelay(() => config({ team: 'alice' }), { dir, configPath, mxPort: destination.port });
  const before = destination.messages.length;
  try {
    // alice's Maildir cannot be made yet: the message waits in the queue for team@ -> alice
    await mkdir(join(dir, 'mail', 'relay.test'), { recursive: true });
    await writeFile(join(dir, 'mail', 'relay.test', 'alice'), 'not a directory');
    const id = await send(relay, ['<team@relay.test>'], 'moved');
    await relay.waitForLog((l) => l.queueId === id && l.event === 'deferred');

    await writeFile(configPath, stringify(config({ team: ['bob', 'lead@dest.test'] })));
    await relay.relay.reload();
    await drained(relay);
    assert.equal((await mailbox(relay, 'bob')).length, 1);
    const arrived = destination.messages.slice(before);
    assert.deepEqual(arrived.map((m) => m.to), [['lead@dest.test']]);
    assert.match(arrived[0]!.raw.toString('utf8'), /^Subject: moved$/m);
  } finally {
    await relay.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
