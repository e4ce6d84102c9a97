/**
 * A destination mail server for tests: a real smtp-server on 127.0.0.1 port 0
 * with its own self-signed certificate, recording every message it accepts.
 * `rcptPolicy` decides per recipient (and attempt) what to answer, so tests can
 * make one recipient defer while another succeeds.
 */
import { SMTPServer } from 'smtp-server';
import type { AddressInfo } from 'node:net';
import selfsigned from 'selfsigned';

export interface ReceivedMessage {
  from: string;
  to: string[];
  raw: Buffer;
  secure: boolean;
  user?: string;
  /** RFC 3461 RET and ENVID of MAIL FROM, when given */
  dsn?: { ret: string | null; envid: string | null };
  /** RFC 3461 NOTIFY and ORCPT per recipient, for the recipients that had any */
  rcptDsn: Record<string, { notify?: string[]; orcpt?: string }>;
}

export interface DestinationOptions {
  /** return an Error with responseCode to refuse; `attempt` counts RCPTs of this address */
  rcptPolicy?: (address: string, attempt: number) => { code: number; message: string } | undefined;
  /** refuse DATA with this reply */
  dataPolicy?: () => { code: number; message: string } | undefined;
  /** require AUTH with these credentials */
  auth?: { user: string; pass: string };
  /** never offer STARTTLS */
  noTls?: boolean;
  /** TLS key and certificate (PEM) instead of the shared self-signed one for mx.dest.test */
  credentials?: { key: string; cert: string };
  /** do not offer DSN (RFC 3461) */
  noDsn?: boolean;
  /** the loopback address to listen on (default 127.0.0.1; ::1 for IPv6) */
  host?: string;
}

export interface DestinationServer {
  port: number;
  messages: ReceivedMessage[];
  connections: number;
  waitForMessages(count: number, timeoutMs?: number): Promise<ReceivedMessage[]>;
  close(): Promise<void>;
}

let credentials: Promise<{ key: string; cert: string }> | undefined;

function testCredentials(): Promise<{ key: string; cert: string }> {
  credentials ??= selfsigned
    .generate([{ name: 'commonName', value: 'mx.dest.test' }], { keySize: 2048, algorithm: 'sha256' })
    .then((pems) => ({ key: pems.private, cert: pems.cert }));
  return credentials;
}

export async function startDestination(options: DestinationOptions = {}): Promise<DestinationServer> {
  const { key, cert } = options.credentials ?? (await testCredentials());
  const attempts = new Map<string, number>();
  const state: DestinationServer = {
    port: 0,
    messages: [],
    connections: 0,
    async waitForMessages(count, timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      while (state.messages.length < count) {
        if (Date.now() > deadline) throw new Error(`destination got ${state.messages.length} of ${count} messages`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return state.messages;
    },
    close: async () => undefined,
  };
  const server = new SMTPServer({
    key,
    cert,
    minVersion: 'TLSv1.2',
    disableReverseLookup: true,
    hideENHANCEDSTATUSCODES: false,
    hideSTARTTLS: options.noTls ?? false,
    hideDSN: options.noDsn ?? false,
    disabledCommands: [...(options.auth ? [] : ['AUTH']), ...(options.noTls ? ['STARTTLS'] : [])],
    authOptional: !options.auth,
    logger: false,
    onConnect(_session, cb) {
      state.connections++;
      cb();
    },
    onAuth(auth, _session, cb) {
      if (options.auth && auth.username === options.auth.user && auth.password === options.auth.pass) return cb(null, { user: auth.username });
      cb(Object.assign(new Error('5.7.8 bad credentials'), { responseCode: 535 }));
    },
    onRcptTo(address, _session, cb) {
      const attempt = (attempts.get(address.address) ?? 0) + 1;
      attempts.set(address.address, attempt);
      const verdict = options.rcptPolicy?.(address.address, attempt);
      if (verdict) return cb(Object.assign(new Error(verdict.message), { responseCode: verdict.code }));
      cb();
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const refusal = options.dataPolicy?.();
        if (refusal) return cb(Object.assign(new Error(refusal.message), { responseCode: refusal.code }));
        state.messages.push({
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((r) => r.address),
          raw: Buffer.concat(chunks),
          secure: session.secure,
          user: session.user as string | undefined,
          dsn: session.envelope.dsn && (session.envelope.dsn.ret !== null || session.envelope.dsn.envid !== null) ? { ...session.envelope.dsn } : undefined,
          rcptDsn: Object.fromEntries(session.envelope.rcptTo.filter((r) => r.dsn).map((r) => [r.address, { ...r.dsn }])),
        });
        cb();
      });
    },
  });
  // a client killed mid-session (crash tests) resets its connection: not an error here
  server.on('error', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, options.host ?? '127.0.0.1', () => resolve()));
  state.port = (server.server.address() as AddressInfo).port;
  state.close = () => new Promise((resolve) => server.close(() => resolve()));
  return state;
}
