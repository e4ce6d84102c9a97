/**
 * One customer's dedicated mail server, composed from the per-concern components:
 * network, `nodes` hosts in different zones, an address with PTR per host, the DKIM
 * key, and the DNS identity (Route 53 or a zone snippet).
 *
 * Contract: every resource's existence and name follow from the stack settings
 * alone; outputs (IPs, the DKIM key) only fill in values. The Route 53 record sets
 * are computed up front by rendering the records with placeholder addresses and
 * key (names and types never depend on them), then created with their real values.
 */
import { generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as aws from '@pulumi/aws';
import * as pulumi from '@pulumi/pulumi';
import * as tls from '@pulumi/tls';
import { nodeHostnames, renderDnsRecords, renderMtaStsPolicy, type DnsIdentityInput, type DnsRecord, type MailNode } from '../render/dns-records';
import { dkimKeyFileName, renderRelayConfig } from '../render/relay-config';
import { renderUserData } from '../render/user-data';
import { dnsIdentity, relayConfigInput, servesMtaStsPolicy, type StackSettings } from '../stack-config';
import { RelayAddress } from './address';
import { RelayDeploy } from './deploy';
import { RelayDns, type RecordSetKey } from './dns';
import { RelayHost, SpoolSnapshots } from './host';
import { RelayNetwork } from './network';

export interface CustomerMailServerArgs {
  /** The validated stack settings (`readStackSettings()`); they decide which resources exist. */
  settings: StackSettings;
  /** The admin login created on every host; default `admin` (Debian's cloud user). */
  adminUser?: string;
}

/** The project root: where Pulumi.yaml and dist/ are. */
const PROJECT_ROOT = join(__dirname, '..', '..');

export class CustomerMailServer extends pulumi.ComponentResource {
  readonly hostnames: string[];
  readonly publicIps: pulumi.Output<string[]>;
  readonly ipv6Addresses: pulumi.Output<(string | undefined)[]>;
  readonly records: pulumi.Output<DnsRecord[]>;
  readonly zoneSnippet: pulumi.Output<string>;
  readonly sshCommands: pulumi.Output<string[]>;
  readonly manualSteps: pulumi.Output<string[]>;
  /** The text served at https://mta-sts.<domain>/.well-known/mta-sts.txt; undefined when MTA-STS is not published. */
  readonly mtaStsPolicy: string | undefined;
  /** The DKIM signing key for the relay (a secret). */
  readonly dkimPrivateKeyPem: pulumi.Output<string>;
  readonly instanceIds: pulumi.Output<string>[];
  /** One per node when `deployPrivateKey` is set; otherwise the relay is deployed by hand. */
  readonly deploys: RelayDeploy[] = [];

  constructor(name: string, args: CustomerMailServerArgs, opts?: pulumi.ComponentResourceOptions) {
    super('ownrelay:infra:CustomerMailServer', name, {}, opts);
    const s = args.settings;
    const adminUser = args.adminUser ?? 'admin';
    const tags = { 'ownrelay:customer': name };
    const provider = new aws.Provider(`${name}-aws`, { region: s.region as aws.Region, defaultTags: { tags } }, { parent: this });
    const child = { parent: this, provider };

    this.hostnames = nodeHostnames(s.hostname, s.nodes);
    const zones = aws.getAvailabilityZonesOutput({ state: 'available' }, child).names;
    const network = new RelayNetwork(`${name}-net`, {
      // node i in zone i (round robin when nodes outnumber zones)
      availabilityZones: this.hostnames.map((_, i) => zones.apply((names) => {
        const zone = names[i % names.length];
        if (zone === undefined) throw new Error(`no availability zone is available in ${s.region}`);
        return zone;
      })),
      adminCidrs: s.adminCidrs,
      http01: s.http01,
      mtaStsPolicy: s.mtaStsPublished,
      useDefaultVpc: s.useDefaultVpc,
    }, child);

    // one key per selector: a rotation adds a new selector and keeps the old one published (dkimRetiredSelectors)
    const dkimKeyNames = dkimKeyResourceNames(name, s.dkimSelector, s.dkimRetiredSelectors);
    const dkimKey = ({ resourceName, legacyAlias }: DkimKeyResourceName) =>
      new tls.PrivateKey(resourceName, { algorithm: 'RSA', rsaBits: 2048 }, { parent: this, ...(legacyAlias ? { aliases: [{ name: legacyAlias }] } : {}) });
    const dkim = dkimKey(dkimKeyNames.current);
    const retiredDkim = dkimKeyNames.retired.map(dkimKey);
    this.dkimPrivateKeyPem = pulumi.secret(dkim.privateKeyPem);

    const zoneId = s.dns.mode === 'route53'
      ? (s.dns.zoneId ?? aws.route53.getZoneOutput({ name: s.dns.zoneName, privateZone: false }, child).zoneId)
      : undefined;

    const snapshotTag = `${pulumi.getProject()}/${pulumi.getStack()}`;
    new SpoolSnapshots(`${name}-spool`, { spoolSnapshotTag: snapshotTag }, child);

    // ACME DNS-01 (a `relay.tls.acme` override) writes _acme-challenge records into the zone
    const usesDns01 = renderRelayConfig(relayConfigInput(s, s.hostname, 'deployed')).config.tls.acme?.challenge === 'dns-01';
    if (usesDns01 && zoneId === undefined) {
      throw new Error('ownrelay:relay: tls.acme.challenge dns-01 needs ownrelay:dns mode route53 (the relay publishes its challenges there); use http01 with manual DNS');
    }
    const hosts: RelayHost[] = [];
    const addresses: RelayAddress[] = [];
    this.hostnames.forEach((hostname, i) => {
      // no secrets in user-data (it is readable through IMDS): the first-boot config, with this node's own HELO name,
      // no overrides and no DKIM keys (the relay would refuse to start on a missing key file); the deploy ships the real one
      const relayConfigYaml = renderRelayConfig(relayConfigInput(s, hostname, 'first-boot')).yaml;
      // generated here so that the deploy can pin it before the first connection
      const hostKey = new tls.PrivateKey(`${name}-node${i}-ssh-host-key`, { algorithm: 'ED25519' }, { parent: this });
      const host = new RelayHost(`${name}-node${i}`, {
        hostname,
        ami: s.ami,
        instanceType: s.instanceType,
        subnetId: network.subnetIds[i] as pulumi.Output<string>,
        availabilityZone: network.availabilityZones[i] as pulumi.Output<string>,
        securityGroupIds: [network.securityGroupId],
        ipv6: network.hasIpv6,
        userData: (spoolDevice) => pulumi.all([hostKey.privateKeyOpenssh, hostKey.publicKeyOpenssh]).apply(([privateKeyOpenssh, publicKeyOpenssh]) => renderUserData({
          hostname,
          adminUsers: [{ name: adminUser, sshKeys: s.adminSshKeys }],
          adminCidrs: s.adminCidrs,
          http01: s.http01,
          mtaStsPolicy: servesMtaStsPolicy(s, hostname),
          relayConfigYaml,
          spoolDevice,
          sshHostKey: { privateKeyOpenssh, publicKeyOpenssh },
        })),
        spoolVolumeGiB: s.spoolVolumeGiB,
        spoolSnapshotTag: snapshotTag,
        region: s.region,
        ...(usesDns01 && zoneId !== undefined ? { acmeDns01ZoneId: zoneId } : {}),
      }, child);
      const address = new RelayAddress(`${name}-node${i}`, {
        instanceId: host.instanceId,
        hostname,
        ...(zoneId === undefined ? {} : { zoneId }),
        ...(network.hasIpv6 ? { ipv6Address: host.ipv6Address } : {}),
      }, child);
      hosts.push(host);
      addresses.push(address);
      if (s.deployPrivateKey !== undefined) {
        // the real config (stack overrides included, credentials too) goes only this way, never into user-data
        const bundlePath = resolve(PROJECT_ROOT, s.bundlePath);
        if (!existsSync(bundlePath)) throw new Error(`ownrelay:bundlePath: ${bundlePath} does not exist; build it with \`npm run bundle\` before \`pulumi up\``);
        // with the node's public addresses, for `ownrelay doctor` on the server (an Elastic IP is on no interface)
        const nodeConfig = pulumi
          .all([address.publicIp, network.hasIpv6 ? host.ipv6Address : pulumi.output(undefined)])
          .apply(([ipv4, ipv6]) => renderRelayConfig(relayConfigInput(s, hostname, 'deployed', [ipv4, ...(ipv6 ? [ipv6] : [])])).yaml);
        this.deploys.push(new RelayDeploy(`${name}-node${i}`, {
          host: address.publicIp,
          user: adminUser,
          privateKey: pulumi.secret(s.deployPrivateKey),
          hostPublicKey: hostKey.publicKeyOpenssh.apply((key) => key.trim()),
          bundlePath,
          configYaml: pulumi.secret(nodeConfig),
          // the key whose public half the DKIM records publish, once per domain (the config names one file per domain)
          dkimKeys: s.domains.map((domain) => ({ fileName: dkimKeyFileName(domain, s.dkimSelector), privateKeyPem: this.dkimPrivateKeyPem })),
        }, { parent: this, dependsOn: [host, address] }));
      }
    });
    this.instanceIds = hosts.map((h) => h.instanceId);
    this.publicIps = pulumi.all(addresses.map((a) => a.publicIp));
    this.ipv6Addresses = pulumi.all(hosts.map((h) => (network.hasIpv6 ? h.ipv6Address : pulumi.output(undefined))));

    this.records = pulumi.all([this.publicIps, this.ipv6Addresses, dkim.publicKeyPem, pulumi.all(retiredDkim.map((key) => key.publicKeyPem))]).apply(([ipv4s, ipv6s, publicKeyPem, retiredPublicKeyPems]) =>
      renderDnsRecords(dnsIdentity(s, this.hostnames.map((hostname, i) => mailNode(hostname, ipv4s[i] ?? '', ipv6s[i])), publicKeyPem, retiredPublicKeyPems)));
    this.mtaStsPolicy = s.mtaStsPublished ? renderMtaStsPolicy({ ...s.mtaSts, mxHosts: this.hostnames }).text : undefined;

    // the nodes' own A/AAAA records belong to RelayAddress (the PTR waits for them)
    const nodeKeys = new Set(this.hostnames.flatMap((h) => [`${h} A`, `${h} AAAA`]));
    const recordSets = zoneId === undefined ? [] : staticRecordSets(dnsIdentity(s, this.hostnames.map((hostname, i) => placeholderNode(hostname, i, network.hasIpv6)), placeholderPublicKey()))
      .filter((key) => !nodeKeys.has(`${key.name} ${key.type}`));
    const dns = new RelayDns(`${name}-dns`, { records: this.records, ...(zoneId === undefined ? {} : { route53: { zoneId, recordSets } }) }, child);
    this.zoneSnippet = dns.zoneSnippet;

    this.sshCommands = this.publicIps.apply((ips) => ips.map((ip, i) => `ssh ${adminUser}@${ip}  # ${this.hostnames[i] ?? ''}`));
    const ptrCommands = pulumi.all(addresses.map((a) => a.ptrCommand(s.region)));
    const deployByHand = s.deployPrivateKey === undefined;
    this.manualSteps = pulumi.all([this.publicIps, ptrCommands]).apply(([ips, commands]) => manualSteps({
      deployByHand,
      manualDns: zoneId === undefined,
      nodes: this.hostnames.map((hostname, i) => ({ hostname, ip: ips[i] ?? '', ptrCommand: commands[i] ?? '' })),
      domains: s.domains,
      region: s.region,
    }));

    this.registerOutputs({
      hostnames: this.hostnames,
      publicIps: this.publicIps,
      records: this.records,
      zoneSnippet: this.zoneSnippet,
      sshCommands: this.sshCommands,
      manualSteps: this.manualSteps,
    });
  }
}

function mailNode(hostname: string, ipv4: string, ipv6: string | undefined): MailNode {
  return ipv6 === undefined ? { hostname, ipv4 } : { hostname, ipv4, ipv6 };
}

function placeholderNode(hostname: string, i: number, ipv6: boolean): MailNode {
  return mailNode(hostname, `192.0.2.${i + 1}`, ipv6 ? `2001:db8::${i + 1}` : undefined);
}

let placeholderKey: string | undefined;
/** Any RSA public key: only the names and types of the records rendered with it are used. */
function placeholderPublicKey(): string {
  placeholderKey ??= generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
  return placeholderKey;
}

function staticRecordSets(input: DnsIdentityInput): RecordSetKey[] {
  return renderDnsRecords(input).map((r) => ({ name: r.name, type: r.type }));
}

/** What `pulumi up` cannot do, in order, with the addresses and names filled in. */
export function manualSteps(input: { manualDns: boolean; deployByHand?: boolean; nodes: { hostname: string; ip: string; ptrCommand: string }[]; domains: string[]; region: string }): string[] {
  const steps: string[] = [];
  if (input.deployByHand) {
    steps.push('Deploy the relay: give Pulumi the private half of one of the admin SSH keys (`pulumi config set --secret ownrelay:deployPrivateKey < ~/.ssh/id_ed25519`), build the bundle (`npm run bundle`) and run `pulumi up` again.');
  }
  if (input.manualDns) {
    steps.push('Publish the records of the `zoneSnippet` output at your DNS host.');
    steps.push(`Once ${input.nodes.map((n) => `${n.hostname} resolves to ${n.ip}`).join(' and ')}, set reverse DNS (AWS checks the A record first):\n${input.nodes.map((n) => `  ${n.ptrCommand}`).join('\n')}`);
  }
  const ptrState = input.manualDns ? 'will be set by the step above' : 'is already set';
  steps.push([
    'Ask AWS to lift the outbound port-25 block: open https://console.aws.amazon.com/support/contacts#/rdns-limits',
    `(region ${input.region}) and send:`,
    '',
    `  Use case: a dedicated mail server for ${input.domains.join(', ')}, sending only the mail of its own users`,
    '  (authenticated submission, no open relay, no bulk or marketing mail). Bounces and complaints are',
    `  handled by postmaster@ and abuse@ of each domain; SPF, DKIM and DMARC are published.`,
    `  Elastic IPs and reverse DNS (the PTR ${ptrState}):`,
    ...input.nodes.map((n) => `    ${n.ip}  ->  ${n.hostname}`),
  ].join('\n'));
  return steps;
}

export interface DkimKeyResourceName {
  resourceName: string;
  /** the name the key had before keys were named by selector, so that upgrading replaces no key */
  legacyAlias?: string;
}

/**
 * The names of the DKIM key resources: `<name>-dkim-<selector>`. Stacks made before
 * keys were named by selector have one key, `<name>-dkim`, for the selector then in
 * use; an alias hands it on without a new key: to the current selector's key while
 * nothing is retired, and during a rotation to the first retired selector (the one
 * in use before). An alias whose old name is not in the state changes nothing.
 */
export function dkimKeyResourceNames(name: string, selector: string, retiredSelectors: string[]): { current: DkimKeyResourceName; retired: DkimKeyResourceName[] } {
  const legacyAlias = `${name}-dkim`;
  return {
    current: { resourceName: `${name}-dkim-${selector}`, ...(retiredSelectors.length === 0 ? { legacyAlias } : {}) },
    retired: retiredSelectors.map((retired, i) => ({ resourceName: `${name}-dkim-${retired}`, ...(i === 0 ? { legacyAlias } : {}) })),
  };
}
