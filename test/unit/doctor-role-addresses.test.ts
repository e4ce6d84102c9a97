import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RelayConfigSchema } from '../../server/config/schema';
import { roleAddressesCheck } from '../../server/doctor/checks/role-addresses';
import type { DoctorContext } from '../../server/doctor/types';

/** The check reads only the config and the domain; DNS and network are never touched. */
function contextFor(domains: unknown[], domain = 'example.org'): DoctorContext {
  const config = RelayConfigSchema.parse({ listeners: [{ role: 'mx', port: 25 }], domains, paths: { mail: '/var/mail/ownrelay' } });
  const unused = new Proxy({}, { get: () => assert.fail('the check must not use DNS or the network') });
  return { domain, hostname: 'mail.example.org', ips: ['192.0.2.1'], config, dns: unused as DoctorContext['dns'], net: unused as DoctorContext['net'], smtpPort: 25, timeoutMs: 1000 };
}

describe('doctor: role-addresses', () => {
  test('passes when postmaster and abuse are forwarded', async () => {
    const result = await roleAddressesCheck.run(contextFor([{ name: 'example.org', aliases: { postmaster: 'ops@example.net', abuse: ['ops@example.net', 'alice'] } }]));
    assert.equal(result.status, 'pass');
    assert.equal(
      result.detail,
      'postmaster@example.org: forwarded to ops@example.net\nabuse@example.org: forwarded to ops@example.net; kept in the Maildir /var/mail/ownrelay/example.org/alice/',
    );
  });

  test('warns when one is kept in a local Maildir, with the alias that would forward it', async () => {
    const result = await roleAddressesCheck.run(contextFor([{ name: 'example.org', aliases: { abuse: 'ops@example.net' } }]));
    assert.equal(result.status, 'warn');
    assert.match(result.detail, /^postmaster@example\.org: kept in the Maildir \/var\/mail\/ownrelay\/example\.org\/postmaster\/$/m);
    assert.match(result.detail, /^abuse@example\.org: forwarded to ops@example\.net$/m);
    assert.match(result.detail, /wait on this server until someone reads them/);
    assert.equal(result.fix, 'forward them to a mailbox you read, in the entry of example.org in domains:\n  aliases: { postmaster: you@example.net }');
  });

  test('passes for a forward domain, naming its next hop', async () => {
    const result = await roleAddressesCheck.run(contextFor([{ name: 'example.org', delivery: 'forward', forwardTo: { host: 'mail.internal.example' } }]));
    assert.equal(result.status, 'pass');
    assert.match(result.detail, /^postmaster@example\.org: passed on to mail\.internal\.example$/m);
  });

  test('warns when the server does not receive for the domain', async () => {
    const result = await roleAddressesCheck.run(contextFor([{ name: 'example.org' }], 'other.example'));
    assert.equal(result.status, 'warn');
    assert.match(result.detail, /does not receive mail for other\.example/);
  });
});
