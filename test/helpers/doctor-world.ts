/**
 * A small world for `ownrelay doctor` tests, all on loopback: a DNS server
 * (dns2) serving the zone the infra program renders for the test domain plus the
 * PTR a cloud would set; the relay in-process with a certificate from a test CA;
 * an HTTPS server for the MTA-STS policy (a virtual host: it answers only to the
 * policy host's name); a TCP listener standing in for a mail server outside (the
 * port-25 probe); and an RSA DKIM key in the relay's config. `options()` points
 * the doctor at all of it; `doctorOn(zone)` runs it on a changed zone and puts
 * the correct zone back.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import selfsigned from 'selfsigned';
import { renderDnsRecords, renderMtaStsPolicy } from '../../infra/render/dns-records';
import type { RelayConfig } from '../../server/config/schema';
import { runDoctor, type DoctorOptions, type DoctorReport } from '../../server/doctor/runner';
import type { CheckResult } from '../../server/doctor/types';
import { startDnsServer, type DnsServerHandle, type Zone } from './dns-server';
import { startTestRelay, type TestRelay } from './test-relay';

export const DOMAIN = 'doctor.test';
export const HOST = 'mail.doctor.test';
export const IP = '127.0.0.7';
export const SELECTOR = 's2026';
export const PTR_NAME = '7.0.0.127.in-addr.arpa';
export const IPV6 = '::1';
/** ::1 reversed, nibble by nibble, as DNSBL and ip6.arpa names want it */
export const NIBBLES_V6 = `1.${'0.'.repeat(31)}`.slice(0, -1);
export const PTR_NAME_V6 = `${NIBBLES_V6}.ip6.arpa`;
/** the zone's MTA-STS policy, served by the policy server unless a test changes `policy.text` */
export const POLICY = renderMtaStsPolicy({ mode: 'enforce', maxAgeSeconds: 86400, mxHosts: [HOST] });
export const BLOCKLISTS = { ipBlocklists: ['bl.doctor-lists.test', 'refusing.doctor-lists.test'], domainBlocklists: ['dbl.doctor-lists.test'] };

export interface DoctorWorld {
  dir: string;
  ca: { key: string; cert: string };
  dns: DnsServerHandle;
  relay: TestRelay;
  /** what the policy server serves */
  policy: { text: string };
  policyPort: number;
  /** the --connect-to that sends https://mta-sts.<domain> to the policy server */
  policyConnectTo: string;
  goodZone(ipv6?: string): Zone;
  zoneWith(change: (zone: Zone) => void): Zone;
  /** relay config overrides: MX listeners on `addresses`, the test CA's certificate, blocklists and probe on loopback */
  relayOverrides(addresses?: string[]): Record<string, unknown>;
  /** `config` with the world's DKIM key in a dkim section */
  configWithDkim(config: RelayConfig): RelayConfig;
  options(overrides?: Partial<DoctorOptions>): DoctorOptions;
  doctorOn(zone: Zone, overrides?: Partial<DoctorOptions>): Promise<DoctorReport>;
  /** a certificate for `name` from the test CA, valid for `validDays` */
  issue(name: string, validDays: number): Promise<{ key: string; cert: string }>;
  stop(): Promise<void>;
}

export function result(report: DoctorReport, id: string): CheckResult {
  const found = report.results.find((r) => r.id === id);
  assert.ok(found, `no result for ${id}`);
  return found;
}

