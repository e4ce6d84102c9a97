/**
 * The Prometheus endpoint, scraped over HTTP from a relay on loopback and parsed:
 * counters move when mail is received, delivered and deferred, AUTH fails and
 * connections come and go; the queue gauges follow the spool. A real destination
 * server (smtp-server, offering STARTTLS) defers one domain.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { register } from 'prom-client';
import { startDestination } from '../helpers/destination-server';
import { SmtpDialog } from '../helpers/smtp-dialog';
import { spoolCounts, waitFor } from '../helpers/spool-files';
import { startTestRelay } from '../helpers/test-relay';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(match, `unparsable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]!] = pair[2]!;
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  return found.reduce((sum, s) => sum + s.value, 0);
}

async function scrape(port: number): Promise<Sample[]> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type') ?? '', /^text\/plain/);
  return parseMetrics(await response.text());
}

async function send(port: number, to: string): Promise<void> {
  const dialog = await SmtpDialog.connect(port);
  try {
    await dialog.read();
    await dialog.command('EHLO client.test');
    await dialog.command('MAIL FROM:<app@sender.test>');
    assert.equal((await dialog.command(`RCPT TO:<${to}>`)).code, 250);
    await dialog.command('DATA');
    dialog.write('Subject: metrics\r\n\r\nhello\r\n.\r\n');
    assert.equal((await dialog.read()).code, 250);
    await dialog.command('QUIT');
  } finally {
    dialog.close();
  }
}

test('metrics scraped over HTTP move with received, delivered and deferred mail, AUTH failures, connections and the queue', { timeout: 60_000 }, async () => {
  const destination = await startDestination({ rcptPolicy: (address) => (address.endsWith('@slow.test') ? { code: 451, message: '4.7.1 greylisted' } : undefined) });
  const relay = await startTestRelay(() => ({
    relay: { networks: ['127.0.0.0/8'] },
    metrics: { address: '127.0.0.1', port: 0 },
    delivery: {
      allowedDestinations: ['127.0.0.0/8'],
      retry: { minBackoffMs: 3_600_000, maxBackoffMs: 3_600_000 },
      routes: {
        'fast.test': { host: '127.0.0.1', port: destination.port },
        'slow.test': { host: '127.0.0.1', port: destination.port },
      },
    },
  }));
  try {
    const port = (await relay.waitForLog((l) => l.event === 'metrics-listening')).port as number;
    const before = await scrape(port);
    assert.equal(value(before, 'ownrelay_messages_received_total'), 0);
    assert.equal(value(before, 'ownrelay_queue_messages'), 0);
    assert.equal(value(before, 'ownrelay_connections_open'), 0);

    await send(relay.ports[0]!, 'alice@relay.test');
    await send(relay.ports[0]!, 'someone@fast.test');
    await send(relay.ports[0]!, 'someone@slow.test');
    await destination.waitForMessages(1);
    await waitFor(async () => (await spoolCounts(join(relay.dir, 'spool'))).deferred === 1, 10_000, 'slow.test deferred');
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: relay.ports[1]!, requireTLS: true, tls: { rejectUnauthorized: false }, auth: { user: 'nobody', pass: 'wrong password' } });
    await assert.rejects(transport.verify(), (err: { responseCode?: number }) => err.responseCode === 535);
    transport.close();
    // a recipient refused at RCPT is counted by its code
    const refused = await SmtpDialog.connect(relay.ports[0]!);
    await refused.read();
    await refused.command('EHLO client.test');
    await refused.command('MAIL FROM:<app@sender.test>');
    assert.equal((await refused.command('RCPT TO:<nobody@relay.test>')).code, 550);
    await refused.command('QUIT');
    refused.close();
    // a connection that stays open while we scrape
    const open = await SmtpDialog.connect(relay.ports[0]!);
    await open.read();

    const after = await scrape(port);
    assert.equal(value(after, 'ownrelay_messages_received_total', { role: 'mx' }), 3);
    assert.equal(value(after, 'ownrelay_messages_received_total', { role: 'mx', domain: 'relay.test' }), 1);
    assert.equal(value(after, 'ownrelay_messages_received_total', { domain: 'slow.test' }), 1);
    assert.equal(value(after, 'ownrelay_recipients_total', { outcome: 'delivered', domain: 'relay.test' }), 1);
    assert.equal(value(after, 'ownrelay_recipients_total', { outcome: 'delivered', domain: 'fast.test' }), 1);
    assert.equal(value(after, 'ownrelay_recipients_total', { outcome: 'deferred', domain: 'slow.test', role: 'mx' }), 1);
    assert.equal(value(after, 'ownrelay_recipients_total', { outcome: 'bounced' }), 0);
    assert.equal(value(after, 'ownrelay_delivery_latency_seconds_count', { outcome: 'delivered' }), 2);
    assert.equal(value(after, 'ownrelay_inbound_messages_tls_total', { role: 'mx', tls: 'no' }), 3);
    // the destination offers STARTTLS, and next hops take it opportunistically
    assert.ok(value(after, 'ownrelay_outbound_sessions_total', { tls: 'yes' }) >= 1);
    assert.equal(value(after, 'ownrelay_auth_failures_total', { role: 'submission' }), 1);
    assert.equal(value(after, 'ownrelay_commands_rejected_total', { role: 'mx', command: 'rcpt', code: '550' }), 1);
    assert.equal(value(after, 'ownrelay_commands_rejected_total', { command: 'mail' }), 0);
    assert.equal(value(after, 'ownrelay_connections_total', { role: 'mx' }), 5);
    assert.equal(value(after, 'ownrelay_connections_open', { role: 'mx' }), 1);
    assert.equal(value(after, 'ownrelay_queue_messages', { state: 'deferred' }), 1);
    assert.equal(value(after, 'ownrelay_queue_messages', { state: 'hold' }), 0);
    assert.ok(value(after, 'ownrelay_queue_oldest_message_age_seconds') >= 0);
    open.close();

    // the relay's metrics live in its own registry, not in prom-client's global one
    assert.equal((await register.getMetricsAsJSON()).filter((m) => m.name.startsWith('ownrelay_')).length, 0);
    const notFound = await fetch(`http://127.0.0.1:${port}/`);
    assert.equal(notFound.status, 404);
    await notFound.text();
  } finally {
    await relay.stop();
    await destination.close();
  }
});

test('a metrics port that cannot be bound is logged and the relay runs on', { timeout: 30_000 }, async () => {
  const first = await startTestRelay(() => ({ metrics: { port: 0 } }));
  try {
    const taken = (await first.waitForLog((l) => l.event === 'metrics-listening')).port as number;
    const second = await startTestRelay(() => ({ metrics: { port: taken } }));
    try {
      const error = await second.waitForLog((l) => l.event === 'metrics-error');
      assert.match(String(error.err), /EADDRINUSE/);
      await send(second.ports[0]!, 'alice@relay.test');
    } finally {
      await second.stop();
    }
  } finally {
    await first.stop();
  }
});
