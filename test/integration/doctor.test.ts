/**
 * `ownrelay doctor` against real parts on loopback: a DNS server (dns2) serving
 * the zone the infra program renders for the test domain, the relay itself
 * (in-process, with a certificate from a test CA) for the certificate and
 * open-relay checks, an HTTPS server for the MTA-STS policy, and a TCP listener
 * standing in for a mail server outside (the port-25 probe). A correct zone
 * passes every check; each broken zone fails its check with the right message.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import selfsigned from 'selfsigned';
import { stringify } from 'yaml';
import { renderDnsRecords, renderMtaStsPolicy } from '../../infra/render/dns-records';
import type { RelayConfig } from '../../server/config/schema';
import { CHECKS, runDoctor, type DoctorOptions, type DoctorReport } from '../../server/doctor/runner';
import { startDestination, type DestinationServer } from '../helpers/destination-server';
import { startDnsServer, type DnsServerHandle, type Zone } from '../helpers/dns-server';
import { PROJECT_ROOT } from '../helpers/relay-process';
import { startTestRelay, type TestRelay } from '../helpers/test-relay';

const DOMAIN = 'doctor.test';
const HOST = 'mail.doctor.test';
const IP = '127.0.0.7';
const SELECTOR = 's2026';
const PTR_NAME = '7.0.0.127.in-addr.arpa';
const IPV6 = '::1';
/** ::1 reversed, nibble by nibble */
const NIBBLES_V6 = `1.${'0.'.repeat(31)}`.slice(0, -1);
const PTR_NAME_V6 = `${NIBBLES_V6}.ip6.arpa`;
const MX_HOSTS = [HOST];
const POLICY = renderMtaStsPolicy({ mode: 'enforce', maxAgeSeconds: 86400, mxHosts: MX_HOSTS });

let dir: string;
let ca: { key: string; cert: string };
let dns: DnsServerHandle;
let relay: TestRelay;
let policyServer: https.Server;
let policyText = POLICY.text;
let probe: net.Server;
let probePort: number;
let dkimPrivateKeyFile: string;
let dkimPublicKeyPem: string;

async function issue(name: string, validDays: number): Promise<{ key: string; cert: string }> {
  const notBefore = new Date(Date.now() - 3600_000);
  const pems = await selfsigned.generate([{ name: 'commonName', value: name }], {
    keySize: 2048,
    algorithm: 'sha256',
    notBeforeDate: notBefore,
    notAfterDate: new Date(Date.now() + validDays * 24 * 3600_000),
    ca,
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: [{ type: 2, value: name }] },
    ],
  });
  return { key: pems.private, cert: pems.cert };
}

/** the zone `pulumi up` publishes for the domain (infra's renderer), plus the PTR the cloud sets */
function goodZone(ipv6?: string): Zone {
  const records = renderDnsRecords({
    domains: [DOMAIN],
    hostname: HOST,
    nodes: [{ hostname: HOST, ipv4: IP, ...(ipv6 ? { ipv6 } : {}) }],
    dkim: { selector: SELECTOR, publicKeyPem: dkimPublicKeyPem },
    dmarc: { policy: 'quarantine', rua: `mailto:postmaster@${DOMAIN}` },
    mtaSts: { mode: 'enforce', maxAgeSeconds: 86400 },
  });
  const zone: Zone = {};
  for (const record of records) {
    const entry = (zone[record.name] ??= {});
    if (record.type === 'MX') {
      entry.MX = record.values.map((value) => {
        const [priority, exchange] = value.split(' ');
        return { priority: Number(priority), exchange: exchange! };
      });
    } else {
      entry[record.type] = record.values;
    }
  }
  zone[PTR_NAME] = { PTR: [HOST] };
  if (ipv6) zone[PTR_NAME_V6] = { PTR: [HOST] };
  return zone;
}

function zoneWith(change: (zone: Zone) => void): Zone {
  const zone = goodZone();
  change(zone);
  return zone;
}

