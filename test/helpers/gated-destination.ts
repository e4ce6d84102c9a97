/** A destination MX for tests that must change something while a delivery is in the middle. */
import { SMTPServer } from 'smtp-server';

/**
 * A destination MX whose answer to RCPT TO waits until `release()`: then it
 * refuses with `refuseWith`, or accepts and takes the message. Lets a test
 * change something (the relay's disk, its queue) while a delivery is in the middle.
 */
export async function startGatedDestination(refuseWith?: { code: number; message: string }) {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let rcptSeen!: () => void;
  const firstRcpt = new Promise<void>((resolve) => (rcptSeen = resolve));
  const state = { rcptCount: 0, delivered: [] as string[] };
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    onRcptTo(_address, _session, callback) {
      state.rcptCount++;
      rcptSeen();
      void released.then(() => callback(refuseWith ? Object.assign(new Error(refuseWith.message), { responseCode: refuseWith.code }) : undefined));
    },
    onData(stream, session, callback) {
      stream.resume();
      stream.on('end', () => {
        state.delivered.push(session.envelope.rcptTo.map((r) => r.address).join(','));
        callback();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.server.address() as { port: number }).port;
  return {
    port,
    state,
    firstRcpt,
    release,
    /** relay config: mail for remote.test goes to this destination */
    route: {
      delivery: {
        allowedDestinations: ['127.0.0.0/8'],
        retry: { minBackoffMs: 300, maxBackoffMs: 600 },
        routes: { 'remote.test': { host: '127.0.0.1', port, tls: 'none' } },
      },
    },
    close: () => {
      release();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
