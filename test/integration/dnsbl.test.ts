/**
 * Inbound DNS blocklists (inbound.dnsbl) against a real DNS server on loopback
 * that serves the lists' zones: the relay's mx listener on 127.0.0.1, clients
 * connecting from 127.0.0.1 (listed) or 127.0.0.2 (not listed).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { runCli } from '../helpers/ownrelay-cli';
import { removeDir, startRelayProcess, writeTempDir } from '../helpers/relay-process';
import { startDnsServer, type DnsServerHandle, type Zone } from '../helpers/dns-server';
import { SmtpDialog } from '../helpers/smtp-dialog';
import { waitFor } from '../helpers/spool-files';
import { startTestRelay, type TestRelay } from '../helpers/test-relay';

const LISTS: Zone = {
  // 127.0.0.1 is on bl.test, with a reason
  '1.0.0.127.bl.test': { A: ['127.0.0.2'], TXT: ['Listed: see https://bl.test/lookup?ip=127.0.0.1'] },
  // errors.test answers every query with Spamhaus's "public resolver" error code
  '1.0.0.127.errors.test': { A: ['127.255.255.254'] },
  '2.0.0.127.errors.test': { A: ['127.255.255.254'] },
  // picky.test lists 127.0.0.1 with a code that the config does not count
  '1.0.0.127.picky.test': { A: ['127.0.0.4'] },
};

function relayWith(dns: DnsServerHandle, dnsbl: unknown[], extra: Record<string, unknown> = {}): Promise<TestRelay> {
  return startTestRelay(() => ({ dns: { servers: dns.servers }, inbound: { authentication: false, dnsbl }, ...extra }));
}

/** One transaction from `localAddress`: the RCPT replies, and the final reply when anyone was accepted. */
async function send(port: number, recipients: string[], localAddress = '127.0.0.1'): Promise<{ rcpt: string[]; data?: string }> {
  const dialog = await SmtpDialog.connect(port, { localAddress });
  try {
    await dialog.read();
    await dialog.command('EHLO client.test');
    assert.equal((await dialog.command('MAIL FROM:<someone@elsewhere.test>')).code, 250);
    const rcpt: string[] = [];
    for (const recipient of recipients) rcpt.push((await dialog.command(`RCPT TO:<${recipient}>`)).text);
    let data: string | undefined;
    if (rcpt.some((reply) => reply.startsWith('250'))) {
      assert.equal((await dialog.command('DATA')).code, 354);
      dialog.write('From: someone@elsewhere.test\r\nSubject: hello\r\n\r\nhi\r\n.\r\n');
      data = (await dialog.read()).text;
    }
    await dialog.command('QUIT');
    return { rcpt, ...(data !== undefined ? { data } : {}) };
  } finally {
    dialog.close();
  }
}

function mailbox(relay: TestRelay, name: string): string[] {
  try {
    return readdirSync(join(relay.dir, 'mail', 'relay.test', name, 'new'));
  } catch {
    return [];
  }
}

test('a listed client gets 554 5.7.1 in Postfix\'s words, except for postmaster and abuse; the refusal is logged', async () => {
  const dns = await startDnsServer(LISTS);
  const relay = await relayWith(dns, ['bl.test']);
  try {
    const mx = relay.ports[0]!;
    const listed = await send(mx, ['alice@relay.test', 'postmaster@relay.test', 'Abuse+x@relay.test']);
    assert.equal(listed.rcpt[0], '554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using bl.test; Listed: see https://bl.test/lookup?ip=127.0.0.1');
    assert.match(listed.rcpt[1]!, /^250 /);
    assert.match(listed.rcpt[2]!, /^250 /);
    assert.match(listed.data!, /^250 /);
    await relay.waitForLog((l) => l.event === 'delivered');
    assert.equal(mailbox(relay, 'alice').length, 0);

    const refusal = relay.logs.find((l) => l.event === 'rejected' && l.to === 'alice@relay.test');
    assert.equal(refusal?.code, 554);
    assert.equal(refusal?.reason, 'client 127.0.0.1 is listed on bl.test (127.0.0.2)');
    assert.equal(refusal?.from, 'someone@elsewhere.test');

    // a client the list does not name is not refused
    const clean = await send(mx, ['alice@relay.test'], '127.0.0.2');
    assert.match(clean.rcpt[0]!, /^250 /);
    assert.match(clean.data!, /^250 /);
    await relay.waitForLog((l) => l.event === 'delivered' && Array.isArray(l.to) && l.to.includes('alice@relay.test'));
    assert.equal(mailbox(relay, 'alice').length, 1);
  } finally {
    await relay.stop();
    await dns.close();
  }
});

test('the verdict on an address is kept: a second connection asks the DNS nothing', async () => {
  const dns = await startDnsServer(LISTS);
  const relay = await relayWith(dns, ['bl.test']);
  try {
    const first = await send(relay.ports[0]!, ['alice@relay.test']);
    assert.match(first.rcpt[0]!, /^554 5\.7\.1 /);
    const asked = dns.queries();
    assert.ok(asked >= 2, 'the A record and the reason were looked up');
    const second = await send(relay.ports[0]!, ['bob@relay.test']);
    assert.match(second.rcpt[0]!, /^554 5\.7\.1 /);
    assert.equal(dns.queries(), asked);
  } finally {
    await relay.stop();
    await dns.close();
  }
});

