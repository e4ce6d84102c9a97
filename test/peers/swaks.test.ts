/**
 * Peer tests that drive swaks, a widely used SMTP test client written
 * independently of the relay and of Node's SMTP libraries, against the relay
 * running as a real process. swaks speaks SMTP, STARTTLS (OpenSSL via
 * Net::SSLeay) and AUTH PLAIN the way third-party clients do and prints the
 * whole conversation, so these tests see the relay's replies byte for byte.
 * The relay under test forwards to a private Postfix instance, a second
 * independent implementation on the receiving side.
 *
 * Needs the Debian packages swaks, postfix and openssl (installed by .ci/run).
 * All traffic stays on 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { hashPassword } from '../../server/stages/password';
import { postfixAvailable, runCommand, startPostfix, waitUntil, type CommandResult, type PostfixInstance } from '../helpers/postfix';
import { removeDir, startRelayProcess, writeTempDir, type RelayProcess } from '../helpers/relay-process';

const USER = 'app';
const PASSWORD = 'correct horse battery staple';

/** Runs swaks with a time limit; its transcript (stdout) marks server replies with `<-` / `<~` and failures with `<**`. */
function swaks(args: string[]): Promise<CommandResult> {
  return runCommand('swaks', ['--timeout', '20', ...args], { timeoutMs: 60_000 });
}

/** A unique token for one test's message, to find exactly that message again. */
function token(name: string): string {
  return `${name}-${process.pid}-${Date.now().toString(36)}`;
}

function requirePrograms(): void {
  const missing = ['/usr/bin/swaks', '/usr/bin/openssl'].filter((p) => !existsSync(p));
  if (missing.length || !postfixAvailable()) {
    throw new Error(`peer tests need the Debian packages swaks, postfix and openssl (see .ci/run); missing: ${missing.join(', ') || 'postfix'}`);
  }
}

function filesIn(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

describe('the relay with swaks as client and Postfix as next hop', () => {
  let dir: string;
  let relay: RelayProcess;
  let destination: PostfixInstance;
  let mxPort: number;
  let submissionPort: number;

  before(async () => {
    requirePrograms();
    dir = writeTempDir('ownrelay-swaks');
    for (const sub of ['spool', 'mail', 'state']) mkdirSync(join(dir, sub));
    destination = await startPostfix({ hostname: 'dest.test', destinationDomains: ['dest.test'], serverTls: true });
    const hash = await hashPassword(PASSWORD);
    relay = await startRelayProcess(`
hostname: relay.test
listeners:
  - { role: mx, address: 127.0.0.1, port: 0 }
  - { role: submission, address: 127.0.0.1, port: 0, tls: starttls }
domains:
  - { name: localhost, delivery: maildir }
relay: { networks: [] }
inbound: { authentication: false }   # SPF/DKIM/DMARC checks have their own tests; no DNS lookups here
users:
  - name: ${USER}
    passwordHash: '${hash}'
    senders: ['@customer.test']
paths: { spool: ${dir}/spool, mail: ${dir}/mail, state: ${dir}/state }
delivery:
  allowedDestinations: [127.0.0.0/8]
  routes: { "dest.test": { host: 127.0.0.1, port: ${destination.port}, tls: opportunistic } }
  retry: { minBackoffMs: 1000, maxBackoffMs: 2000 }
`);
    [mxPort, submissionPort] = relay.ports as [number, number];
  });

  after(async () => {
    await relay?.stop().catch((err: unknown) => console.error(err));
    await destination?.stop();
    if (dir) removeDir(dir);
  });

  test('a message to postmaster@localhost sent to the mx port lands as one file in the Maildir new/ folder', { timeout: 60_000 }, async () => {
    const mark = token('mx');
    const result = await swaks(['--server', `127.0.0.1:${mxPort}`, '--from', 'someone@example.org', '--to', 'postmaster@localhost', '--header', `Subject: ${mark}`]);
    assert.equal(result.code, 0, `swaks failed:\n${result.stdout}${result.stderr}`);
    assert.match(result.stdout, /^<- {2}250 /m, 'the relay accepted the message');

    const newDir = join(dir, 'mail', 'localhost', 'postmaster', 'new');
    await waitUntil(() => filesIn(newDir).some((f) => readFileSync(join(newDir, f), 'utf8').includes(mark)), 15_000, () => `no message with ${mark} in ${newDir}; relay output:\n${relay.output()}`);
    const matching = filesIn(newDir).filter((f) => readFileSync(join(newDir, f), 'utf8').includes(mark));
    assert.equal(matching.length, 1, 'exactly one copy is stored');
  });

  test('an authenticated submission over STARTTLS with AUTH PLAIN is relayed and ends up in the Postfix destination mailbox', { timeout: 60_000 }, async () => {
    const mark = token('submission');
    const before = destination.deliveredCount();
    const result = await swaks([
      '--server', `127.0.0.1:${submissionPort}`, '--tls', '--auth', 'PLAIN', '--auth-user', USER, '--auth-password', PASSWORD,
      '--from', 'app@customer.test', '--to', 'someone@dest.test', '--header', `Subject: ${mark}`,
    ]);
    assert.equal(result.code, 0, `swaks failed:\n${result.stdout}${result.stderr}`);
    assert.match(result.stdout, /^<~ {2}235 /m, 'AUTH PLAIN succeeded inside TLS');

    await destination.waitForDelivered(before + 1, 30_000);
    const message = destination.deliveredMessages().find((m) => m.includes(mark));
    assert.ok(message, 'the relayed message is in the destination Maildir');
    // The destination Postfix records who handed it the message and how: the relay, over STARTTLS.
    assert.match(message, /^Received: from relay\.test \([^)]*\[127\.0\.0\.1\]\)\s+by dest\.test \(Postfix\) with ESMTPS/m);
  });

  test('a wrong password is refused with 535 5.7.8 and the message is not accepted', { timeout: 60_000 }, async () => {
    const result = await swaks([
      '--server', `127.0.0.1:${submissionPort}`, '--tls', '--auth', 'PLAIN', '--auth-user', USER, '--auth-password', 'wrong password',
      '--from', 'app@customer.test', '--to', 'someone@dest.test',
    ]);
    assert.notEqual(result.code, 0, 'swaks reports the failed AUTH');
    assert.match(result.stdout, /^<~\* 535 5\.7\.8/m);
    assert.doesNotMatch(result.stdout, /^<~ {2}235 /m);
  });

  test('AUTH on the submission port before STARTTLS is refused and nothing is relayed', { timeout: 60_000 }, async () => {
    const accepted = relay.logLines().filter((l) => l.event === 'accepted').length;
    const result = await swaks([
      '--server', `127.0.0.1:${submissionPort}`, '--auth', 'PLAIN', '--auth-user', USER, '--auth-password', PASSWORD,
      '--from', 'app@customer.test', '--to', 'someone@dest.test',
    ]);
    assert.notEqual(result.code, 0, `swaks must fail:\n${result.stdout}`);
    assert.doesNotMatch(result.stdout, /^<.? {1,2}235 /m, 'no AUTH success in plain text');
    // Either AUTH is not offered before STARTTLS, or it is refused with 530/538 5.7.0 ("must issue STARTTLS first").
    const notOffered = /Host did not advertise authentication/i.test(result.stdout + result.stderr);
    assert.ok(notOffered || /^<\*\* 53[08] 5\.7\.0/m.test(result.stdout), `AUTH must need TLS:\n${result.stdout}`);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(relay.logLines().filter((l) => l.event === 'accepted').length, accepted, 'no message was accepted');
  });
});