/** the relay under test: MX listeners on `addresses`, the test CA's certificate, blocklists and probe on loopback */
function relayOverrides(addresses: string[] = [IP]): Record<string, unknown> {
  return {
    hostname: HOST,
    listeners: addresses.map((address) => ({ role: 'mx', address, port: 0, earlyTalkerCheck: false })),
    tls: { certFile: join(dir, 'relay-cert.pem'), keyFile: join(dir, 'relay-key.pem') },
    domains: [{ name: DOMAIN, delivery: 'maildir', mailboxes: ['postmaster'] }],
    doctor: { ipBlocklists: ['bl.doctor-lists.test', 'refusing.doctor-lists.test'], domainBlocklists: ['dbl.doctor-lists.test'], outboundProbe: `127.0.0.1:${probePort}` },
  };
}

function configWithDkim(config: RelayConfig, keyFile = dkimPrivateKeyFile): RelayConfig {
  return { ...config, dkim: { keys: [{ domain: DOMAIN, selector: SELECTOR, privateKeyFile: keyFile }] } } as RelayConfig;
}

function options(overrides: Partial<DoctorOptions> = {}): DoctorOptions {
  return {
    domain: DOMAIN,
    config: configWithDkim(relay.relay.config),
    ips: [IP],
    dnsServers: dns.servers,
    smtpPort: relay.ports[0]!,
    connectTo: [`mta-sts.${DOMAIN}:443:${IP}:${(policyServer.address() as net.AddressInfo).port}`],
    trustedCa: [ca.cert],
    timeoutMs: 3000,
    ...overrides,
  };
}

function result(report: DoctorReport, id: string) {
  const found = report.results.find((r) => r.id === id);
  assert.ok(found, `no result for ${id}`);
  return found;
}

/** runs the doctor on `zone` and puts the good zone back */
async function doctorOn(zone: Zone, overrides: Partial<DoctorOptions> = {}): Promise<DoctorReport> {
  dns.setZone(zone);
  try {
    return await runDoctor(options(overrides));
  } finally {
    dns.setZone(goodZone());
  }
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ownrelay-doctor-'));
  const caPems = await selfsigned.generate([{ name: 'commonName', value: 'ownrelay doctor test CA' }], {
    keySize: 2048,
    algorithm: 'sha256',
    extensions: [
      { name: 'basicConstraints', cA: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true },
    ],
  });
  ca = { key: caPems.private, cert: caPems.cert };
  const relayCert = await issue(HOST, 90);
  const stsCert = await issue(`mta-sts.${DOMAIN}`, 90);
  writeFileSync(join(dir, 'relay-cert.pem'), relayCert.cert);
  writeFileSync(join(dir, 'relay-key.pem'), relayCert.key);
  writeFileSync(join(dir, 'ca.pem'), ca.cert);

  const dkim = generateKeyPairSync('rsa', { modulusLength: 2048 });
  dkimPrivateKeyFile = join(dir, 'dkim.pem');
  writeFileSync(dkimPrivateKeyFile, dkim.privateKey.export({ type: 'pkcs8', format: 'pem' }));
  dkimPublicKeyPem = dkim.publicKey.export({ type: 'spki', format: 'pem' }).toString();

  dns = await startDnsServer(goodZone());
  policyServer = https.createServer({ key: stsCert.key, cert: stsCert.cert }, (request, response) => {
    // RFC 8461 3.3: the policy host's name, as a virtual host would see it
    if (request.url !== '/.well-known/mta-sts.txt' || request.headers.host !== `mta-sts.${DOMAIN}`) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { 'content-type': 'text/plain' }).end(policyText);
  });
  await new Promise<void>((resolve) => policyServer.listen(0, IP, resolve));
  probe = net.createServer((socket) => {
    socket.on('error', () => undefined); // the doctor hangs up at once
    socket.end('220 probe.example ESMTP\r\n');
  });
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  probePort = (probe.address() as net.AddressInfo).port;

  relay = await startTestRelay(() => relayOverrides());
});