test('a list that answers with an error code lists nobody: the client is let through and the log says why', async () => {
  const dns = await startDnsServer(LISTS);
  const relay = await relayWith(dns, ['errors.test', { zone: 'picky.test', codes: ['127.0.0.2', '127.0.0.3'] }]);
  try {
    const result = await send(relay.ports[0]!, ['alice@relay.test']);
    assert.match(result.rcpt[0]!, /^250 /);
    assert.match(result.data!, /^250 /);
    const warning = await relay.waitForLog((l) => l.event === 'dnsbl-error');
    assert.equal(warning.zone, 'errors.test');
    assert.equal(warning.client, '127.0.0.1');
    assert.match(String(warning.reason), /127\.255\.255\.254: the list refuses queries from public or shared resolvers/);
    // picky.test's answer 127.0.0.4 is not one of its codes: no listing, and no error either
    assert.equal(relay.logs.filter((l) => l.event === 'dnsbl-error').length, 1);
    // the lists' answers are counted per zone
    const metrics = await (await fetch(`http://127.0.0.1:${relay.relay.metricsEndpoint!.port}/metrics`)).text();
    assert.match(metrics, /^ownrelay_dnsbl_answers_total\{zone="errors\.test",answer="unknown"\} 1$/m);
    assert.match(metrics, /^ownrelay_dnsbl_answers_total\{zone="picky\.test",answer="clean"\} 1$/m);
  } finally {
    await relay.stop();
    await dns.close();
  }
});

test('the customer\'s own clients are never asked about: relay.networks on mx, and the clients of submission listeners', async () => {
  const dns = await startDnsServer(LISTS);
  const trusted = await relayWith(dns, ['bl.test'], { relay: { networks: ['127.0.0.1/32'] } });
  try {
    const result = await send(trusted.ports[0]!, ['alice@relay.test']);
    assert.match(result.rcpt[0]!, /^250 /);
    assert.equal(dns.queries(), 0);
  } finally {
    await trusted.stop();
  }
  const relay = await relayWith(dns, ['bl.test']);
  try {
    // the lookups start when a client connects: on the submission listeners, never
    for (const port of [relay.ports[1]!, relay.ports[2]!]) await greetAndQuit(port, port === relay.ports[2]);
    assert.equal(dns.queries(), 0);
    // on the mx listener, at once
    await greetAndQuit(relay.ports[0]!, false);
    await waitFor(async () => dns.queries() > 0, 5000, 'the mx client was looked up');
  } finally {
    await relay.stop();
    await dns.close();
  }
});

async function greetAndQuit(port: number, implicitTls: boolean): Promise<void> {
  const dialog = await SmtpDialog.connect(port, { implicitTls });
  try {
    assert.equal((await dialog.read()).code, 220);
    assert.equal((await dialog.command('EHLO client.test')).code, 250);
    assert.equal((await dialog.command('QUIT')).code, 221);
  } finally {
    dialog.close();
  }
}

test('a reload that adds a list applies it to new connections; one that removes it lets the client in again', async () => {
  const dns = await startDnsServer(LISTS);
  const dir = writeTempDir('ownrelay-dnsbl-reload');
  const config = (dnsbl: string[]) =>
    stringify({
      hostname: 'relay.test',
      listeners: [{ role: 'mx', address: '127.0.0.1', port: 0, earlyTalkerCheck: false }],
      domains: [{ name: 'relay.test', delivery: 'maildir', mailboxes: ['alice'] }],
      paths: { spool: join(dir, 'spool'), mail: join(dir, 'mail'), state: join(dir, 'state') },
      dns: { servers: dns.servers },
      inbound: { authentication: false, dnsbl },
      metrics: { enabled: false },
    });
  const relay = await startRelayProcess(config([]));
  try {
    const mx = relay.ports[0]!;
    assert.match((await send(mx, ['alice@relay.test'])).rcpt[0]!, /^250 /);
    assert.equal(dns.queries(), 0);

    writeFileSync(relay.configPath, config(['bl.test']));
    assert.match((await runCli(['--config', relay.configPath, 'reload'])).stdout, /^reloaded$/m);
    assert.match((await send(mx, ['alice@relay.test'])).rcpt[0]!, /^554 5\.7\.1 Service unavailable; Client host \[127\.0\.0\.1\] blocked using bl\.test/);

    writeFileSync(relay.configPath, config([]));
    assert.match((await runCli(['--config', relay.configPath, 'reload'])).stdout, /^reloaded$/m);
    assert.match((await send(mx, ['alice@relay.test'])).rcpt[0]!, /^250 /);
  } finally {
    await relay.stop();
    await dns.close();
    removeDir(dir);
  }
});
