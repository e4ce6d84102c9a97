/**
 * An independent check of the relay's DKIM signatures: Debian's python3-dkim
 * (dkimpy, the library behind `dkimverify`) verifies the RSA and the Ed25519
 * signature of a message the relay delivered, fetching the public keys from a
 * real DNS server on 127.0.0.1 (dkimpy's `dnsfunc` hook, answered by dnspython
 * asking only that server). A copy with one body byte changed must fail, so the
 * check is shown to be able to fail.
 *
 * Needs the Debian package python3-dkim (with python3-dnspython and python3-nacl).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { loadDkimKeys } from '../../server/dkim/keys';
import { hashPassword } from '../../server/stages/password';
import { writeTestDkimKeys } from '../helpers/dkim-keys';
import { startDnsServer, type DnsServerHandle } from '../helpers/dns-server';
import { startDestination } from '../helpers/destination-server';
import { runCommand } from '../helpers/postfix';
import { startTestRelay } from '../helpers/test-relay';

const PYTHON = '/usr/bin/python3';

// verifies every DKIM-Signature of the message on stdin; prints one JSON line
const VERIFY_SCRIPT = `
import json, sys
import dkim, dns.resolver
port = int(sys.argv[1])
resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = ['127.0.0.1']
resolver.port = port
def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    answer = resolver.resolve(name.rstrip('.'), 'TXT', lifetime=timeout)
    return b''.join(b''.join(r.strings) for r in answer)
message = sys.stdin.buffer.read()
d = dkim.DKIM(message)
count = sum(1 for line in message.split(b'\\r\\n\\r\\n')[0].split(b'\\r\\n') if line.lower().startswith(b'dkim-signature:'))
def check(i):
    try:
        return bool(d.verify(idx=i, dnsfunc=dnsfunc))
    except dkim.ValidationError as err:
        print(f'signature {i}: {err}', file=sys.stderr)
        return False
results = [check(i) for i in range(count)]
print(json.dumps({'signatures': count, 'valid': results}))
`;

let dns: DnsServerHandle;
let dir: string;

before(async () => {
  if (!existsSync(PYTHON)) throw new Error('this test needs /usr/bin/python3 with the Debian package python3-dkim (see .ci/run)');
  dir = await mkdtemp(join(tmpdir(), 'ownrelay-dkim-peer-'));
});

after(async () => {
  await dns?.close();
  await rm(dir, { recursive: true, force: true });
});

async function dkimpy(message: Buffer): Promise<{ signatures: number; valid: boolean[] }> {
  const result = await runCommand(PYTHON, ['-c', VERIFY_SCRIPT, String(dns.port)], { input: message, timeoutMs: 30_000 });
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as { signatures: number; valid: boolean[] };
}

test('python3-dkim verifies the RSA and Ed25519 signatures of a delivered message, and fails a changed one', async () => {
  const files = await writeTestDkimKeys(dir);
  const dkimKeys = [
    { domain: 'customer.test', selector: 'rsa1', privateKeyFile: files.rsaFile },
    { domain: 'customer.test', selector: 'ed1', privateKeyFile: files.ed25519File },
  ];
  const [rsa, ed] = await loadDkimKeys(dkimKeys);
  dns = await startDnsServer({
    'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] },
    'mx.dest.test': { A: ['127.0.0.1'] },
    'rsa1._domainkey.customer.test': { TXT: [rsa!.dnsRecord] },
    'ed1._domainkey.customer.test': { TXT: [ed!.dnsRecord] },
  });
  const destination = await startDestination();
  const relay = await startTestRelay(
    () => ({ dns: { servers: dns.servers }, relay: { networks: ['127.0.0.0/8'] }, dkim: { keys: dkimKeys } }),
    { mxPort: destination.port },
  );
  try {
    await nodemailer.createTransport({ host: '127.0.0.1', port: relay.ports[1], secure: false, tls: { rejectUnauthorized: false } }).sendMail({
      from: 'App <app@customer.test>',
      to: 'carol@dest.test',
      subject: 'Grüße, signed',
      text: 'first line\n.a line with a leading dot\n\n\ntrailing blank lines\n\n',
    });
    const [message] = await destination.waitForMessages(1);
    assert.deepEqual(await dkimpy(message!.raw), { signatures: 2, valid: [true, true] });

    const raw = message!.raw.toString('latin1');
    const changed = Buffer.from(raw.replace('first line', 'First line'), 'latin1');
    assert.notEqual(changed.toString('latin1'), raw);
    assert.deepEqual(await dkimpy(changed), { signatures: 2, valid: [false, false] });
  } finally {
    await relay.stop();
    await destination.close();
  }
});
