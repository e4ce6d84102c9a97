import assert from 'node:assert/strict';
import net from 'node:net';
import { Readable } from 'node:stream';
import { after, afterEach, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { generate } from 'selfsigned';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import type { NextHop } from '../../server/config/schema';
import { AddressGuard } from '../../server/delivery/address-guard';
import { MxResolver } from '../../server/delivery/mx-resolver';
import { SmtpDelivery, type SmtpDeliveryOptions } from '../../server/delivery/smtp-transport';
import { isOverRecipientLimit } from '../../server/delivery/recipient-results';
import type { OutboundMessage, RecipientResult } from '../../server/delivery/types';
import { createLogger, silentLogger } from '../../server/log/logger';
import { type DnsServerHandle, startDnsServer } from '../helpers/dns-server';
import { closedPort } from '../helpers/ports';

interface Received {
  from: string;
  to: string[];
  data: Buffer;
  secure: boolean;
  ehloName: string;
  mailArgs: Record<string, string | true> | false;
}

interface Sink {
  port: number;
  /** TCP connections accepted */
  connections: number;
  /** connections that ended */
  closed: number;
  received: Received[];
  auths: { username?: string; password?: string | null; secure: boolean }[];
  /** destroys the socket of a session without a reply, as a server that died would */
  drop(session: SMTPServerSession): void;
  close(): Promise<void>;
}

interface SinkBehaviour {
  server?: Partial<SMTPServerOptions>;
  /** RCPT replies other than 250, by address */
  refuseRecipient?: Record<string, [number, string]>;
  /** recipients one transaction takes; beyond, RCPT gets `reply` */
  recipientLimit?: { max: number; reply: [number, string] };
  refuseSender?: [number, string];
  /** the reply to the end of DATA, instead of 250 */
  dataError?: [number, string];
  /** refuse these connections (1-based) with a 421 greeting */
  refuseConnections?: number[];
  refuseAuth?: boolean;
  /** drop the connection once the message data has arrived, before the final reply */
  dropAfterData?: boolean;
  /** called at MAIL FROM; may drop the connection */
  onMail?(session: SMTPServerSession, sink: Sink): boolean | void;
}

let tlsKey: string;
let tlsCert: string;

function smtpError(code: number, message: string): Error {
  return Object.assign(new Error(message), { responseCode: code });
}

async function startSink(behaviour: SinkBehaviour = {}): Promise<Sink> {
  const sessions = new Map<string, SMTPServerSession>();
  let server: SMTPServer;
  const sink: Sink = {
    port: 0,
    connections: 0,
    closed: 0,
    received: [],
    auths: [],
    drop(session) {
      const connections = (server as unknown as { connections: Set<{ session?: { id: string }; id: string; _socket: net.Socket }> }).connections;
      for (const connection of connections) if (connection.id === session.id || connection.session?.id === session.id) connection._socket.destroy();
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
  server = new SMTPServer({
    key: tlsKey,
    cert: tlsCert,
    hideENHANCEDSTATUSCODES: false,
    disableReverseLookup: true,
    authOptional: true,
    size: 10 * 1024 * 1024,
    closeTimeout: 200,
    logger: false,
    ...behaviour.server,
    onConnect(session, callback) {
      sink.connections++;
      sessions.set(session.id, session);
      if (behaviour.refuseConnections?.includes(sink.connections)) return callback(smtpError(421, 'not now'));
      callback();
    },
    onClose() {
      sink.closed++;
    },
    onAuth(auth, session, callback) {
      sink.auths.push({ username: auth.username, password: auth.password, secure: session.secure });
      if (behaviour.refuseAuth) return callback(smtpError(535, 'Authentication credentials invalid'));
      callback(null, { user: auth.username });
    },
    onMailFrom(address, session, callback) {
      if (behaviour.onMail?.(session, sink)) return; // dropped: no reply at all
      if (behaviour.refuseSender) return callback(smtpError(...behaviour.refuseSender));
      callback();
    },
    onRcptTo(address, session, callback) {
      const limit = behaviour.recipientLimit;
      if (limit && session.envelope.rcptTo.length >= limit.max) return callback(smtpError(...limit.reply));
      const refusal = behaviour.refuseRecipient?.[address.address];
      callback(refusal ? smtpError(...refusal) : undefined);
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => {
        if (behaviour.dropAfterData) return sink.drop(session);
        if (behaviour.dataError) return callback(smtpError(...behaviour.dataError));
        const mailFrom = session.envelope.mailFrom;
        sink.received.push({
          from: mailFrom ? mailFrom.address : '<no MAIL FROM>',
          to: session.envelope.rcptTo.map((rcpt) => rcpt.address),
          data: Buffer.concat(chunks),
          secure: session.secure,
          ehloName: session.hostNameAppearsAs,
          mailArgs: mailFrom ? mailFrom.args : false,
        });
        callback(null, 'queued as TEST');
      });
    },
  });
  // TLS handshakes the tests make fail are reported here; they are expected
  server.on('error', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  sink.port = (server.server.address() as net.AddressInfo).port;
  return sink;
}

const BODY = Buffer.from(
  [
    'From: sender@origin.test',
    'To: rcpt@example.test',
    'Subject: dots and bytes',
    '',
    '.a line starting with a dot',
    '..two dots',
    '.',
    'a lone dot above must not end the message',
    'caf\u00e9 \u00fcber',
    'x'.repeat(998),
    '',
  ].join('\r\n'),
  'utf8',
);

let queueIds = 0;
function outbound(recipients: string[], options: { from?: string; body?: Buffer } = {}): OutboundMessage & { opens: number } {
  const body = options.body ?? BODY;
  const message = {
    from: options.from ?? 'sender@origin.test',
    recipients,
    size: body.length,
    queueId: `Q${++queueIds}`,
    opens: 0,
    open() {
      message.opens++;
      return Readable.from([body], { objectMode: false });
    },
  };
  return message;
}

function byAddress(results: RecipientResult[]): Record<string, RecipientResult> {
  return Object.fromEntries(results.map((result) => [result.address, result]));
}

describe('SmtpDelivery', () => {
  let dns: DnsServerHandle;
  const cleanups: (() => Promise<void>)[] = [];

  before(async () => {
    const pems = await generate([{ name: 'commonName', value: 'mx.example.test' }], { keyType: 'ec', algorithm: 'sha256' });
    tlsKey = pems.private;
    tlsCert = pems.cert;
    dns = await startDnsServer({
      'example.test': { MX: [{ exchange: 'mx.example.test', priority: 10 }] },
      'mx.example.test': { A: ['127.0.0.1'] },
      'fallback.test': { A: ['127.0.0.1'] },
      'nullmx.test': { MX: [{ exchange: '.', priority: 0 }] },
      'failover.test': {
        MX: [
          { exchange: 'second.failover.test', priority: 20 },
          { exchange: 'first.failover.test', priority: 10 },
        ],
      },
      'first.failover.test': { A: ['127.0.0.1'] },
      'second.failover.test': { A: ['127.0.0.1'] },
      'relay.example.test': { A: ['127.0.0.1'] },
    });
  });

  after(async () => {
    await dns.close();
  });

  afterEach(async () => {
    while (cleanups.length > 0) await cleanups.pop()?.();
  });

  async function setUp(behaviour: SinkBehaviour = {}, options: Partial<SmtpDeliveryOptions> = {}): Promise<{ sink: Sink; delivery: SmtpDelivery }> {
    const sink = await startSink(behaviour);
    cleanups.push(() => sink.close());
    const delivery = makeDelivery({ mxPort: sink.port, ...options });
    return { sink, delivery };
  }

  function makeDelivery(options: Partial<SmtpDeliveryOptions> = {}): SmtpDelivery {
    const delivery = new SmtpDelivery({
      hostname: 'relay.origin.test',
      resolver: new MxResolver(dns.servers, 2000),
      guard: new AddressGuard(['127.0.0.1/32']),
      connectTimeoutMs: 2000,
      commandTimeoutMs: 2000,
      logger: silentLogger(),
      ...options,
    });
    cleanups.push(() => delivery.close());
    return delivery;
  }

  function nextHop(port: number, hop: Partial<NextHop> = {}): NextHop {
    return { host: 'relay.example.test', port, tls: 'opportunistic', verifyCertificate: false, ...hop };
  }

  it('delivers to the MX host found in DNS over STARTTLS, with EHLO name, SIZE and 8BITMIME', async () => {
    const { sink, delivery } = await setUp();
    const message = outbound(['rcpt@example.test']);
    const results = await delivery.deliverViaMx('example.test', message);
    assert.equal(results.length, 1);
    assert.equal(results[0]?.outcome, 'delivered');
    assert.match(results[0]?.reply ?? '', /^250 .*queued as TEST/);
    assert.equal(results[0]?.remoteHost, 'mx.example.test');
    assert.equal(sink.received.length, 1);
    const received = sink.received[0] as Received;
    assert.equal(received.secure, true, 'STARTTLS was used');
    assert.equal(received.ehloName, 'relay.origin.test');
    assert.deepEqual(received.to, ['rcpt@example.test']);
    assert.equal(received.from, 'sender@origin.test');
    assert.ok(received.mailArgs);
    assert.equal(received.mailArgs.SIZE, String(BODY.length));
    assert.equal(received.mailArgs.BODY, '8BITMIME');
  });

  it('delivers the message bytes unchanged, dot-stuffing included', async () => {
    const { sink, delivery } = await setUp();
    const body = Buffer.concat([BODY, Buffer.from('.\r\n..\r\n' + 'line of text\r\n'.repeat(20_000) + '.end\r\n')]);
    const results = await delivery.deliverViaMx('example.test', outbound(['rcpt@example.test'], { body }));
    assert.equal(results[0]?.outcome, 'delivered');
    assert.equal(sink.received.length, 1);
    assert.ok(sink.received[0]?.data.equals(body), 'received bytes differ from the queued bytes');
  });

  it('sends non-ASCII addresses with SMTPUTF8 where offered, and fails them at a server that does not offer it', async () => {
    const { sink, delivery } = await setUp();
    const utf8 = await delivery.deliverViaMx('example.test', outbound(['rcpt@example.test'], { from: 'jörg@origin.test' }));
    assert.equal(utf8[0]?.outcome, 'delivered');
    assert.equal(sink.received[0]?.from, 'jörg@origin.test');
    assert.ok(sink.received[0]?.mailArgs);
    assert.equal(sink.received[0]?.mailArgs.SMTPUTF8, true);

    const plain = await setUp({ server: { hideSMTPUTF8: true } });
    const refused = await plain.delivery.deliverViaMx('example.test', outbound(['ålice@example.test', 'bob@example.test'], { from: 'sender@origin.test' }));
    assert.deepEqual(refused.map((r) => r.outcome), ['failed', 'failed']);
    assert.match(refused[0]?.reply ?? '', /^553 5\.6\.7 mx\.example\.test does not offer SMTPUTF8/);
    assert.equal(plain.sink.received.length, 0, 'nothing was sent');
    // the connection stays good for the next message
    const next = await plain.delivery.deliverViaMx('example.test', outbound(['bob@example.test']));
    assert.equal(next[0]?.outcome, 'delivered');
    assert.equal(plain.sink.connections, 1);
  });

  it('sends the null sender as MAIL FROM:<>', async () => {
    const { sink, delivery } = await setUp();
    const results = await delivery.deliverViaMx('example.test', outbound(['rcpt@example.test'], { from: '' }));
    assert.equal(results[0]?.outcome, 'delivered');
    assert.equal(sink.received[0]?.from, '');
  });

  it('falls back to the A record of a domain without MX records', async () => {
    const { sink, delivery } = await setUp();
    const results = await delivery.deliverViaMx('fallback.test', outbound(['rcpt@fallback.test']));
    assert.equal(results[0]?.outcome, 'delivered');
    assert.equal(results[0]?.remoteHost, 'fallback.test');
    assert.deepEqual(sink.received[0]?.to, ['rcpt@fallback.test']);
  });

  it('fails every recipient of a domain with a null MX without connecting', async () => {
    const { sink, delivery } = await setUp();
    const results = await delivery.deliverViaMx('nullmx.test', outbound(['a@nullmx.test', 'b@nullmx.test']));
    assert.deepEqual(results.map((r) => r.outcome), ['failed', 'failed']);
    assert.match(results[0]?.reply ?? '', /null MX/);
    assert.equal(sink.connections, 0);
  });

  it('fails every recipient of a domain that does not exist', async () => {
    const { delivery } = await setUp();
    const results = await delivery.deliverViaMx('nowhere.test', outbound(['a@nowhere.test']));
    assert.equal(results[0]?.outcome, 'failed');
    assert.match(results[0]?.reply ?? '', /NXDOMAIN/);
  });

  it('defers, naming the address, when the guard refuses every address of the MX hosts', async () => {
    const { sink, delivery } = await setUp({}, { guard: new AddressGuard([]) });
    const results = await delivery.deliverViaMx('example.test', outbound(['rcpt@example.test']));
    assert.equal(results[0]?.outcome, 'deferred');
    assert.match(results[0]?.reply ?? '', /mx\.example\.test\[127\.0\.0\.1\]: 127\.0\.0\.1 is a loopback address, not allowed by delivery\.allowedDestinations/);
    assert.equal(sink.connections, 0, 'no connection to a refused address');
  });

  it('delivers to one recipient and defers another that got a 450 at RCPT', async () => {
    const { sink, delivery } = await setUp({ refuseRecipient: { 'busy@example.test': [450, 'mailbox busy'] } });
    const results = byAddress(await delivery.deliverViaMx('example.test', outbound(['busy@example.test', 'ok@example.test'])));
    assert.equal(results['busy@example.test']?.outcome, 'deferred');
    assert.match(results['busy@example.test']?.reply ?? '', /^450 .*mailbox busy/);
    assert.equal(results['busy@example.test']?.remoteHost, 'mx.example.test');
    assert.equal(results['ok@example.test']?.outcome, 'delivered');
    assert.deepEqual(sink.received[0]?.to, ['ok@example.test']);
  });

  it('fails a recipient refused with 550 and delivers the others', async () => {
    const { delivery } = await setUp({ refuseRecipient: { 'nobody@example.test': [550, '<nobody@example.test>: no such user'] } });
    const results = byAddress(await delivery.deliverViaMx('example.test', outbound(['nobody@example.test', 'ok@example.test'])));
    assert.equal(results['nobody@example.test']?.outcome, 'failed');
    assert.match(results['nobody@example.test']?.reply ?? '', /^550 5\.\d\.\d <nobody@example\.test>: no such user$/);
    assert.equal(results['ok@example.test']?.outcome, 'delivered');
  });

  const seven = ['r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7'].map((name) => `${name}@example.test`);

  it('fails the recipients with 5.4.6 at once when the server greets with the relay\'s own name (a mail loop), trying no other host', async () => {
    const { sink, delivery } = await setUp({ server: { name: 'RELAY.origin.test' } });
    const results = await delivery.deliverViaMx('failover.test', outbound(['a@failover.test', 'b@failover.test']));
    assert.deepEqual(results.map((r) => r.outcome), ['failed', 'failed']);
    assert.match(results[0]!.reply, /^554 5\.4\.6 first\.failover\.test\[127\.0\.0\.1\]:\d+ greets as RELAY\.origin\.test, this relay's own name: mail for it loops back to myself$/);
    assert.equal(results[0]!.remoteHost, 'first.failover.test');
    assert.equal(sink.connections, 1, 'the second MX is not tried');
    assert.equal(sink.received.length, 0);
  });

  it('tells a refusal for too many recipients from other 452 and 552 replies', () => {
    const refused = (reply: string) => isOverRecipientLimit({ address: 'a@example.test', outcome: reply.startsWith('5') ? 'failed' : 'deferred', reply });
    for (const reply of ['452 4.5.3 Error: too many recipients', '452 Too many recipients', '552 5.5.3 Too many recipients', '452-4.5.3 Your message has too many recipients.']) assert.ok(refused(reply), reply);
    for (const reply of ['452 4.2.2 Mailbox full', '552 5.2.2 Over quota', '552 5.3.4 Message too big', '450 4.5.3 too many recipients', '550 5.1.1 Too many recipients? no such user']) assert.equal(refused(reply), false, reply);
  });

  it('sends the recipients a server refuses as too many (452) in the next transaction at once, on the same connection', async () => {
    const { sink, delivery } = await setUp({ recipientLimit: { max: 3, reply: [452, 'Error: too many recipients'] } });
    const results = await delivery.deliverViaMx('example.test', outbound(seven));
    assert.deepEqual(results.map((r) => r.outcome), Array(7).fill('delivered'));
    assert.deepEqual(results.map((r) => r.address).sort(), seven);
    assert.deepEqual(sink.received.map((m) => m.to), [seven.slice(0, 3), seven.slice(3, 6), seven.slice(6)]);
    assert.equal(sink.connections, 1);
  });

  it('takes a 552 "too many recipients" as RFC 5321 4.5.3.1.10 asks: the recipients go in the next transaction, never fail', async () => {
    const { sink, delivery } = await setUp({ recipientLimit: { max: 2, reply: [552, '5.5.3 Too many recipients'] } });
    const results = await delivery.deliverViaMx('example.test', outbound(seven.slice(0, 5)));
    assert.deepEqual(results.map((r) => r.outcome), Array(5).fill('delivered'));
    assert.deepEqual(sink.received.map((m) => m.to.length), [2, 2, 1]);
  });

  it('names at most maxRecipientsPerTransaction recipients in one transaction', async () => {
    const { sink, delivery } = await setUp({}, { maxRecipientsPerTransaction: 2 });
    const results = byAddress(await delivery.deliverViaMx('example.test', outbound(seven.slice(0, 5))));
    assert.deepEqual(Object.keys(results).sort(), seven.slice(0, 5));
    assert.ok(Object.values(results).every((r) => r.outcome === 'delivered'));
    assert.deepEqual(sink.received.map((m) => m.to), [seven.slice(0, 2), seven.slice(2, 4), seven.slice(4, 5)]);
    assert.equal(sink.connections, 1);
  });

  it('defers every recipient, none failed, when a transaction gets none through because there are too many', async () => {
    let transactions = 0;
    const { sink, delivery } = await setUp({ recipientLimit: { max: 0, reply: [552, 'Too many recipients'] }, onMail: () => void transactions++ }, { maxRecipientsPerTransaction: 2 });
    const results = await delivery.deliverViaMx('example.test', outbound(seven.slice(0, 5)));
    assert.equal(results.length, 5);
    assert.deepEqual(results.map((r) => r.address).sort(), seven.slice(0, 5));
    assert.deepEqual(results.map((r) => r.outcome), Array(5).fill('deferred'));
    assert.ok(results.every((r) => /^552 .*Too many recipients/.test(r.reply)), results[4]?.reply);
    assert.equal(transactions, 1, 'no second transaction after one that got nobody through');
    assert.equal(sink.received.length, 0);
  });

  it('defers the recipients of later transactions with the first one\'s reason when the destination cannot be reached', async () => {
    const delivery = makeDelivery({ mxPort: await closedPort(), maxRecipientsPerTransaction: 2 });
    const results = await delivery.deliverViaMx('example.test', outbound(seven.slice(0, 5)));
    assert.deepEqual(results.map((r) => r.address).sort(), seven.slice(0, 5));
    assert.ok(results.every((r) => r.outcome === 'deferred' && r.unreachable === true && /ECONNREFUSED/.test(r.reply)), JSON.stringify(results[4]));
  });

  it('answers each recipient by its own reply when every recipient is refused', async () => {
    const { sink, delivery } = await setUp({ refuseRecipient: { 'gone@example.test': [550, 'gone'], 'busy@example.test': [451, 'busy'] } });
    const results = byAddress(await delivery.deliverViaMx('example.test', outbound(['gone@example.test', 'busy@example.test'])));
    assert.equal(results['gone@example.test']?.outcome, 'failed');
    assert.equal(results['busy@example.test']?.outcome, 'deferred');
    assert.equal(sink.received.length, 0);
  });

  it('defers every accepted recipient when DATA is answered with 451', async () => {
    const { delivery } = await setUp({ dataError: [451, 'try again later'] });
    const results = await delivery.deliverViaMx('example.test', outbound(['a@example.test', 'b@example.test']));
    assert.deepEqual(results.map((r) => r.outcome), ['deferred', 'deferred']);
    assert.match(results[0]?.reply ?? '', /^451 .*try again later/);
  });

  it('fails the accepted recipients on a 554 after DATA but keeps the RCPT verdict of the others', async () => {
    const { delivery } = await setUp({ dataError: [554, 'content rejected'], refuseRecipient: { 'busy@example.test': [452, 'full'] } });
    const results = byAddress(await delivery.deliverViaMx('example.test', outbound(['a@example.test', 'busy@example.test'])));
    assert.equal(results['a@example.test']?.outcome, 'failed');
    assert.match(results['a@example.test']?.reply ?? '', /^554 .*content rejected/);
    assert.equal(results['busy@example.test']?.outcome, 'deferred');
    assert.match(results['busy@example.test']?.reply ?? '', /^452 /);
  });

  it('fails every recipient when the sender is refused with a 5xx', async () => {
    const { delivery } = await setUp({ refuseSender: [553, 'sender not allowed'] });
    const results = await delivery.deliverViaMx('example.test', outbound(['a@example.test', 'b@example.test']));
    assert.deepEqual(results.map((r) => r.outcome), ['failed', 'failed']);
    assert.match(results[1]?.reply ?? '', /^553 .*sender not allowed/);
  });

  it('fails a message larger than the SIZE the server announces without sending it', async () => {
    const { sink, delivery } = await setUp({ server: { size: 100 } });
    const results = await delivery.deliverViaMx('example.test', outbound(['a@example.test']));
    assert.equal(results[0]?.outcome, 'failed');
    assert.match(results[0]?.reply ?? '', /^552 5\.3\.4 /);
    assert.equal(sink.received.length, 0);
  });

  it('moves on to the next MX host when the first one refuses the connection', async () => {
    const { sink, delivery } = await setUp({ refuseConnections: [1] });
    const results = await delivery.deliverViaMx('failover.test', outbound(['rcpt@failover.test']));
    assert.equal(results[0]?.outcome, 'delivered');
    assert.equal(results[0]?.remoteHost, 'second.failover.test');
    assert.equal(sink.connections, 2);
    assert.equal(sink.received.length, 1);
  });

  it('defers with the last connection error when no MX host can be reached', async () => {
    const delivery = makeDelivery({ mxPort: await closedPort() });
    const results = await delivery.deliverViaMx('failover.test', outbound(['rcpt@failover.test']));
    assert.equal(results[0]?.outcome, 'deferred');
    assert.match(results[0]?.reply ?? '', /second\.failover\.test\[127\.0\.0\.1\]:\d+: .*ECONNREFUSED/);
    assert.equal(results[0]?.unreachable, true, 'no host answered: the destination is unreachable');
  });

  it('does not call a destination unreachable when its host answers, even with 421', async () => {
    const { delivery } = await setUp({ refuseConnections: [1, 2, 3, 4] });
    const results = await delivery.deliverViaMx('example.test', outbound(['rcpt@example.test']));
    assert.equal(results[0]?.outcome, 'deferred');
    assert.match(results[0]?.reply ?? '', /421/);
    assert.equal(results[0]?.unreachable, undefined);
  });

  it('defers without trying other hosts when the connection is lost after the message data was sent', async () => {
    const { sink, delivery } = await setUp({ dropAfterData: true });
    const results = await delivery.deliverViaMx('failover.test', outbound(['rcpt@failover.test']));
    assert.equal(results[0]?.outcome, 'deferred');
    assert.match(results[0]?.reply ?? '', /not trying other hosts/);
    assert.equal(sink.connections, 1, 'the second MX host was not tried');
  });

  it('retries a host in plain text when the opportunistic TLS handshake fails', async () => {
    const { sink, delivery } = await setUp({ server: { minVersion: 'TLSv1', maxVersion: 'TLSv1.1' } });
    const results = await delivery.deliverViaMx('example.test', outbound(['rcpt@example.test']));
    assert.equal(results[0]?.outcome, 'delivered');
    assert.equal(sink.connections, 2, 'one failed TLS attempt, one plain-text retry');
    assert.equal(sink.received[0]?.secure, false);
  });

  it('logs in at a next hop over STARTTLS with the configured credentials', async () => {
    const { sink, delivery } = await setUp({ server: { authOptional: false } });
    const hop = nextHop(sink.port, { auth: { user: 'relay-user', pass: 'relay-secret' } });
    const results = await delivery.deliverViaNextHop(hop, outbound(['someone@elsewhere.test']));
    assert.equal(results[0]?.outcome, 'delivered');
    assert.equal(results[0]?.remoteHost, 'relay.example.test');
    assert.deepEqual(sink.auths, [{ username: 'relay-user', password: 'relay-secret', secure: true }]);
    assert.equal(sink.received[0]?.secure, true);
  });

  it('defers with the reply of a next hop that refuses the credentials', async () => {
    const { sink, delivery } = await setUp({ server: { authOptional: false }, refuseAuth: true });
    const hop = nextHop(sink.port, { auth: { user: 'relay-user', pass: 'wrong' } });
    const results = await delivery.deliverViaNextHop(hop, outbound(['someone@elsewhere.test']));
    assert.equal(results[0]?.outcome, 'deferred');
    assert.match(results[0]?.reply ?? '', /AUTH as relay-user failed: 535 /);
    assert.equal(results[0]?.remoteHost, 'relay.example.test');
    assert.equal(sink.received.length, 0);
  });

  it('defers without connecting when a next hop has credentials but tls none', async () => {
    const { sink, delivery } = await setUp({ server: { disabledCommands: ['STARTTLS'], allowInsecureAuth: true } });
    const hop = nextHop(sink.port, { tls: 'none', auth: { user: 'relay-user', pass: 'relay-secret' } });
    const results = await delivery.deliverViaNextHop(hop, outbound(['someone@elsewhere.test']));
    assert.equal(results[0]?.outcome, 'deferred');
    assert.match(results[0]?.reply ?? '', /credentials are only sent over TLS/);
    assert.equal(sink.connections, 0);
    assert.deepEqual(sink.auths, []);
  });

  it('defers instead of sending credentials when the next hop does not offer STARTTLS', async () => {
    const { sink, delivery } = await setUp({ server: { disabledCommands: ['STARTTLS'], allowInsecureAuth: true } });
    const hop = nextHop(sink.port, { auth: { user: 'relay-user', pass: 'relay-secret' } });
    const results = await delivery.deliverViaNextHop(hop, outbound(['someone@elsewhere.test']));
    assert.equal(results[0]?.outcome, 'deferred');
    assert.match(results[0]?.reply ?? '', /not sending credentials .* over an unencrypted connection/);
    assert.equal(sink.connections, 1);
    assert.deepEqual(sink.auths, [], 'no AUTH command reached the server');
    assert.equal(sink.received.length, 0);
  });

  it('defers when required TLS meets a certificate that does not verify', async () => {
    const { sink, delivery } = await setUp();
    const hop = nextHop(sink.port, { tls: 'required', verifyCertificate: true });
    const results = await delivery.deliverViaNextHop(hop, outbound(['someone@elsewhere.test']));
    assert.equal(results[0]?.outcome, 'deferred');
    assert.match(results[0]?.reply ?? '', /certificate/i);
    assert.equal(sink.received.length, 0);
  });

  it('defers when required TLS is not offered', async () => {
    const { sink, delivery } = await setUp({ server: { disabledCommands: ['STARTTLS'] } });
    const results = await delivery.deliverViaNextHop(nextHop(sink.port, { tls: 'required' }), outbound(['someone@elsewhere.test']));
    assert.equal(results[0]?.outcome, 'deferred');
    assert.equal(sink.received.length, 0);
  });

  it('delivers over implicit TLS and in plain text when tls is none', async () => {
    const tlsSink = await startSink({ server: { secure: true } });
    cleanups.push(() => tlsSink.close());
    const plainSink = await startSink();
    cleanups.push(() => plainSink.close());
    const delivery = makeDelivery();
    const implicit = await delivery.deliverViaNextHop(nextHop(tlsSink.port, { tls: 'implicit' }), outbound(['a@elsewhere.test']));
    const plain = await delivery.deliverViaNextHop(nextHop(plainSink.port, { tls: 'none' }), outbound(['b@elsewhere.test']));
    assert.equal(implicit[0]?.outcome, 'delivered');
    assert.equal(tlsSink.received[0]?.secure, true);
    assert.equal(plain[0]?.outcome, 'delivered');
    assert.equal(plainSink.received[0]?.secure, false);
  });

  it('reuses one connection for consecutive messages to the same destination', async () => {
    const { sink, delivery } = await setUp();
    const first = await delivery.deliverViaMx('example.test', outbound(['a@example.test']));
    const second = await delivery.deliverViaMx('example.test', outbound(['b@example.test']));
    assert.equal(first[0]?.outcome, 'delivered');
    assert.equal(second[0]?.outcome, 'delivered');
    assert.equal(sink.received.length, 2);
    assert.equal(sink.connections, 1);
  });

  it('keeps using a connection after a refused transaction', async () => {
    const { sink, delivery } = await setUp({ refuseRecipient: { 'gone@example.test': [550, 'gone'] } });
    const refused = await delivery.deliverViaMx('example.test', outbound(['gone@example.test']));
    const accepted = await delivery.deliverViaMx('example.test', outbound(['ok@example.test']));
    assert.equal(refused[0]?.outcome, 'failed');
    assert.equal(accepted[0]?.outcome, 'delivered');
    assert.equal(sink.connections, 1);
  });

  it('opens a new connection after maxMessagesPerConnection messages', async () => {
    const { sink, delivery } = await setUp({}, { maxMessagesPerConnection: 2 });
    for (const rcpt of ['a', 'b', 'c']) {
      assert.equal((await delivery.deliverViaMx('example.test', outbound([`${rcpt}@example.test`])))[0]?.outcome, 'delivered');
    }
    assert.equal(sink.received.length, 3);
    assert.equal(sink.connections, 2);
  });

  it('does not keep a connection past idleConnectionMs', async () => {
    const { sink, delivery } = await setUp({}, { idleConnectionMs: 100 });
    await delivery.deliverViaMx('example.test', outbound(['a@example.test']));
    await sleep(400);
    assert.equal(sink.closed, 1, 'the idle connection was closed');
    await delivery.deliverViaMx('example.test', outbound(['b@example.test']));
    assert.equal(sink.connections, 2);
  });

  it('replaces a cached connection that the server closed while it was idle', async () => {
    const { sink, delivery } = await setUp({ server: { socketTimeout: 200 } }, { idleConnectionMs: 5000 });
    await delivery.deliverViaMx('example.test', outbound(['a@example.test']));
    await sleep(500);
    const results = await delivery.deliverViaMx('example.test', outbound(['b@example.test']));
    assert.equal(results[0]?.outcome, 'delivered');
    assert.equal(sink.connections, 2);
    assert.deepEqual(sink.received.map((r) => r.to[0]), ['a@example.test', 'b@example.test']);
  });

  it('repeats a transaction on a fresh connection when a reused one dies before any reply', async () => {
    let dropped = 0;
    const { sink, delivery } = await setUp({
      onMail(session, s) {
        // the second transaction on the first connection: vanish without a word
        if (session.transaction === 2 && dropped === 0) {
          dropped++;
          s.drop(session);
          return true;
        }
      },
    });
    await delivery.deliverViaMx('example.test', outbound(['a@example.test']));
    const message = outbound(['b@example.test']);
    const results = await delivery.deliverViaMx('example.test', message);
    assert.equal(dropped, 1, 'the server dropped the reused connection');
    assert.equal(results[0]?.outcome, 'delivered');
    assert.equal(sink.connections, 2);
    assert.equal(message.opens, 2, 'the message was opened again for the new connection');
    assert.deepEqual(sink.received.map((r) => r.to[0]), ['a@example.test', 'b@example.test']);
  });

  it('closes idle connections on close()', async () => {
    const { sink, delivery } = await setUp({}, { idleConnectionMs: 60_000 });
    await delivery.deliverViaMx('example.test', outbound(['a@example.test']));
    assert.equal(sink.closed, 0);
    await delivery.close();
    await sleep(50);
    assert.equal(sink.closed, 1);
  });

  it('never writes the AUTH password to its debug log', async () => {
    const lines: string[] = [];
    const logger = createLogger('debug', { write: (line: string) => lines.push(line) });
    const { sink, delivery } = await setUp({ server: { authOptional: false } }, { logger });
    const hop = nextHop(sink.port, { auth: { user: 'relay-user', pass: 'pa55-in-the-log?' } });
    const results = await delivery.deliverViaNextHop(hop, outbound(['someone@elsewhere.test']));
    assert.equal(results[0]?.outcome, 'delivered');
    assert.ok(lines.some((line) => line.includes('SMTP session ready')), 'sessions are logged at debug level');
    assert.ok(!lines.some((line) => line.includes('pa55-in-the-log?')));
  });

  it('drops what a server that stopped reading mid-DATA has not taken, instead of sending it after the attempt ended', async () => {
    // A server that answers up to 354 and then reads nothing: the kernel's buffers
    // fill and the rest of the message waits in the client's socket. Once the
    // attempt has ended, the memory the message was sent from may hold another
    // message, so none of what waited may be sent later.
    let afterDataBytes = 0;
    let resumeReading: () => void = () => undefined;
    const closed = new Promise<void>((resolveClosed) => {
      const server = net.createServer((socket) => {
        let inData = false;
        socket.on('data', (chunk: Buffer) => {
          if (inData) {
            afterDataBytes += chunk.length;
            return;
          }
          for (const line of chunk.toString('latin1').split('\r\n').filter(Boolean)) {
            const verb = line.slice(0, 4).toUpperCase();
            if (verb === 'EHLO') socket.write('250-stall.test\r\n250 8BITMIME\r\n');
            else if (verb === 'DATA') {
              inData = true;
              socket.write('354 go on\r\n');
              socket.pause();
              resumeReading = () => socket.resume();
            } else socket.write('250 ok\r\n');
          }
        });
        socket.on('error', () => undefined);
        socket.on('close', () => resolveClosed());
        socket.write('220 stall.test ESMTP\r\n');
      });
      server.listen(0, '127.0.0.1', () => {
        const port = (server.address() as net.AddressInfo).port;
        cleanups.push(() => new Promise((done) => server.close(() => done())));
        void start(port);
      });
    });
    // far more than loopback's socket buffers hold
    const body = Buffer.alloc(48 * 1024 * 1024, `${'x'.repeat(78)}\r\n`);
    let results: RecipientResult[] = [];
    async function start(port: number): Promise<void> {
      const delivery = makeDelivery({ commandTimeoutMs: 500 });
      results = await delivery.deliverViaNextHop(nextHop(port, { tls: 'none' }), outbound(['someone@elsewhere.test'], { body }));
      resumeReading();
    }
    await closed;
    assert.equal(results[0]?.outcome, 'deferred');
    assert.ok(afterDataBytes > 0, 'part of the message reached the server');
    assert.ok(afterDataBytes < body.length, `the server got ${afterDataBytes} of ${body.length} bytes: what waited in the socket was sent after the attempt ended`);
  });
});

