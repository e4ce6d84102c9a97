/**
 * Stack config policies: one typed object with defaults, every problem listed as
 * `ownrelay:<key>: ...`, SSH never open to the world, placeholders refused on a
 * real deploy, relay settings checked by the relay's schema at preview time.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as pulumi from '@pulumi/pulumi';
import { dnsIdentity, isRealDeployStack, parseStackSettings, rawSettingsFromStackFile, readStackSettings, StackConfigError } from '../../infra/stack-config';

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMr7ZpHw6VvM9q alice@laptop';

function valid(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    domains: ['acme.org'],
    dns: { mode: 'route53', zoneName: 'acme.org' },
    ami: 'ami-0123456789abcdef0',
    adminSshKeys: [KEY],
    adminCidrs: ['198.51.100.0/24'],
    ...overrides,
  };
}

function problemsOf(raw: Record<string, unknown>, realDeploy = true): string[] {
  try {
    parseStackSettings(raw, { realDeploy });
  } catch (err) {
    assert.ok(err instanceof StackConfigError, String(err));
    for (const line of err.message.split('\n').slice(1)) assert.match(line, /^ {2}ownrelay:\S+: /);
    return err.problems;
  }
  assert.fail('the stack config was accepted');
}

test('a minimal stack gets the documented defaults', () => {
  const settings = parseStackSettings(valid(), { realDeploy: true });
  assert.equal(settings.hostname, 'mail.acme.org');
  assert.equal(settings.region, 'eu-west-1');
  assert.equal(settings.instanceType, 't3.small');
  assert.equal(settings.nodes, 1);
  assert.equal(settings.dkimSelector, 'ownrelay1');
  assert.deepEqual(settings.dkimRetiredSelectors, []);
  assert.deepEqual(settings.dmarc, { policy: 'quarantine' });
  assert.deepEqual(settings.mtaSts, { mode: 'testing', maxAgeSeconds: 604800 });
  assert.equal(settings.http01, false);
  assert.equal(settings.spoolVolumeGiB, 20);
  assert.equal(settings.useDefaultVpc, false);
  assert.equal(settings.relayConfig.hostname, 'mail.acme.org');
  assert.match(settings.relayYaml, /^hostname: mail\.acme\.org$/m);
});

test('retired DKIM selectors are DNS labels, earlier than the current one and listed once', () => {
  assert.deepEqual(parseStackSettings(valid({ dkimSelector: 'ownrelay2', dkimRetiredSelectors: ['ownrelay1'] }), { realDeploy: true }).dkimRetiredSelectors, ['ownrelay1']);
  assert.deepEqual(problemsOf(valid({ dkimSelector: 'ownrelay2', dkimRetiredSelectors: ['Bad_Label'] })), [
    'ownrelay:dkimRetiredSelectors.0: expected a DNS label such as ownrelay1',
  ]);
  assert.deepEqual(problemsOf(valid({ dkimSelector: 'ownrelay2', dkimRetiredSelectors: ['ownrelay1', 'ownrelay2', 'ownrelay1'] })), [
    'ownrelay:dkimRetiredSelectors.1: expected an earlier selector, not the current one (ownrelay:dkimSelector is ownrelay2)',
    'ownrelay:dkimRetiredSelectors.2: ownrelay1 is listed twice',
  ]);
});

test('refuses SSH from 0.0.0.0/0 and says why', () => {
  for (const open of ['0.0.0.0/0', '::/0']) {
    const problems = problemsOf(valid({ adminCidrs: ['198.51.100.0/24', open] }));
    assert.equal(problems.length, 1);
    assert.match(problems[0] ?? '', /^ownrelay:adminCidrs\.1: SSH must not be open to the whole Internet/);
  }
});

test('admin networks are required and must be CIDR ranges', () => {
  assert.match(problemsOf(valid({ adminCidrs: [] })).join('\n'), /^ownrelay:adminCidrs: expected at least one admin network/);
  assert.match(problemsOf(valid({ adminCidrs: undefined })).join('\n'), /^ownrelay:adminCidrs: required/);
  assert.deepEqual(problemsOf(valid({ adminCidrs: ['198.51.100.7', '10.1.2.3/8'] })), [
    'ownrelay:adminCidrs.0: expected a CIDR range such as 203.0.113.0/24 or 2001:db8::/48',
    'ownrelay:adminCidrs.1: expected the network address of the range: 10.0.0.0/8',
  ]);
});

test('every problem is listed at once, one line per key', () => {
  const problems = problemsOf({ domains: [], dns: { mode: 'route53' }, ami: 'debian-13', adminSshKeys: ['not a key'], adminCidrs: ['0.0.0.0/0'], nodes: 11, dmarc: { policy: 'maybe' }, tlsRptRua: 'ftp://x', colour: 'blue' });
  const keys = problems.map((p) => /^ownrelay:([^:]+):/.exec(p)?.[1]);
  assert.deepEqual(keys.sort(), ['adminCidrs.0', 'adminSshKeys.0', 'ami', 'colour', 'dmarc.policy', 'dns', 'domains', 'nodes', 'tlsRptRua'].sort());
  assert.ok(problems.includes('ownrelay:colour: unknown key'));
  assert.ok(problems.includes('ownrelay:dns: expected zoneId or zoneName with mode route53 (or mode manual to print the records instead)'));
});

test('the AMI is required and pinned, never looked up', () => {
  assert.match(problemsOf(valid({ ami: undefined })).join('\n'), /^ownrelay:ami: required: expected a pinned AMI id/);
});

test('placeholder domains are refused on a real deploy', () => {
  for (const domain of ['example.com', 'example.org', 'shop.example.net', 'acme.example', 'acme.test', 'acme.invalid', 'acme.localhost']) {
    const problems = problemsOf(valid({ domains: [domain], dns: { mode: 'manual' } }));
    assert.ok(problems.includes(`ownrelay:domains.0: expected a real domain, not the placeholder ${domain}`), problems.join('\n'));
  }
  assert.deepEqual(problemsOf(valid({ hostname: 'mail.acme.test', dns: { mode: 'manual' } })), ['ownrelay:hostname: expected a real host name, not the placeholder mail.acme.test']);
  assert.deepEqual(problemsOf(valid({ adminSshKeys: ['ssh-ed25519 AAAAexampleexample admin'] })), ['ownrelay:adminSshKeys.0: expected a real SSH public key, not the example one']);
});

test('placeholders are accepted outside a real deploy, and test/dev stacks are not real deploys', () => {
  const settings = parseStackSettings(valid({ domains: ['example.org'], dns: { mode: 'manual' }, adminSshKeys: ['ssh-ed25519 AAAAexample admin'] }), { realDeploy: false });
  assert.equal(settings.hostname, 'mail.example.org');
  assert.equal(isRealDeployStack('acme'), true);
  assert.equal(isRealDeployStack('prod-devon'), true);
  assert.equal(isRealDeployStack('test-acme'), false);
  assert.equal(isRealDeployStack('dev'), false);
});

test("a bad relay setting fails with the relay's own message", () => {
  assert.deepEqual(problemsOf(valid({ relay: { limits: { bareLineEndings: 'sometimes' }, listeners: [{ role: 'mx', port: 'twenty-five' }] } })), [
    'ownrelay:relay.listeners.0.port: expected number, received string',
    'ownrelay:relay.limits.bareLineEndings: expected one of "reject", "normalize"',
  ]);
});

test('relay overrides cannot rename the host or drop a domain whose MX points here', () => {
  const problems = problemsOf(valid({ domains: ['acme.org', 'shop.acme.org'], relay: { hostname: 'other.acme.org', domains: [{ name: 'acme.org' }] } }));
  assert.deepEqual(problems, [
    'ownrelay:relay.hostname: expected mail.acme.org (the PTR name) or nothing; set ownrelay:hostname to change it',
    'ownrelay:relay.domains: expected an entry for shop.acme.org: its MX points to this server',
  ]);
});

test('a Route 53 zone must contain every name the stack publishes', () => {
  assert.deepEqual(problemsOf(valid({ domains: ['acme.org', 'acme-shop.net'] })), ['ownrelay:dns.zoneName: expected a zone that contains acme-shop.net; use mode manual for names outside acme.org']);
  assert.equal(parseStackSettings(valid({ dns: { mode: 'route53', zoneId: 'Z0123456789ABC' }, domains: ['acme.org', 'acme-shop.net'] }), { realDeploy: true }).dns.mode, 'route53');
});

test('DMARC and TLS-RPT report addresses must be mailto: (or https: for TLS-RPT) URIs', () => {
  assert.deepEqual(problemsOf(valid({ dmarc: { rua: 'dmarc@acme.org' } })), ['ownrelay:dmarc.rua: expected a mailto: URI such as mailto:dmarc@acme.org']);
  const settings = parseStackSettings(valid({ dmarc: { policy: 'reject', rua: 'mailto:dmarc@acme.org' }, tlsRptRua: 'https://reports.acme.org/tls' }), { realDeploy: true });
  assert.deepEqual(settings.dmarc, { policy: 'reject', rua: 'mailto:dmarc@acme.org' });
  assert.equal(settings.tlsRptRua, 'https://reports.acme.org/tls');
});

test('a stack file is read the way Pulumi reads it: prefix dropped, non-string keys parsed as JSON', () => {
  const raw = rawSettingsFromStackFile({ 'aws:region': 'us-east-1', 'ownrelay:nodes': '3', 'ownrelay:http01': 'true', 'ownrelay:ami': 'ami-0123456789abcdef0', 'ownrelay:domains': ['acme.org'] });
  assert.deepEqual(raw, { nodes: 3, http01: true, ami: 'ami-0123456789abcdef0', domains: ['acme.org'] });
});

test('the program reads the ownrelay namespace of the stack, strictly unless the stack is a test or dev stack', () => {
  const set = (stack: string): void => {
    pulumi.runtime.setMocks({ newResource: (args) => ({ id: `${args.name}-id`, state: args.inputs }), call: (args) => args.inputs }, 'ownrelay', stack);
    pulumi.runtime.setConfig('ownrelay:domains', '["example.org"]');
    pulumi.runtime.setConfig('ownrelay:dns', '{"mode":"manual"}');
    pulumi.runtime.setConfig('ownrelay:ami', 'ami-0123456789abcdef0');
    pulumi.runtime.setConfig('ownrelay:nodes', '2');
    pulumi.runtime.setConfig('ownrelay:adminSshKeys', JSON.stringify([KEY]));
    pulumi.runtime.setConfig('ownrelay:adminCidrs', '["198.51.100.0/24"]');
  };
  set('dev-acme');
  const settings = readStackSettings();
  assert.equal(settings.nodes, 2);
  assert.equal(settings.hostname, 'mail.example.org');
  set('acme');
  assert.throws(() => readStackSettings(), /ownrelay:domains\.0: expected a real domain, not the placeholder example\.org/);
});

test('HTTP-01 needs an ACME contact address, and the ACME settings need HTTP-01', () => {
  assert.deepEqual(problemsOf(valid({ http01: true })), [
    'ownrelay:acmeEmail: required when http01 is true: the contact address of the ACME account (set it with `pulumi config set ownrelay:acmeEmail hostmaster@<domain>`)',
  ]);
  assert.deepEqual(problemsOf(valid({ http01: true, acmeEmail: 'hostmaster' })), ['ownrelay:acmeEmail: expected an email address such as hostmaster@acme.org']);
  assert.deepEqual(problemsOf(valid({ http01: true, acmeEmail: 'hostmaster@acme.org', acmeDirectoryUrl: 'http://ca.acme.org/directory' })), ['ownrelay:acmeDirectoryUrl: expected an https:// URL of an ACME directory']);
  assert.deepEqual(problemsOf(valid({ acmeEmail: 'hostmaster@acme.org' })), ['ownrelay:acmeEmail: only used with http01: true (set ownrelay:http01 to get the certificate by ACME)']);
  const settings = parseStackSettings(valid({ http01: true, acmeEmail: 'hostmaster@acme.org', acmeDirectoryUrl: 'https://acme-staging-v02.api.letsencrypt.org/directory' }), { realDeploy: true });
  assert.equal(settings.relayConfig.tls.acme?.email, 'hostmaster@acme.org');
  assert.equal(settings.relayConfig.tls.acme?.directoryUrl, 'https://acme-staging-v02.api.letsencrypt.org/directory');
  assert.deepEqual(rawSettingsFromStackFile({ 'ownrelay:acmeEmail': 'hostmaster@acme.org' }), { acmeEmail: 'hostmaster@acme.org' });
});

test('MTA-STS is published and served only when the relay gets a CA certificate by ACME', () => {
  const without = parseStackSettings(valid(), { realDeploy: true });
  assert.equal(without.mtaStsPublished, false);
  assert.equal(without.relayConfig.tls.mtaStsPolicy, undefined);
  assert.equal(dnsIdentity(without, [{ hostname: 'mail.acme.org', ipv4: '198.51.100.7' }], 'unused').mtaSts, undefined);
  const http01 = parseStackSettings(valid({ nodes: 2, http01: true, acmeEmail: 'hostmaster@acme.org', mtaSts: { mode: 'enforce', maxAgeSeconds: 86400 } }), { realDeploy: true });
  assert.equal(http01.mtaStsPublished, true);
  // our own VPC gives every host an IPv6 address and AAAA records: everything listens on both
  assert.deepEqual({ ...http01.relayConfig.tls.mtaStsPolicy }, { address: '::', port: 443, mode: 'enforce', maxAgeSeconds: 86400, mx: ['mail.acme.org', 'mail2.acme.org'] });
  assert.equal(http01.relayConfig.tls.acme?.http01.address, '::');
  assert.deepEqual(http01.relayConfig.listeners.map((l) => l.address), ['::', '::', '::']);
  const defaultVpc = parseStackSettings(valid({ useDefaultVpc: true, http01: true, acmeEmail: 'hostmaster@acme.org' }), { realDeploy: true });
  assert.equal(defaultVpc.relayConfig.tls.mtaStsPolicy?.address, '0.0.0.0');
  assert.deepEqual(defaultVpc.relayConfig.listeners.map((l) => l.address), ['0.0.0.0', '0.0.0.0', '0.0.0.0']);
  // DNS-01 through a relay override counts too (no port 80 needed)
  const dns01 = parseStackSettings(valid({ relay: { tls: { acme: { email: 'hostmaster@acme.org', challenge: 'dns-01', dns01: { provider: 'route53' } } } } }), { realDeploy: true });
  assert.equal(dns01.mtaStsPublished, true);
  assert.equal(dns01.relayConfig.tls.acme?.challenge, 'dns-01');
  assert.deepEqual(dns01.relayConfig.tls.mtaStsPolicy?.mx, ['mail.acme.org']);
});

test('roleMailTo forwards postmaster@ and abuse@ of every domain there; it must be an address elsewhere, and real on a real deploy', () => {
  const settings = parseStackSettings(valid({ domains: ['acme.org', 'shop.acme.org'], roleMailTo: 'ops@acme-corp.net' }), { realDeploy: true });
  for (const domain of settings.relayConfig.domains) {
    assert.deepEqual(domain.aliases, { postmaster: 'ops@acme-corp.net', abuse: 'ops@acme-corp.net' }, domain.name);
  }
  assert.match(settings.relayYaml, /^ {4}aliases:\n {6}postmaster: ops@acme-corp\.net\n {6}abuse: ops@acme-corp\.net$/m);
  assert.equal(parseStackSettings(valid(), { realDeploy: true }).relayConfig.domains[0]!.aliases.postmaster, undefined, 'unset: kept on the server');

  assert.deepEqual(problemsOf(valid({ roleMailTo: 'not an address' })), ['ownrelay:roleMailTo: expected an address such as ops@acme-corp.example']);
  assert.deepEqual(problemsOf(valid({ roleMailTo: 'ops@ACME.org' })), ['ownrelay:roleMailTo: expected an address at a domain this server does not receive for: mail for acme.org comes back to this server']);
  assert.deepEqual(problemsOf(valid({ roleMailTo: 'ops@acme-corp.example' })), ['ownrelay:roleMailTo: expected a real address, not one at the placeholder acme-corp.example']);
  assert.equal(parseStackSettings(valid({ roleMailTo: 'ops@acme-corp.example' }), { realDeploy: false }).roleMailTo, 'ops@acme-corp.example');
});

test('the DMARC and TLS-RPT report addresses published at one of the domains are mailboxes there (forwarded with roleMailTo), so reports are not refused', () => {
  const reports = { dmarc: { rua: 'mailto:dmarc+reports@acme.org!10m' }, tlsRptRua: 'mailto:TLS@shop.acme.org' };
  const kept = parseStackSettings(valid({ domains: ['acme.org', 'shop.acme.org'], ...reports }), { realDeploy: true }).relayConfig.domains;
  assert.deepEqual(kept.map((d) => [d.name, d.mailboxes]), [
    ['acme.org', ['postmaster', 'abuse', 'dmarc']],
    ['shop.acme.org', ['postmaster', 'abuse', 'tls']],
  ]);
  const forwarded = parseStackSettings(valid({ domains: ['acme.org', 'shop.acme.org'], ...reports, roleMailTo: 'ops@acme-corp.net' }), { realDeploy: true }).relayConfig.domains;
  assert.deepEqual(forwarded[0]!.aliases, { postmaster: 'ops@acme-corp.net', abuse: 'ops@acme-corp.net', dmarc: 'ops@acme-corp.net' });

  // reports sent elsewhere, or over https, change nothing here
  const elsewhere = parseStackSettings(valid({ dmarc: { rua: 'mailto:reports@dmarc-service.net' }, tlsRptRua: 'https://reports.example.net/tlsrpt' }), { realDeploy: true }).relayConfig.domains;
  assert.deepEqual(elsewhere[0]!.mailboxes, ['postmaster', 'abuse']);
});
