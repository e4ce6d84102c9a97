/**
 * The test customer of the server test, rendered with the functions the Pulumi
 * program uses (infra/components/customer.ts): the user-data from renderUserData
 * with the relay config renderRelayConfig makes without overrides, the deployed
 * config from renderRelayConfig with the stack's `relay` overrides, and the DNS
 * records from renderDnsRecords.
 *
 * Domains: acme.test is the customer's (its relay is mail.acme.test, in the VM);
 * dest.test is a remote domain whose MX is the Postfix on the host, its records
 * rendered by the same function as if it were another customer. The relay's
 * address in acme.test's records (SPF) is the one the host sees the guest's
 * connections come from: the namespace side of the veth.
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderDnsRecords, type DnsRecord } from '../../infra/render/dns-records';
import { dkimKeyFileName, renderRelayConfig } from '../../infra/render/relay-config';
import { renderUserData } from '../../infra/render/user-data';
import { hashPassword } from '../../server/stages/password';
import { HOST_ADDRESS, NS_ADDRESS } from './lab-net';

export const CUSTOMER_DOMAIN = 'acme.test';
export const RELAY_HOSTNAME = 'mail.acme.test';
export const REMOTE_DOMAIN = 'dest.test';
export const REMOTE_MX = 'mx.dest.test';
export const ADMIN_USER = 'deployer';
export const DKIM_SELECTOR = 'ownrelay1';
export const SMTP_USER = 'app';
export const SMTP_PASSWORD = 'correct horse battery staple';
export const SENDER = `app@${CUSTOMER_DOMAIN}`;

export interface TestCustomer {
  adminKeyFile: string;
  hostKey: { privateKeyOpenssh: string; publicKeyOpenssh: string };
  userData: string;
  /** the config the deploy ships; `overrides` are the stack's `ownrelay:relay` */
  deployConfig(overrides?: Record<string, unknown>): string;
  /** the DKIM private key the deploy ships, as the Pulumi deploy component names it */
  dkimKeys: { fileName: string; privateKeyPem: string }[];
  dnsRecords: DnsRecord[];
}

function sshKeyPair(file: string): { privateKeyOpenssh: string; publicKeyOpenssh: string } {
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', '', '-f', file]);
  return { privateKeyOpenssh: readFileSync(file, 'utf8'), publicKeyOpenssh: readFileSync(`${file}.pub`, 'utf8').trim() };
}

export async function makeTestCustomer(dir: string): Promise<TestCustomer> {
  const adminKeyFile = join(dir, 'admin_ed25519');
  const adminKey = sshKeyPair(adminKeyFile);
  const hostKey = sshKeyPair(join(dir, 'host_ed25519'));
  const dkim = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const passwordHash = await hashPassword(SMTP_PASSWORD);

  const userData = renderUserData({
    hostname: RELAY_HOSTNAME,
    adminUsers: [{ name: ADMIN_USER, sshKeys: [adminKey.publicKeyOpenssh] }],
    // qemu's user network keeps the real source of a forwarded connection: the host's veth address
    adminCidrs: [`${HOST_ADDRESS}/32`],
    http01: false,
    // the first-boot config names no DKIM key: the key arrives with the first deploy
    relayConfigYaml: renderRelayConfig({ hostname: RELAY_HOSTNAME, domains: [CUSTOMER_DOMAIN], relay: {} }).yaml,
    spoolDevice: '/dev/vdb',
    sshHostKey: hostKey,
  });

  const baseOverrides: Record<string, unknown> = {
    users: [{ name: SMTP_USER, passwordHash, senders: [`@${CUSTOMER_DOMAIN}`] }],
    // the load generator (smtp-source) cannot AUTH: the host's forwarded connections may relay
    relay: { networks: [`${HOST_ADDRESS}/32`] },
    delivery: { allowedDestinations: [`${HOST_ADDRESS}/32`], retry: { minBackoffMs: 2000, maxBackoffMs: 4000 }, connectTimeoutMs: 5000 },
    dns: { servers: [HOST_ADDRESS] },
  };
  const deployConfig = (overrides: Record<string, unknown> = {}): string =>
    renderRelayConfig({ hostname: RELAY_HOSTNAME, domains: [CUSTOMER_DOMAIN], dkimSelector: DKIM_SELECTOR, relay: { ...baseOverrides, ...overrides } }).yaml;

  const publicKeyPem = dkim.publicKey.export({ type: 'spki', format: 'pem' }).toString();
  const common = { dkim: { selector: DKIM_SELECTOR, publicKeyPem }, dmarc: { policy: 'reject' as const }, mtaSts: { mode: 'testing' as const, maxAgeSeconds: 86400 } };
  const dnsRecords = [
    ...renderDnsRecords({ domains: [CUSTOMER_DOMAIN], hostname: RELAY_HOSTNAME, nodes: [{ hostname: RELAY_HOSTNAME, ipv4: NS_ADDRESS }], ...common }),
    ...renderDnsRecords({ domains: [REMOTE_DOMAIN], hostname: REMOTE_MX, nodes: [{ hostname: REMOTE_MX, ipv4: HOST_ADDRESS }], ...common }),
  ];
  const dkimKeys = [{ fileName: dkimKeyFileName(CUSTOMER_DOMAIN, DKIM_SELECTOR), privateKeyPem: dkim.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() }];
  return { adminKeyFile, hostKey, userData, deployConfig, dkimKeys, dnsRecords };
}