export async function startDoctorWorld(): Promise<DoctorWorld> {
  const dir = mkdtempSync(join(tmpdir(), 'ownrelay-doctor-'));
  const caPems = await selfsigned.generate([{ name: 'commonName', value: 'ownrelay doctor test CA' }], {
    keySize: 2048,
    algorithm: 'sha256',
    extensions: [
      { name: 'basicConstraints', cA: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true },
    ],
  });
  const ca = { key: caPems.private, cert: caPems.cert };
  writeFileSync(join(dir, 'ca.pem'), ca.cert);

  const issue = async (name: string, validDays: number) => {
    const pems = await selfsigned.generate([{ name: 'commonName', value: name }], {
      keySize: 2048,
      algorithm: 'sha256',
      notBeforeDate: new Date(Date.now() - 3600_000),
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
  };
  const relayCert = await issue(HOST, 90);
  const stsCert = await issue(`mta-sts.${DOMAIN}`, 90);
  writeFileSync(join(dir, 'relay-cert.pem'), relayCert.cert);
  writeFileSync(join(dir, 'relay-key.pem'), relayCert.key);

  const dkim = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const dkimPrivateKeyFile = join(dir, 'dkim.pem');
  writeFileSync(dkimPrivateKeyFile, dkim.privateKey.export({ type: 'pkcs8', format: 'pem' }));
  const dkimPublicKeyPem = dkim.publicKey.export({ type: 'spki', format: 'pem' }).toString();

  /** the zone `pulumi up` publishes for the domain (infra's renderer), plus the PTR the cloud sets */
  const goodZone = (ipv6?: string): Zone => {
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
  };

  const dns = await startDnsServer(goodZone());
  const policy = { text: POLICY.text };
  const policyServer = https.createServer({ key: stsCert.key, cert: stsCert.cert }, (request, response) => {
    // RFC 8461 3.3: the policy host's name, as a virtual host would see it
    if (request.url !== '/.well-known/mta-sts.txt' || request.headers.host !== `mta-sts.${DOMAIN}`) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { 'content-type': 'text/plain' }).end(policy.text);
  });
  await new Promise<void>((resolve) => policyServer.listen(0, IP, resolve));
  const policyPort = (policyServer.address() as net.AddressInfo).port;
  const probe = net.createServer((socket) => {
    socket.on('error', () => undefined); // the doctor hangs up at once
    socket.end('220 probe.example ESMTP\r\n');
  });
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const probePort = (probe.address() as net.AddressInfo).port;

  const relayOverrides = (addresses: string[] = [IP]): Record<string, unknown> => ({
    hostname: HOST,
    listeners: addresses.map((address) => ({ role: 'mx', address, port: 0, earlyTalkerCheck: false })),
    tls: { certFile: join(dir, 'relay-cert.pem'), keyFile: join(dir, 'relay-key.pem') },
    // role addresses forwarded (role-addresses passes); no mail is ever sent in these tests
    domains: [{ name: DOMAIN, delivery: 'maildir', mailboxes: ['postmaster'], aliases: { postmaster: 'ops@ops.doctor-world.test', abuse: 'ops@ops.doctor-world.test' } }],
    doctor: { ...BLOCKLISTS, outboundProbe: `127.0.0.1:${probePort}` },
  });
  const relay = await startTestRelay(() => relayOverrides());

  const configWithDkim = (config: RelayConfig): RelayConfig =>
    ({ ...config, dkim: { keys: [{ domain: DOMAIN, selector: SELECTOR, privateKeyFile: dkimPrivateKeyFile }] } }) as RelayConfig;
  const policyConnectTo = `mta-sts.${DOMAIN}:443:${IP}:${policyPort}`;
  const options = (overrides: Partial<DoctorOptions> = {}): DoctorOptions => ({
    domain: DOMAIN,
    config: configWithDkim(relay.relay.config),
    ips: [IP],
    dnsServers: dns.servers,
    smtpPort: relay.ports[0]!,
    connectTo: [policyConnectTo],
    trustedCa: [ca.cert],
    timeoutMs: 3000,
    ...overrides,
  });

  return {
    dir,
    ca,
    dns,
    relay,
    policy,
    policyPort,
    policyConnectTo,
    goodZone,
    zoneWith(change) {
      const zone = goodZone();
      change(zone);
      return zone;
    },
    relayOverrides,
    configWithDkim,
    options,
    async doctorOn(zone, overrides = {}) {
      dns.setZone(zone);
      try {
        return await runDoctor(options(overrides));
      } finally {
        dns.setZone(goodZone());
      }
    },
    issue,
    async stop() {
      await relay.stop();
      await dns.close();
      policyServer.close();
      probe.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