describe('the relay with relay.networks empty, probed by swaks as an open-relay tester would', () => {
  let dir: string;
  let relay: RelayProcess;

  before(async () => {
    requirePrograms();
    dir = writeTempDir('ownrelay-openrelay');
    relay = await startRelayProcess(`
hostname: relay.test
listeners:
  - { role: mx, address: 127.0.0.1, port: 0 }
  - { role: submission, address: 127.0.0.1, port: 0, tls: starttls }
domains:
  - { name: localhost, delivery: maildir }
relay: { networks: [] }
inbound: { authentication: false }   # SPF/DKIM/DMARC checks have their own tests; no DNS lookups here
paths: { spool: ${dir}/spool, mail: ${dir}/mail, state: ${dir}/state }
delivery:
  allowedDestinations: [127.0.0.0/8]
`);
  });

  after(async () => {
    await relay?.stop().catch((err: unknown) => console.error(err));
    if (dir) removeDir(dir);
  });

  test('an unauthenticated message for a foreign domain on the mx port is refused at RCPT with 5.7.1', { timeout: 60_000 }, async () => {
    const result = await swaks(['--server', `127.0.0.1:${relay.ports[0]}`, '--from', 'spammer@example.net', '--to', 'victim@example.org']);
    assert.notEqual(result.code, 0, 'swaks reports the refusal');
    assert.match(result.stdout, /-> RCPT TO:<victim@example\.org>\s*\n<\*\* 55[034] 5\.7\.1 /, `RCPT must be refused with 5.7.1:\n${result.stdout}`);
    assert.equal(relay.logLines().filter((l) => l.event === 'accepted').length, 0);
  });

  test('an unauthenticated message for a foreign domain on the submission port is refused even over TLS', { timeout: 60_000 }, async () => {
    const result = await swaks(['--server', `127.0.0.1:${relay.ports[1]}`, '--tls', '--from', 'spammer@example.net', '--to', 'victim@example.org']);
    assert.notEqual(result.code, 0, 'swaks reports the refusal');
    // Refused at MAIL (530 5.7.0 authentication required) or at RCPT (5.7.1 relay denied).
    assert.match(result.stdout, /^<~\* 5\d\d 5\.7\.[01] /m, `the relay must refuse:\n${result.stdout}`);
    assert.equal(relay.logLines().filter((l) => l.event === 'accepted').length, 0);
  });
});
