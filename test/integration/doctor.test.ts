/**
 * `ownrelay doctor`, the records: against a real DNS server on loopback serving
 * the zone the infra program renders (see test/helpers/doctor-world.ts), the
 * correct zone passes every check, and each broken zone (wrong PTR, SPF missing
 * the address or over 10 lookups, a DKIM key that is not the relay's, no DMARC,
 * a listed address) fails its check with the right message and fix.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderMtaStsPolicy } from '../../infra/render/dns-records';
import type { RelayConfig } from '../../server/config/schema';
import { CHECKS, runDoctor } from '../../server/doctor/runner';
import { DOMAIN, HOST, IP, IPV6, NIBBLES_V6, POLICY, PTR_NAME, SELECTOR, result, startDoctorWorld, type DoctorWorld } from '../helpers/doctor-world';
import type { Zone } from '../helpers/dns-server';
import { startTestRelay } from '../helpers/test-relay';

let world: DoctorWorld;
before(async () => {
  world = await startDoctorWorld();
});
after(async () => {
  await world?.stop();
});

describe('ownrelay doctor: DNS records', () => {
  test('a correct zone, a trusted certificate, port 25 open and no listings pass every check', async () => {
    const report = await runDoctor(world.options());
    for (const r of report.results) assert.equal(r.status, 'pass', `${r.id}: ${r.detail}\n${r.fix ?? ''}`);
    assert.deepEqual(report.results.map((r) => r.id), CHECKS.map((c) => c.id));
    assert.equal(report.ok, true);
    assert.match(result(report, 'ptr').detail, /127\.0\.0\.7 -> mail\.doctor\.test -> 127\.0\.0\.7/);
    assert.match(result(report, 'spf').detail, /DNS lookups: 0 of 10/);
    assert.match(result(report, 'role-addresses').detail, /^postmaster@doctor\.test: forwarded to ops@ops\.doctor-world\.test$/m);
    assert.match(result(report, 'certificate').detail, /mail\.doctor\.test.*valid for 8\d more days/);
    assert.match(result(report, 'open-relay').detail, /^127\.0\.0\.7:\d+: relaying refused at RCPT TO: 554/m);
    assert.match(result(report, 'open-relay').detail, /^127\.0\.0\.7:\d+ after STARTTLS: relaying refused at RCPT TO: 554/m);
  });

  test('a dual-stack server passes with its IPv6 address in AAAA, ip6.arpa PTR and SPF ip6:, and its nibbles are looked up on blocklists', async () => {
    const dual = await startTestRelay(() => world.relayOverrides([IP, IPV6]));
    try {
      const dualOptions = world.options({
        config: world.configWithDkim(dual.relay.config),
        ips: [IPV6, IP],
        smtpPort: 25,
        connectTo: [...world.options().connectTo!, `${IP}:25:${IP}:${dual.ports[0]}`, `[${IPV6}]:25:[${IPV6}]:${dual.ports[1]}`],
      });
      world.dns.setZone(world.goodZone(IPV6));
      const report = await runDoctor(dualOptions);
      for (const r of report.results) assert.equal(r.status, 'pass', `${r.id}: ${r.detail}\n${r.fix ?? ''}`);
      assert.deepEqual(report.ips, [IP, IPV6]);
      assert.match(result(report, 'address').detail, /mail\.doctor\.test resolves to 127\.0\.0\.7, ::1/);
      assert.match(result(report, 'ptr').detail, /::1 -> mail\.doctor\.test -> ::1/);
      assert.match(result(report, 'spf').detail, /ip6:::1/);
      assert.match(result(report, 'spf').detail, /::1: pass/);
      assert.match(result(report, 'certificate').detail, /::1:25: /);

      world.dns.setZone({ ...world.goodZone(IPV6), [`${NIBBLES_V6}.bl.doctor-lists.test`]: { A: ['127.0.0.3'] } });
      const listed = await runDoctor(dualOptions);
      assert.match(result(listed, 'blocklists').detail, /::1 is LISTED on bl\.doctor-lists\.test \(127\.0\.0\.3\)/);
      assert.doesNotMatch(result(listed, 'blocklists').detail, /127\.0\.0\.7 is LISTED/);
    } finally {
      world.dns.setZone(world.goodZone());
      await dual.stop();
    }
  });

  test('a PTR that is not the host name fails, with the reverse DNS to set', async () => {
    const report = await world.doctorOn(world.zoneWith((zone) => (zone[PTR_NAME] = { PTR: ['ec2-127-0-0-7.compute.example'] })));
    const ptr = result(report, 'ptr');
    assert.equal(ptr.status, 'fail');
    assert.match(ptr.detail, /PTR of 127\.0\.0\.7 is ec2-127-0-0-7\.compute\.example, expected mail\.doctor\.test/);
    assert.match(ptr.fix ?? '', /7\.0\.0\.127\.in-addr\.arpa\.\t3600\tIN\tPTR\tmail\.doctor\.test\./);
    assert.equal(report.ok, false);
    assert.equal(result(report, 'mx').status, 'pass');
  });

  test('a PTR whose host name does not resolve back to the address fails as not forward-confirmed', async () => {
    const report = await world.doctorOn(world.zoneWith((zone) => (zone[HOST] = { A: ['127.0.0.99'] })));
    assert.match(result(report, 'ptr').detail, /PTR of 127\.0\.0\.7 is mail\.doctor\.test, but mail\.doctor\.test does not resolve back to 127\.0\.0\.7 \(127\.0\.0\.99\)/);
    const address = result(report, 'address');
    assert.equal(address.status, 'fail');
    assert.match(address.fix ?? '', /mail\.doctor\.test\.\t3600\tIN\tA\t127\.0\.0\.7/);
  });

  test('an SPF record without the server\'s address fails, and the fix adds it to the record', async () => {
    const report = await world.doctorOn(
      world.zoneWith((zone) => {
        zone[DOMAIN]!.TXT = ['v=spf1 ip4:192.0.2.1 include:_spf.partner.doctor.test -all'];
        zone['_spf.partner.doctor.test'] = { TXT: ['v=spf1 ip4:198.51.100.0/24 -all'] };
      }),
    );
    const spf = result(report, 'spf');
    assert.equal(spf.status, 'fail');
    assert.match(spf.detail, /SPF of doctor\.test does not permit 127\.0\.0\.7/);
    assert.match(spf.detail, /127\.0\.0\.7: fail/);
    assert.match(spf.fix ?? '', /doctor\.test\.\t3600\tIN\tTXT\t"v=spf1 ip4:127\.0\.0\.7 ip4:192\.0\.2\.1 include:_spf\.partner\.doctor\.test -all"/);
  });

  test('an SPF tree over 10 DNS lookups fails, counting includes, a, mx and redirects recursively', async () => {
    // top: 2 includes; each include holds a, mx, exists and 2 more includes of one lookup each
    const zone = world.zoneWith((z) => (z[DOMAIN]!.TXT = ['v=spf1 ip4:127.0.0.7 include:one.spf.doctor.test include:two.spf.doctor.test -all']));
    for (const name of ['one', 'two']) {
      zone[`${name}.spf.doctor.test`] = { TXT: [`v=spf1 a mx exists:%{i}.x.doctor.test include:${name}-a.spf.doctor.test redirect=${name}-b.spf.doctor.test`] };
      zone[`${name}-a.spf.doctor.test`] = { TXT: ['v=spf1 ptr -all'] };
      zone[`${name}-b.spf.doctor.test`] = { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] };
    }
    const report = await world.doctorOn(zone);
    const spf = result(report, 'spf');
    assert.equal(spf.status, 'fail');
    // per branch: include (1) + a, mx, exists (3) + include (1) + its ptr (1) + redirect (1) = 7
    assert.match(spf.detail, /SPF of doctor\.test needs 14 DNS lookups, more than the limit of 10: receivers answer permerror/);
    assert.match(spf.detail, /include:one\.spf\.doctor\.test = 7, include:two\.spf\.doctor\.test = 7/);
    assert.match(spf.fix ?? '', /"v=spf1 ip4:127\.0\.0\.7 -all"/);
  });

  test('SPF mistakes fail with what receivers make of them: two records, bad syntax, +all, an include without a record', async () => {
    const cases: Array<[string[], Zone, RegExp]> = [
      [['v=spf1 ip4:127.0.0.7 -all', 'v=spf1 mx -all'], {}, /doctor\.test has 2 SPF records \(receivers answer permerror\)/],
      [['v=spf1 ip4:127.0.0.7 ip4:300.1.2.3 -all'], {}, /SPF record of doctor\.test is invalid: "ip4:300\.1\.2\.3": expected an IPv4 address/],
      [['v=spf1 ip4:127.0.0.7 +all'], {}, /SPF of doctor\.test ends in \+all: it permits every host on the Internet/],
      [['v=spf1 ip4:127.0.0.7 include:gone.doctor.test -all'], { 'gone.doctor.test': { TXT: ['not spf'] } }, /gone\.doctor\.test \(included from doctor\.test\) has no SPF record: receivers answer permerror/],
    ];
    for (const [txt, extra, message] of cases) {
      const report = await world.doctorOn({ ...world.zoneWith((zone) => (zone[DOMAIN]!.TXT = txt)), ...extra });
      const spf = result(report, 'spf');
      assert.equal(spf.status, 'fail', txt.join(' | '));
      assert.match(spf.detail, message);
    }
  });

  test('a published DKIM key that is not the relay\'s fails, with the record of the right key', async () => {
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
    const name = `${SELECTOR}._domainkey.${DOMAIN}`;
    const report = await world.doctorOn(world.zoneWith((zone) => (zone[name] = { TXT: [`v=DKIM1; k=rsa; p=${other}`] })));
    const dkim = result(report, 'dkim');
    assert.equal(dkim.status, 'fail');
    assert.match(dkim.detail, /the key published at s2026\._domainkey\.doctor\.test does not match the relay's private key/);
    const expected = world.goodZone()[name]!.TXT![0] as string;
    // the fix is the zone-file line of the right record, split into 255-byte strings
    assert.ok((dkim.fix ?? '').replace(/" "/g, '').includes(expected), dkim.fix);
  });

  test('an Ed25519 key next to the RSA key passes when its raw public key is published (RFC 8463), and fails when it is missing', async () => {
    const ed = generateKeyPairSync('ed25519');
    const edFile = join(world.dir, 'dkim-ed25519.pem');
    writeFileSync(edFile, ed.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    // RFC 8463: p= is the bare 32-byte key, which is the JWK's x
    const raw = Buffer.from(ed.publicKey.export({ format: 'jwk' }).x!, 'base64url').toString('base64');
    const base = world.configWithDkim(world.relay.relay.config);
    const keys = [...(base as unknown as { dkim: { keys: object[] } }).dkim.keys, { domain: DOMAIN, selector: 'ed2026', privateKeyFile: edFile }];
    const config = { ...base, dkim: { keys } } as unknown as RelayConfig;
    const published = await world.doctorOn(world.zoneWith((zone) => (zone[`ed2026._domainkey.${DOMAIN}`] = { TXT: [`v=DKIM1; k=ed25519; p=${raw}`] })), { config });
    const dkim = result(published, 'dkim');
    assert.equal(dkim.status, 'pass', dkim.detail);
    assert.match(dkim.detail, /s2026\._domainkey\.doctor\.test: rsa key matches\ned2026\._domainkey\.doctor\.test: ed25519 key matches/);

    const missing = await world.doctorOn(world.goodZone(), { config });
    assert.equal(result(missing, 'dkim').status, 'fail');
    assert.match(result(missing, 'dkim').detail, /no DKIM key published at ed2026\._domainkey\.doctor\.test/);
    assert.ok((result(missing, 'dkim').fix ?? '').includes(`ed2026._domainkey.doctor.test.\t3600\tIN\tTXT\t"v=DKIM1; k=ed25519; p=${raw}"`), result(missing, 'dkim').fix);
  });

  test('without a dkim section in the config the DKIM check fails with "no DKIM key configured"', async () => {
    const report = await runDoctor(world.options({ config: world.relay.relay.config }));
    const dkim = result(report, 'dkim');
    assert.equal(dkim.status, 'fail');
    assert.match(dkim.detail, /^no DKIM key configured for doctor\.test/);
  });

  test('a missing DMARC record fails, with the record to publish', async () => {
    const report = await world.doctorOn(world.zoneWith((zone) => delete zone[`_dmarc.${DOMAIN}`]));
    const dmarc = result(report, 'dmarc');
    assert.equal(dmarc.status, 'fail');
    assert.match(dmarc.detail, /no DMARC record at _dmarc\.doctor\.test/);
    assert.match(dmarc.fix ?? '', /_dmarc\.doctor\.test\.\t3600\tIN\tTXT\t"v=DMARC1; p=quarantine; rua=mailto:postmaster@doctor\.test; adkim=r; aspf=r"/);
  });

  test('an invalid DMARC policy fails and p=none warns', async () => {
    const invalid = await world.doctorOn(world.zoneWith((zone) => (zone[`_dmarc.${DOMAIN}`] = { TXT: ['v=DMARC1; p=block'] })));
    assert.match(result(invalid, 'dmarc').detail, /invalid: p=block is not none, quarantine or reject/);
    const monitoring = await world.doctorOn(world.zoneWith((zone) => (zone[`_dmarc.${DOMAIN}`] = { TXT: ['v=DMARC1; p=none'] })));
    assert.equal(result(monitoring, 'dmarc').status, 'warn');
    assert.equal(monitoring.ok, true);
  });

  test('DMARC and TLS-RPT reports to an address of the domain that the relay would refuse warn, with what to accept', async () => {
    const report = await world.doctorOn(
      world.zoneWith((zone) => {
        zone[`_dmarc.${DOMAIN}`] = { TXT: [`v=DMARC1; p=quarantine; rua=mailto:dmarc@${DOMAIN}!10m,mailto:reports@dmarc-service.example`] };
        zone[`_smtp._tls.${DOMAIN}`] = { TXT: [`v=TLSRPTv1; rua=mailto:tlsrpt+x@${DOMAIN}`] };
      }),
    );
    const dmarc = result(report, 'dmarc');
    assert.equal(dmarc.status, 'warn');
    assert.match(dmarc.detail, /^reports to dmarc@doctor\.test would be refused by this server \(no mailbox dmarc at doctor\.test\)$/m);
    assert.doesNotMatch(dmarc.detail, /reports to reports@dmarc-service/, 'an address elsewhere is not judged');
    assert.match(dmarc.fix ?? '', /add the mailbox to doctor\.test in domains/);
    const tlsRpt = result(report, 'tls-rpt');
    assert.equal(tlsRpt.status, 'warn');
    assert.match(tlsRpt.detail, /^reports to tlsrpt\+x@doctor\.test would be refused by this server \(no mailbox tlsrpt at doctor\.test\)$/m);
    assert.equal(report.ok, true, 'a warning does not fail the doctor');
  });

  test('an address on a DNS blocklist fails; Spamhaus\'s 127.255.255.254 "public resolver" answer is "cannot tell", not a listing', async () => {
    const listed = await world.doctorOn(
      world.zoneWith((zone) => {
        zone['7.0.0.127.bl.doctor-lists.test'] = { A: ['127.0.0.2'], TXT: ['Listed: see https://bl.doctor-lists.test/lookup?ip=127.0.0.7'] };
      }),
    );
    const blocklists = result(listed, 'blocklists');
    assert.equal(blocklists.status, 'fail');
    assert.match(blocklists.detail, /127\.0\.0\.7 is LISTED on bl\.doctor-lists\.test \(127\.0\.0\.2\): Listed: see https:\/\/bl\.doctor-lists\.test\/lookup\?ip=127\.0\.0\.7/);

    const refused = await world.doctorOn(
      world.zoneWith((zone) => {
        zone['7.0.0.127.refusing.doctor-lists.test'] = { A: ['127.255.255.254'] };
        zone['doctor.test.dbl.doctor-lists.test'] = { A: ['127.255.255.254'] };
      }),
    );
    const unknown = result(refused, 'blocklists');
    assert.equal(unknown.status, 'warn');
    assert.doesNotMatch(unknown.detail, /LISTED/);
    assert.match(unknown.detail, /127\.0\.0\.7 on refusing\.doctor-lists\.test: cannot tell, the list answered 127\.255\.255\.254: the list refuses queries from public or shared resolvers/);
    assert.match(unknown.detail, /doctor\.test on dbl\.doctor-lists\.test: cannot tell/);
    assert.equal(refused.ok, true);
  });

  test('the domain on a domain blocklist fails', async () => {
    const report = await world.doctorOn(world.zoneWith((zone) => (zone['doctor.test.dbl.doctor-lists.test'] = { A: ['127.0.1.2'] })));
    assert.match(result(report, 'blocklists').detail, /doctor\.test is LISTED on dbl\.doctor-lists\.test \(127\.0\.1\.2\)/);
  });

  test('inbound blocklists are asked about their test entries: one that lists everyone fails, one that refuses the resolver or is not a list warns', async () => {
    const lists = (dnsbl: unknown[]) => ({ config: { ...world.configWithDkim(world.relay.relay.config), inbound: { ...world.relay.relay.config.inbound, dnsbl } } as RelayConfig });
    const zone = world.zoneWith((z) => {
      z['2.0.0.127.good.inbound-lists.test'] = { A: ['127.0.0.2'] };
      z['2.0.0.127.picky.inbound-lists.test'] = { A: ['127.0.0.2'] };
      z['1.0.0.127.everyone.inbound-lists.test'] = { A: ['127.0.0.2'] };
      z['2.0.0.127.everyone.inbound-lists.test'] = { A: ['127.0.0.2'] };
      z['2.0.0.127.refusing.inbound-lists.test'] = { A: ['127.255.255.254'] };
    });

    const good = result(await world.doctorOn(zone, lists(['good.inbound-lists.test', { zone: 'picky.inbound-lists.test', codes: ['127.0.0.2'] }])), 'inbound-blocklists');
    assert.equal(good.status, 'pass', good.detail);
    assert.match(good.detail, /^good\.inbound-lists\.test answers its test address 127\.0\.0\.2 \(127\.0\.0\.2\) and not 127\.0\.0\.1$/m);

    const everyone = await world.doctorOn(zone, lists(['good.inbound-lists.test', 'everyone.inbound-lists.test']));
    const broken = result(everyone, 'inbound-blocklists');
    assert.equal(broken.status, 'fail');
    assert.match(broken.detail, /everyone\.inbound-lists\.test lists 127\.0\.0\.1 \(127\.0\.0\.2\), which no list may: it would refuse every client/);
    assert.match(broken.fix ?? '', /remove the list/);
    assert.equal(everyone.ok, false);

    const unusable = await world.doctorOn(zone, lists(['refusing.inbound-lists.test', 'typo.inbound-lists.test', { zone: 'picky.inbound-lists.test', codes: ['127.0.0.9'] }]));
    const warned = result(unusable, 'inbound-blocklists');
    assert.equal(warned.status, 'warn');
    assert.match(warned.detail, /refusing\.inbound-lists\.test: cannot tell, the list answered 127\.255\.255\.254: the list refuses queries from public or shared resolvers/);
    assert.match(warned.detail, /typo\.inbound-lists\.test does not list its test address 127\.0\.0\.2/);
    assert.match(warned.detail, /picky\.inbound-lists\.test answers 127\.0\.0\.2 for its test address 127\.0\.0\.2, none of the codes configured for it/);
    assert.match(warned.fix ?? '', /resolver of your own/);
    assert.equal(unusable.ok, true);
  });

  test('an MTA-STS policy whose mx lines miss the MX fails; a missing _mta-sts record fails', async () => {
    world.policy.text = renderMtaStsPolicy({ mode: 'enforce', maxAgeSeconds: 86400, mxHosts: ['old-mx.doctor.test'] }).text;
    try {
      const report = await runDoctor(world.options());
      const sts = result(report, 'mta-sts');
      assert.equal(sts.status, 'fail');
      assert.match(sts.detail, /the policy's mx: lines \(old-mx\.doctor\.test\) do not cover mail\.doctor\.test/);
      assert.match(sts.fix ?? '', /mx: mail\.doctor\.test/);
      assert.ok((sts.fix ?? '').includes(`"v=STSv1; id=${POLICY.id}"`), sts.fix);
    } finally {
      world.policy.text = POLICY.text;
    }
    const missing = await world.doctorOn(world.zoneWith((zone) => delete zone[`_mta-sts.${DOMAIN}`]));
    assert.match(result(missing, 'mta-sts').detail, /no MTA-STS record at _mta-sts\.doctor\.test/);
  });

  test('a missing TLS-RPT record fails', async () => {
    const report = await world.doctorOn(world.zoneWith((zone) => delete zone[`_smtp._tls.${DOMAIN}`]));
    const rpt = result(report, 'tls-rpt');
    assert.equal(rpt.status, 'fail');
    assert.match(rpt.fix ?? '', /_smtp\._tls\.doctor\.test\.\t3600\tIN\tTXT\t"v=TLSRPTv1; rua=mailto:postmaster@doctor\.test"/);
  });

  test('an MX that points elsewhere fails', async () => {
    const report = await world.doctorOn(world.zoneWith((zone) => (zone[DOMAIN]!.MX = [{ exchange: 'mx.other-provider.test', priority: 10 }])));
    assert.match(result(report, 'mx').detail, /MX of doctor\.test is 10 mx\.other-provider\.test; mail\.doctor\.test is not among them/);
    // the policy still names mail.doctor.test only, so it does not cover the MX either
    assert.equal(result(report, 'mta-sts').status, 'fail');
  });

});