after(async () => {
  await relay?.stop();
  await dns?.close();
  policyServer?.close();
  probe?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('ownrelay doctor', () => {
  test('a correct zone, a trusted certificate, port 25 open and no listings pass every check', async () => {
    const report = await runDoctor(options());
    for (const r of report.results) assert.equal(r.status, 'pass', `${r.id}: ${r.detail}\n${r.fix ?? ''}`);
    assert.deepEqual(report.results.map((r) => r.id), CHECKS.map((c) => c.id));
    assert.equal(report.ok, true);
    assert.match(result(report, 'ptr').detail, /127\.0\.0\.7 -> mail\.doctor\.test -> 127\.0\.0\.7/);
    assert.match(result(report, 'spf').detail, /DNS lookups: 0 of 10/);
    assert.match(result(report, 'certificate').detail, /mail\.doctor\.test.*valid for 8\d more days/);
    assert.match(result(report, 'open-relay').detail, /^127\.0\.0\.7:\d+: relaying refused at RCPT TO: 554/m);
    assert.match(result(report, 'open-relay').detail, /^127\.0\.0\.7:\d+ after STARTTLS: relaying refused at RCPT TO: 554/m);
  });

  test('a dual-stack server passes with its IPv6 address in AAAA, ip6.arpa PTR and SPF ip6:, and its nibbles are looked up on blocklists', async () => {
    const dual = await startTestRelay(() => relayOverrides([IP, IPV6]));
    try {
      const dualOptions = options({
        config: configWithDkim(dual.relay.config),
        ips: [IPV6, IP],
        smtpPort: 25,
        connectTo: [...options().connectTo!, `${IP}:25:${IP}:${dual.ports[0]}`, `[${IPV6}]:25:[${IPV6}]:${dual.ports[1]}`],
      });
      dns.setZone(goodZone(IPV6));
      const report = await runDoctor(dualOptions);
      for (const r of report.results) assert.equal(r.status, 'pass', `${r.id}: ${r.detail}\n${r.fix ?? ''}`);
      assert.deepEqual(report.ips, [IP, IPV6]);
      assert.match(result(report, 'address').detail, /mail\.doctor\.test resolves to 127\.0\.0\.7, ::1/);
      assert.match(result(report, 'ptr').detail, /::1 -> mail\.doctor\.test -> ::1/);
      assert.match(result(report, 'spf').detail, /ip6:::1/);
      assert.match(result(report, 'spf').detail, /::1: pass/);
      assert.match(result(report, 'certificate').detail, /::1:25: /);

      dns.setZone({ ...goodZone(IPV6), [`${NIBBLES_V6}.bl.doctor-lists.test`]: { A: ['127.0.0.3'] } });
      const listed = await runDoctor(dualOptions);
      assert.match(result(listed, 'blocklists').detail, /::1 is LISTED on bl\.doctor-lists\.test \(127\.0\.0\.3\)/);
      assert.doesNotMatch(result(listed, 'blocklists').detail, /127\.0\.0\.7 is LISTED/);
    } finally {
      dns.setZone(goodZone());
      await dual.stop();
    }
  });

  test('a PTR that is not the host name fails, with the reverse DNS to set', async () => {
    const report = await doctorOn(zoneWith((zone) => (zone[PTR_NAME] = { PTR: ['ec2-127-0-0-7.compute.example'] })));
    const ptr = result(report, 'ptr');
    assert.equal(ptr.status, 'fail');
    assert.match(ptr.detail, /PTR of 127\.0\.0\.7 is ec2-127-0-0-7\.compute\.example, expected mail\.doctor\.test/);
    assert.match(ptr.fix ?? '', /7\.0\.0\.127\.in-addr\.arpa\.\t3600\tIN\tPTR\tmail\.doctor\.test\./);
    assert.equal(report.ok, false);
    assert.equal(result(report, 'mx').status, 'pass');
  });

  test('a PTR whose host name does not resolve back to the address fails as not forward-confirmed', async () => {
    const report = await doctorOn(zoneWith((zone) => (zone[HOST] = { A: ['127.0.0.99'] })));
    assert.match(result(report, 'ptr').detail, /PTR of 127\.0\.0\.7 is mail\.doctor\.test, but mail\.doctor\.test does not resolve back to 127\.0\.0\.7 \(127\.0\.0\.99\)/);
    const address = result(report, 'address');
    assert.equal(address.status, 'fail');
    assert.match(address.fix ?? '', /mail\.doctor\.test\.\t3600\tIN\tA\t127\.0\.0\.7/);
  });

  test('an SPF record without the server\'s address fails, and the fix adds it to the record', async () => {
    const report = await doctorOn(
      zoneWith((zone) => {
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
    const zone = zoneWith((z) => (z[DOMAIN]!.TXT = ['v=spf1 ip4:127.0.0.7 include:one.spf.doctor.test include:two.spf.doctor.test -all']));
    for (const name of ['one', 'two']) {
      zone[`${name}.spf.doctor.test`] = { TXT: [`v=spf1 a mx exists:%{i}.x.doctor.test include:${name}-a.spf.doctor.test redirect=${name}-b.spf.doctor.test`] };
      zone[`${name}-a.spf.doctor.test`] = { TXT: ['v=spf1 ptr -all'] };
      zone[`${name}-b.spf.doctor.test`] = { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] };
    }
    const report = await doctorOn(zone);
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
      const report = await doctorOn({ ...zoneWith((zone) => (zone[DOMAIN]!.TXT = txt)), ...extra });
      const spf = result(report, 'spf');
      assert.equal(spf.status, 'fail', txt.join(' | '));
      assert.match(spf.detail, message);
    }
  });

  test('a published DKIM key that is not the relay\'s fails, with the record of the right key', async () => {
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
    const name = `${SELECTOR}._domainkey.${DOMAIN}`;
    const report = await doctorOn(zoneWith((zone) => (zone[name] = { TXT: [`v=DKIM1; k=rsa; p=${other}`] })));
    const dkim = result(report, 'dkim');
    assert.equal(dkim.status, 'fail');
    assert.match(dkim.detail, /the key published at s2026\._domainkey\.doctor\.test does not match the relay's private key/);
    const expected = goodZone()[name]!.TXT![0] as string;
    // the fix is the zone-file line of the right record, split into 255-byte strings
    assert.ok((dkim.fix ?? '').replace(/" "/g, '').includes(expected), dkim.fix);
  });

  test('an Ed25519 key next to the RSA key passes when its raw public key is published (RFC 8463), and fails when it is missing', async () => {
    const ed = generateKeyPairSync('ed25519');
    const edFile = join(dir, 'dkim-ed25519.pem');
    writeFileSync(edFile, ed.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    // RFC 8463: p= is the bare 32-byte key, which is the JWK's x
    const raw = Buffer.from(ed.publicKey.export({ format: 'jwk' }).x!, 'base64url').toString('base64');
    const base = configWithDkim(relay.relay.config);
    const keys = [...(base as unknown as { dkim: { keys: object[] } }).dkim.keys, { domain: DOMAIN, selector: 'ed2026', privateKeyFile: edFile }];
    const config = { ...base, dkim: { keys } } as unknown as RelayConfig;
    const published = await doctorOn(zoneWith((zone) => (zone[`ed2026._domainkey.${DOMAIN}`] = { TXT: [`v=DKIM1; k=ed25519; p=${raw}`] })), { config });
    const dkim = result(published, 'dkim');
    assert.equal(dkim.status, 'pass', dkim.detail);
    assert.match(dkim.detail, /s2026\._domainkey\.doctor\.test: rsa key matches\ned2026\._domainkey\.doctor\.test: ed25519 key matches/);

    const missing = await doctorOn(goodZone(), { config });
    assert.equal(result(missing, 'dkim').status, 'fail');
    assert.match(result(missing, 'dkim').detail, /no DKIM key published at ed2026\._domainkey\.doctor\.test/);
    assert.ok((result(missing, 'dkim').fix ?? '').includes(`ed2026._domainkey.doctor.test.\t3600\tIN\tTXT\t"v=DKIM1; k=ed25519; p=${raw}"`), result(missing, 'dkim').fix);
  });

  test('without a dkim section in the config the DKIM check fails with "no DKIM key configured"', async () => {
    const report = await runDoctor(options({ config: relay.relay.config }));
    const dkim = result(report, 'dkim');
    assert.equal(dkim.status, 'fail');
    assert.match(dkim.detail, /^no DKIM key configured for doctor\.test/);
  });

  test('a missing DMARC record fails, with the record to publish', async () => {
    const report = await doctorOn(zoneWith((zone) => delete zone[`_dmarc.${DOMAIN}`]));
    const dmarc = result(report, 'dmarc');
    assert.equal(dmarc.status, 'fail');
    assert.match(dmarc.detail, /no DMARC record at _dmarc\.doctor\.test/);
    assert.match(dmarc.fix ?? '', /_dmarc\.doctor\.test\.\t3600\tIN\tTXT\t"v=DMARC1; p=quarantine; rua=mailto:postmaster@doctor\.test; adkim=r; aspf=r"/);
  });

  test('an invalid DMARC policy fails and p=none warns', async () => {
    const invalid = await doctorOn(zoneWith((zone) => (zone[`_dmarc.${DOMAIN}`] = { TXT: ['v=DMARC1; p=block'] })));
    assert.match(result(invalid, 'dmarc').detail, /invalid: p=block is not none, quarantine or reject/);
    const monitoring = await doctorOn(zoneWith((zone) => (zone[`_dmarc.${DOMAIN}`] = { TXT: ['v=DMARC1; p=none'] })));
    assert.equal(result(monitoring, 'dmarc').status, 'warn');
    assert.equal(monitoring.ok, true);
  });

  test('an address on a DNS blocklist fails; Spamhaus\'s 127.255.255.254 "public resolver" answer is "cannot tell", not a listing', async () => {
    const listed = await doctorOn(
      zoneWith((zone) => {
        zone['7.0.0.127.bl.doctor-lists.test'] = { A: ['127.0.0.2'], TXT: ['Listed: see https://bl.doctor-lists.test/lookup?ip=127.0.0.7'] };
      }),
    );
    const blocklists = result(listed, 'blocklists');
    assert.equal(blocklists.status, 'fail');
    assert.match(blocklists.detail, /127\.0\.0\.7 is LISTED on bl\.doctor-lists\.test \(127\.0\.0\.2\): Listed: see https:\/\/bl\.doctor-lists\.test\/lookup\?ip=127\.0\.0\.7/);

    const refused = await doctorOn(
      zoneWith((zone) => {
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
    const report = await doctorOn(zoneWith((zone) => (zone['doctor.test.dbl.doctor-lists.test'] = { A: ['127.0.1.2'] })));
    assert.match(result(report, 'blocklists').detail, /doctor\.test is LISTED on dbl\.doctor-lists\.test \(127\.0\.1\.2\)/);
  });

  test('an MTA-STS policy whose mx lines miss the MX fails; a missing _mta-sts record fails', async () => {
    policyText = renderMtaStsPolicy({ mode: 'enforce', maxAgeSeconds: 86400, mxHosts: ['old-mx.doctor.test'] }).text;
    try {
      const report = await runDoctor(options());
      const sts = result(report, 'mta-sts');
      assert.equal(sts.status, 'fail');
      assert.match(sts.detail, /the policy's mx: lines \(old-mx\.doctor\.test\) do not cover mail\.doctor\.test/);
      assert.match(sts.fix ?? '', /mx: mail\.doctor\.test/);
      assert.ok((sts.fix ?? '').includes(`"v=STSv1; id=${POLICY.id}"`), sts.fix);
    } finally {
      policyText = POLICY.text;
    }
    const missing = await doctorOn(zoneWith((zone) => delete zone[`_mta-sts.${DOMAIN}`]));
    assert.match(result(missing, 'mta-sts').detail, /no MTA-STS record at _mta-sts\.doctor\.test/);
  });

  test('a missing TLS-RPT record fails', async () => {
    const report = await doctorOn(zoneWith((zone) => delete zone[`_smtp._tls.${DOMAIN}`]));
    const rpt = result(report, 'tls-rpt');
    assert.equal(rpt.status, 'fail');
    assert.match(rpt.fix ?? '', /_smtp\._tls\.doctor\.test\.\t3600\tIN\tTXT\t"v=TLSRPTv1; rua=mailto:postmaster@doctor\.test"/);
  });

  test('an MX that points elsewhere fails', async () => {
    const report = await doctorOn(zoneWith((zone) => (zone[DOMAIN]!.MX = [{ exchange: 'mx.other-provider.test', priority: 10 }])));
    assert.match(result(report, 'mx').detail, /MX of doctor\.test is 10 mx\.other-provider\.test; mail\.doctor\.test is not among them/);
    // the policy still names mail.doctor.test only, so it does not cover the MX either
    assert.equal(result(report, 'mta-sts').status, 'fail');
  });

  test('a certificate from an untrusted CA, and one that expires within the configured days, fail', async () => {
    const untrusted = await runDoctor(options({ trustedCa: [] }));
    assert.match(result(untrusted, 'certificate').detail, /is not trusted: /);

    const soon = await issue(HOST, 5);
    writeFileSync(join(dir, 'soon-cert.pem'), soon.cert);
    writeFileSync(join(dir, 'soon-key.pem'), soon.key);
    const expiring = await startTestRelay(() => ({
      hostname: HOST,
      listeners: [{ role: 'mx', address: IP, port: 0, earlyTalkerCheck: false }],
      tls: { certFile: join(dir, 'soon-cert.pem'), keyFile: join(dir, 'soon-key.pem') },
    }));
    try {
      const report = await runDoctor(options({ smtpPort: expiring.ports[0]! }));
      const certificate = result(report, 'certificate');
      assert.equal(certificate.status, 'fail');
      assert.match(certificate.detail, /the certificate expires in [45] days .*, less than 14: renewal is failing/);
    } finally {
      await expiring.stop();
    }
  });

  test('a server that accepts relaying from a stranger fails as an open relay; one that trusts the tester\'s network cannot tell', async () => {
    const open: DestinationServer = await startDestination();
    try {
      const report = await runDoctor(options({ smtpPort: 25, connectTo: [`${IP}:25:127.0.0.1:${open.port}`] }));
      const check = result(report, 'open-relay');
      assert.equal(check.status, 'fail');
      assert.match(check.detail, /^127\.0\.0\.7:25: OPEN RELAY: accepted mail from <ownrelay-doctor@example\.com> to <ownrelay-doctor@example\.net> without AUTH/m);
      assert.match(check.detail, /^127\.0\.0\.7:25 after STARTTLS: OPEN RELAY/m);
      assert.equal(open.messages.length, 0, 'the test never sends a message');
    } finally {
      await open.close();
    }

    const trusting = await startTestRelay(() => ({ hostname: HOST, listeners: [{ role: 'mx', address: IP, port: 0, earlyTalkerCheck: false }], relay: { networks: ['127.0.0.0/8'] } }));
    try {
      const report = await runDoctor(options({ smtpPort: trusting.ports[0]!, config: trusting.relay.config }));
      const check = result(report, 'open-relay');
      assert.equal(check.status, 'warn', check.detail);
      assert.match(check.detail, /relaying accepted, but this test comes from 127\.0\.0\.\d+, which relay\.networks trusts/);
    } finally {
      await trusting.stop();
    }
  });

  test('a server that does not answer on its SMTP port fails the certificate and open-relay checks with how to open the port', async () => {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, IP, resolve));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const report = await runDoctor(options({ smtpPort: port }));
    for (const id of ['certificate', 'open-relay']) {
      const check = result(report, id);
      assert.equal(check.status, 'fail');
      assert.match(check.detail, new RegExp(`^127\\.0\\.0\\.7:${port}: .*ECONNREFUSED$`));
      assert.match(check.fix ?? '', new RegExp(`make sure the relay listens on port ${port}`));
    }
    assert.doesNotMatch(result(report, 'open-relay').detail, /after STARTTLS/);
  });

  test('outbound port 25 refused fails; with a smarthost configured it only warns', async () => {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const config = configWithDkim(relay.relay.config);
    const blocked = { ...config, doctor: { ...config.doctor, outboundProbe: `127.0.0.1:${port}` } };
    const report = await runDoctor(options({ config: blocked }));
    assert.equal(result(report, 'outbound-25').status, 'fail');
    assert.match(result(report, 'outbound-25').detail, /cannot connect to 127\.0\.0\.1:\d+: connecting to 127\.0\.0\.1:\d+ failed: ECONNREFUSED/);

    const viaSmarthost = { ...blocked, delivery: { ...blocked.delivery, smarthost: { host: 'smtp.provider.test', port: 587, tls: 'required', verifyCertificate: true } } } as RelayConfig;
    const warned = await runDoctor(options({ config: viaSmarthost }));
    assert.equal(result(warned, 'outbound-25').status, 'warn');
    assert.match(result(warned, 'outbound-25').detail, /delivery goes through the smarthost smtp\.provider\.test:587/);
  });

  test('outbound port 25 that times out fails and explains AWS\'s block and the request form', async () => {
    // a listener whose accept queue is full (python3: listen(0), never accept): the
    // kernel drops further SYNs, so a connection times out as it does behind a
    // provider's port-25 block
    const listener = spawn('python3', ['-c', 'import socket,sys\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\nsys.stdin.read()'], { stdio: ['pipe', 'pipe', 'inherit'] });
    const filler: net.Socket[] = [];
    try {
      const port = Number(String(await once(listener.stdout!, 'data')).trim());
      const first = net.connect(port, '127.0.0.1');
      filler.push(first);
      await once(first, 'connect');
      const config = configWithDkim(relay.relay.config);
      const report = await runDoctor(options({ config: { ...config, doctor: { ...config.doctor, outboundProbe: `127.0.0.1:${port}` } }, timeoutMs: 1000 }));
      const outbound = result(report, 'outbound-25');
      assert.equal(outbound.status, 'fail');
      assert.match(outbound.detail, /outbound connections to port 25 time out: connecting to 127\.0\.0\.1:\d+ timed out after 1000 ms/);
      assert.match(outbound.detail, /AWS blocks outbound port 25 on every EC2 instance/);
      assert.match(outbound.fix ?? '', /https:\/\/console\.aws\.amazon\.com\/support\/contacts#\/rdns-limits/);
      assert.match(outbound.fix ?? '', /delivery\.smarthost/);
    } finally {
      for (const socket of filler) socket.destroy();
      listener.kill();
    }
  });

  test('the CLI exits 1 with a JSON report when a check fails, and 0 with a checklist when all pass', async () => {
    const configFile = join(dir, 'doctor-config.yaml');
    writeFileSync(configFile, stringify(relay.relay.config));
    const args = [
      '--import',
      'tsx',
      'server/main.ts',
      'doctor',
      DOMAIN,
      '--config',
      configFile,
      '--ip',
      IP,
      '--dns-server',
      dns.servers[0]!,
      '--smtp-port',
      String(relay.ports[0]),
      '--connect-to',
      `mta-sts.${DOMAIN}:443:${IP}:${(policyServer.address() as net.AddressInfo).port}`,
      '--timeout',
      '3000',
    ];
    const run = (extra: string[]) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        execFile(process.execPath, [...args, ...extra], { cwd: PROJECT_ROOT, env: { ...process.env, NODE_EXTRA_CA_CERTS: join(dir, 'ca.pem') } }, (error, stdout, stderr) => {
          resolve({ code: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout, stderr });
        });
      });

    // the config file has no dkim section, so the DKIM check fails
    const failing = await run(['--json']);
    assert.equal(failing.code, 1, failing.stderr);
    const report = JSON.parse(failing.stdout) as DoctorReport;
    assert.equal(report.ok, false);
    assert.equal(report.domain, DOMAIN);
    assert.deepEqual(report.ips, [IP]);
    const statuses = Object.fromEntries(report.results.map((r) => [r.id, r.status]));
    assert.deepEqual(statuses, Object.fromEntries(CHECKS.map((c) => [c.id, c.id === 'dkim' ? 'fail' : 'pass'])));
    assert.match(result(report, 'dkim').detail, /no DKIM key configured/);

    const passing = await run(['--skip', 'dkim']);
    assert.equal(passing.code, 0, passing.stdout + passing.stderr);
    assert.match(passing.stdout, /^\[PASS\] MX points to this server \(mx\)$/m);
    assert.match(passing.stdout, /^11 checks: 11 passed, 0 warnings, 0 failed; skipped: dkim$/m);

    const badSkip = await run(['--skip', 'nonsense']);
    assert.equal(badSkip.code, 1);
    assert.match(badSkip.stderr, /unknown check nonsense to skip; the checks are mx, address, ptr/);
  });
});
