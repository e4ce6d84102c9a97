/**
 * Policies of the Pulumi program, checked with Pulumi's mocks (AWS cannot be
 * reached): each scenario sets a stack config, runs `createProgram()` against a
 * fresh mock monitor, and records every resource the program registers (type,
 * name, inputs, and the options the engine would see: retainOnDelete and
 * dependencies). The assertions read what would be sent to AWS.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as pulumi from '@pulumi/pulumi';
import { route53TxtStrings } from '../../infra/components/dns';
// no resource is created at import: createProgram() runs after each scenario's setMocks
import { createProgram } from '../../infra/program';
import type { DnsRecord } from '../../infra/render/dns-records';
import { renderNftables } from '../../infra/render/firewall';
import { parseConfig } from '../../server/config/load';
import { renderMtaStsPolicy } from '../../server/tls/mta-sts-policy';
import { parse } from 'yaml';

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMr7ZpHw6VvM9q alice@laptop';
const ZONE_ID = 'Z0TESTZONE123';
const DKIM = generateKeyPairSync('rsa', { modulusLength: 2048 });
const DKIM_PUBLIC_PEM = DKIM.publicKey.export({ type: 'spki', format: 'pem' }).toString();
const DKIM_PUBLIC_B64 = DKIM.publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
const DKIM_PRIVATE_PEM = DKIM.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

const otherDkimKeys = new Map<string, { publicKeyPem: string; privateKeyPem: string }>();
function otherDkimKey(name: string): { publicKeyPem: string; privateKeyPem: string } {
  let key = otherDkimKeys.get(name);
  if (!key) {
    const pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
    key = { publicKeyPem: pair.publicKey.export({ type: 'spki', format: 'pem' }).toString(), privateKeyPem: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
    otherDkimKeys.set(name, key);
  }
  return key;
}

interface Created {
  type: string;
  name: string;
  urn: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  inputs: Record<string, any>;
  retainOnDelete: boolean;
  dependencies: string[];
  aliases: string[];
}

interface Outcome {
  created: Created[];
  hostnames: string[];
  publicIps: string[];
  records: DnsRecord[];
  zoneSnippet: string;
  sshCommands: string[];
  manualSteps: string[];
}

function baseConfig(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    domains: ['acme-widgets.com'],
    dns: { mode: 'route53', zoneName: 'acme-widgets.com' },
    ami: 'ami-0123456789abcdef0',
    adminSshKeys: [KEY],
    adminCidrs: ['203.0.113.0/24', '2001:db8:42::/48'],
    ...overrides,
  };
}

function valueOf<T>(output: pulumi.Output<T>): Promise<T> {
  return new Promise((resolve) => output.apply((value) => resolve(value)));
}

async function settle(created: Created[]): Promise<void> {
  let last = -1;
  let stable = 0;
  while (stable < 5) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    if (created.length === last) stable++;
    else {
      stable = 0;
      last = created.length;
    }
  }
}

async function setUpMocks(config: Record<string, unknown>, stack: string): Promise<Created[]> {
  const created: Created[] = [];
  const options = new Map<string, { urn: string; retainOnDelete: boolean; dependencies: string[]; aliases: string[] }>();
  let eips = 0;
  let instances = 0;
  await pulumi.runtime.setMocks({
    newResource(args) {
      const n = created.length + 1;
      const state: Record<string, unknown> = { ...args.inputs };
      let id = `${args.name}-id`;
      switch (args.type) {
        case 'aws:ec2/eip:Eip':
          eips++;
          Object.assign(state, { publicIp: `198.51.100.${eips}`, allocationId: `eipalloc-${eips}` });
          id = `eipalloc-${eips}`;
          break;
        case 'aws:ec2/instance:Instance':
          instances++;
          id = `i-0000${instances}`;
          Object.assign(state, { ipv6Addresses: [`2600:1f18:1234:5600::${instances}`] });
          break;
        case 'aws:ec2/vpc:Vpc':
          Object.assign(state, { ipv6CidrBlock: '2600:1f18:1234:5600::/56' });
          break;
        case 'aws:ebs/volume:Volume':
          id = `vol-0abc${n}`;
          break;
        case 'aws:ec2/eipDomainName:EipDomainName':
          Object.assign(state, { ptrRecord: `${String(args.inputs.domainName)}.` });
          break;
        case 'tls:index/privateKey:PrivateKey':
          if (args.inputs.algorithm === 'ED25519') {
            Object.assign(state, {
              publicKeyOpenssh: `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKey${args.name.replace(/[^A-Za-z0-9]/g, '')}\n`,
              privateKeyOpenssh: `-----BEGIN OPENSSH PRIVATE KEY-----\nkey-of-${args.name}\n-----END OPENSSH PRIVATE KEY-----\n`,
            });
          } else {
            // the default selector's key is the fixed test key; the key of any other selector is a key of its own
            Object.assign(state, args.name.endsWith('-dkim-ownrelay1') ? { publicKeyPem: DKIM_PUBLIC_PEM, privateKeyPem: DKIM_PRIVATE_PEM } : otherDkimKey(args.name));
          }
          break;
        case 'aws:iam/role:Role':
          Object.assign(state, { arn: `arn:aws:iam::123456789012:role/${args.name}`, name: args.name });
          break;
        case 'aws:iam/instanceProfile:InstanceProfile':
          Object.assign(state, { name: args.name });
          break;
      }
      const opts = options.get(`${args.type}::${args.name}`) ?? { urn: '', retainOnDelete: false, dependencies: [], aliases: [] };
      created.push({ type: args.type, name: args.name, inputs: args.inputs as Record<string, unknown>, ...opts });
      return { id, state };
    },
    call(args) {
      switch (args.token) {
        case 'aws:index/getAvailabilityZones:getAvailabilityZones':
          return { id: 'eu-west-1', names: ['eu-west-1a', 'eu-west-1b', 'eu-west-1c'], zoneIds: ['euw1-az1', 'euw1-az2', 'euw1-az3'], groupNames: ['eu-west-1'] };
        case 'aws:route53/getZone:getZone':
          return { id: ZONE_ID, zoneId: ZONE_ID, name: args.inputs.name as string };
        case 'aws:ec2/getVpc:getVpc':
          return { id: 'vpc-default', cidrBlock: '172.31.0.0/16' };
        case 'aws:ec2/getSubnet:getSubnet':
          return { id: `subnet-default-${String(args.inputs.availabilityZone)}`, availabilityZone: args.inputs.availabilityZone as string };
        default:
          throw new Error(`unmocked call ${args.token}`);
      }
    },
  }, 'ownrelay', stack, false);

  // the mock monitor's view of the options the program set (mocks only pass inputs on)
  const monitor = pulumi.runtime.getMonitor() as unknown as { registerResource: (req: RegisterRequest, cb: unknown) => unknown; newUrn: (parent: string, type: string, name: string) => string };
  const original = monitor.registerResource.bind(monitor);
  monitor.registerResource = (req, cb) => {
    const urn = monitor.newUrn(req.getParent(), req.getType(), req.getName());
    // aliases travel as specs or as URNs, depending on what the monitor supports: keep the old names
    const aliases = [
      ...req.getAliasurnsList().map((aliasUrn) => aliasUrn.slice(aliasUrn.lastIndexOf('::') + 2)),
      ...req.getAliasesList().map((alias) => alias.getSpec()?.getName() || alias.getUrn().slice(alias.getUrn().lastIndexOf('::') + 2)),
    ];
    options.set(`${req.getType()}::${req.getName()}`, { urn, retainOnDelete: req.getRetainondelete() === true, dependencies: req.getDependenciesList(), aliases });
    return original(req, cb);
  };

  pulumi.runtime.setAllConfig(Object.fromEntries(Object.entries(config).map(([key, value]) => [`ownrelay:${key}`, typeof value === 'string' ? value : JSON.stringify(value)])));
  return created;
}

interface RegisterRequest {
  getType(): string;
  getName(): string;
  getParent(): string;
  getRetainondelete(): boolean | undefined;
  getDependenciesList(): string[];
  getAliasurnsList(): string[];
  getAliasesList(): Array<{ getUrn(): string; getSpec(): { getName(): string } | undefined }>;
}

async function runProgram(config: Record<string, unknown>, stack = 'acme'): Promise<Outcome> {
  const created = await setUpMocks(config, stack);
  const program = createProgram();
  const [publicIps, records, zoneSnippet, sshCommands, manualSteps] = await Promise.all([
    valueOf(program.publicIps), valueOf(program.dnsRecords), valueOf(program.zoneSnippet), valueOf(program.sshCommands), valueOf(program.manualSteps),
  ]);
  await settle(created);
  return { created, hostnames: program.hostnames, publicIps, records, zoneSnippet, sshCommands, manualSteps };
}

const ofType = (outcome: Outcome, type: string): Created[] => outcome.created.filter((r) => r.type === type);

interface Rule { protocol: string; fromPort: number; toPort: number; cidrBlocks?: string[]; ipv6CidrBlocks?: string[] }
function ingressRules(outcome: Outcome): Rule[] {
  const groups = ofType(outcome, 'aws:ec2/securityGroup:SecurityGroup');
  assert.ok(groups.length > 0, 'no security group');
  return groups.flatMap((g) => (g.inputs.ingress ?? []) as Rule[]);
}
const coversPort = (rule: Rule, port: number): boolean => rule.protocol === '-1' || (rule.fromPort <= port && port <= rule.toPort);
const openToWorld = (rule: Rule): boolean => (rule.cidrBlocks ?? []).includes('0.0.0.0/0') || (rule.ipv6CidrBlocks ?? []).includes('::/0');

let route53: Outcome; // two nodes, records in Route 53, HTTP-01 certificates (so MTA-STS is published)
let manual: Outcome; // one node, manual DNS, no ACME (so no MTA-STS), default VPC
let deployed: Outcome; // two nodes, HTTP-01, with a deploy key: the relay is deployed
let rotating: Outcome; // a DKIM key rotation in progress: ownrelay2 signs, ownrelay1 stays published

const DEPLOY_KEY = '-----BEGIN OPENSSH PRIVATE KEY-----\nadmin\n-----END OPENSSH PRIVATE KEY-----\n';

function bundleFile(): string {
  const bundleDir = mkdtempSync(join(tmpdir(), 'ownrelay-bundle-'));
  writeFileSync(join(bundleDir, 'ownrelay.js'), '#!/usr/bin/env node\n');
  return join(bundleDir, 'ownrelay.js');
}

before(async () => {
  route53 = await runProgram(baseConfig({ nodes: 2, http01: true, acmeEmail: 'hostmaster@acme-widgets.com' }));
  manual = await runProgram(baseConfig({ dns: { mode: 'manual' }, useDefaultVpc: true }));
  deployed = await runProgram(baseConfig({
    domains: ['acme-widgets.com', 'acme-shop.com'],
    dns: { mode: 'manual' },
    nodes: 2,
    http01: true,
    acmeEmail: 'hostmaster@acme-widgets.com',
    bundlePath: bundleFile(),
    deployPrivateKey: DEPLOY_KEY,
  }));
  rotating = await runProgram(baseConfig({
    dkimSelector: 'ownrelay2',
    dkimRetiredSelectors: ['ownrelay1'],
    bundlePath: bundleFile(),
    deployPrivateKey: DEPLOY_KEY,
  }));
});

/** The mock sees secret inputs in Pulumi's wire form: { <secret signature>: ..., value }. */
const SECRET_SIG = '4dabf18193072939515e22adb298388d';

/** The text of a CopyToRemote's StringAsset source, which must be a secret. */
async function copiedText(step: Created): Promise<string> {
  const source = step.inputs.source as Record<string, unknown>;
  assert.ok(SECRET_SIG in source, `${step.name}: the source travels as a secret`);
  return await ((source.value as { text: Promise<string> }).text);
}

const dkimKeysOf = (outcome: Outcome): Created[] => ofType(outcome, 'tls:index/privateKey:PrivateKey').filter((k) => k.inputs.algorithm === 'RSA');

test('the DKIM key is named by its selector and keeps the name it had before (an alias), so an upgrade makes no new key', () => {
  const [key, ...others] = dkimKeysOf(route53);
  assert.equal(others.length, 0);
  assert.equal(key!.name, 'acme-dkim-ownrelay1');
  assert.deepEqual(key!.aliases, ['acme-dkim']);
});

test('a DKIM rotation signs with the new selector\'s own key and keeps the retired selector\'s key published', async () => {
  const keys = dkimKeysOf(rotating);
  assert.deepEqual(keys.map((k) => k.name).sort(), ['acme-dkim-ownrelay1', 'acme-dkim-ownrelay2']);
  // the key made before the rotation (under its old name) stays the retired selector's key
  assert.deepEqual(keys.find((k) => k.name === 'acme-dkim-ownrelay1')!.aliases, ['acme-dkim']);
  assert.deepEqual(keys.find((k) => k.name === 'acme-dkim-ownrelay2')!.aliases, []);

  const published = (selector: string) => {
    const record = ofType(rotating, 'aws:route53/record:Record').find((r) => r.inputs.name === `${selector}._domainkey.acme-widgets.com`);
    assert.ok(record, `${selector} is published`);
    return /p=([A-Za-z0-9+/=]+)$/.exec(route53TxtStrings((record.inputs.records as string[])[0] ?? '').join(''))?.[1];
  };
  assert.equal(published('ownrelay1'), DKIM_PUBLIC_B64, 'the retired key is still in DNS');
  const current = published('ownrelay2');
  assert.ok(current !== undefined && current !== DKIM_PUBLIC_B64, 'the new selector has a key of its own');

  // the relay gets the new key only, under the new selector
  const [keyStep, ...moreKeys] = ofType(rotating, 'command:remote:CopyToRemote').filter((c) => c.name.includes('-dkim-'));
  assert.equal(moreKeys.length, 0);
  assert.match(String(keyStep!.inputs.remotePath), /\/dkim\/acme-widgets\.com\.ownrelay2\.pem$/);
  const shipped = createPublicKey(createPrivateKey(await copiedText(keyStep!))).export({ type: 'spki', format: 'der' }).toString('base64');
  assert.equal(shipped, current);
  const configStep = ofType(rotating, 'command:remote:CopyToRemote').find((c) => c.name.endsWith('-config'))!;
  const config = parseConfig(await copiedText(configStep), configStep.name);
  assert.deepEqual(config.dkim.keys.map((k) => k.selector), ['ownrelay2']);
});

test('SSH is never open to 0.0.0.0/0', () => {
  for (const outcome of [route53, manual]) {
    const ssh = ingressRules(outcome).filter((rule) => coversPort(rule, 22));
    assert.ok(ssh.length > 0, 'expected an SSH rule for the admins');
    for (const rule of ssh) {
      assert.equal(openToWorld(rule), false, `SSH rule open to the world: ${JSON.stringify(rule)}`);
      assert.deepEqual([...(rule.cidrBlocks ?? []), ...(rule.ipv6CidrBlocks ?? [])].sort(), ['2001:db8:42::/48', '203.0.113.0/24']);
    }
  }
});

test('only the mail ports (and 80 and 443 when HTTP-01 certificates are on) are open to the world', () => {
  const worldPorts = (outcome: Outcome): number[] => ingressRules(outcome).filter(openToWorld).map((rule) => {
    assert.equal(rule.protocol, 'tcp');
    assert.equal(rule.fromPort, rule.toPort, 'no port ranges open to the world');
    assert.deepEqual(rule.cidrBlocks, ['0.0.0.0/0']);
    assert.deepEqual(rule.ipv6CidrBlocks, ['::/0']);
    return rule.fromPort;
  }).sort((a, b) => a - b);
  assert.deepEqual(worldPorts(route53), [25, 80, 443, 465, 587]);
  assert.deepEqual(worldPorts(manual), [25, 465, 587]);
});

test('IMDSv2 is required', () => {
  const instances = ofType(route53, 'aws:ec2/instance:Instance');
  assert.equal(instances.length, 2);
  for (const instance of [...instances, ...ofType(manual, 'aws:ec2/instance:Instance')]) {
    assert.equal(instance.inputs.metadataOptions?.httpTokens, 'required');
  }
});

test('every volume is encrypted', () => {
  for (const outcome of [route53, manual]) {
    for (const instance of ofType(outcome, 'aws:ec2/instance:Instance')) {
      assert.equal(instance.inputs.rootBlockDevice?.encrypted, true);
      assert.equal(instance.inputs.rootBlockDevice?.volumeType, 'gp3');
      for (const device of instance.inputs.ebsBlockDevices ?? []) assert.equal(device.encrypted, true);
    }
    const volumes = ofType(outcome, 'aws:ebs/volume:Volume');
    assert.ok(volumes.length > 0);
    for (const volume of volumes) assert.equal(volume.inputs.encrypted, true, volume.name);
  }
});

test('the spool volume survives instance termination', () => {
  const volumes = ofType(route53, 'aws:ebs/volume:Volume');
  const attachments = ofType(route53, 'aws:ec2/volumeAttachment:VolumeAttachment');
  const instances = ofType(route53, 'aws:ec2/instance:Instance');
  assert.equal(volumes.length, 2, 'one spool volume per node');
  for (const volume of volumes) {
    // a standalone volume, not a block device of the instance, and kept even if the stack drops it
    assert.equal(volume.retainOnDelete, true, `${volume.name} is not retained`);
    assert.equal(volume.inputs.type, 'gp3');
    assert.equal(volume.inputs.tags?.['ownrelay:spool'], 'ownrelay/acme', 'tagged for the stack\'s DLM snapshots');
  }
  for (const instance of instances) {
    assert.equal(instance.inputs.disableApiTermination, true);
    assert.equal(instance.inputs.userDataReplaceOnChange, false);
    assert.equal(instance.inputs.ami, 'ami-0123456789abcdef0');
    assert.ok(!(instance.inputs.ebsBlockDevices ?? []).length, 'the spool is not an instance block device');
  }
  assert.deepEqual(attachments.map((a) => a.inputs.deviceName), ['/dev/sdf', '/dev/sdf']);
  // each volume lives in its instance's zone: the zone of the subnet the instance is in
  const subnets = ofType(route53, 'aws:ec2/subnet:Subnet');
  for (const attachment of attachments) {
    const instance = instances.find((i) => `i-0000${instances.indexOf(i) + 1}` === attachment.inputs.instanceId);
    const volume = volumes.find((v) => v.inputs.availabilityZone !== undefined && attachment.dependencies.includes(v.urn));
    assert.ok(instance && volume, 'attachment joins an instance and a volume');
    const subnet = subnets.find((s) => `${s.name}-id` === instance.inputs.subnetId);
    assert.equal(volume.inputs.availabilityZone, subnet?.inputs.availabilityZone);
  }
  // the user-data finds the volume by its NVMe serial (the volume id), not by probe order
  for (const instance of instances) assert.match(String(instance.inputs.userData), /\/dev\/disk\/by-id\/nvme-Amazon_Elastic_Block_Store_vol0abc\d+/);
  const [policy] = ofType(route53, 'aws:dlm/lifecyclePolicy:LifecyclePolicy');
  assert.deepEqual(policy?.inputs.policyDetails?.targetTags, { 'ownrelay:spool': 'ownrelay/acme' });
  assert.equal(policy?.inputs.policyDetails?.schedules?.[0]?.retainRule?.count, 7);
  assert.equal(policy?.inputs.policyDetails?.schedules?.[0]?.createRule?.interval, 24);
  const alarms = ofType(route53, 'aws:cloudwatch/metricAlarm:MetricAlarm').filter((a) => a.inputs.metricName === 'StatusCheckFailed_System');
  assert.equal(alarms.length, 2);
  for (const alarm of alarms) assert.deepEqual(alarm.inputs.alarmActions, ['arn:aws:automate:eu-west-1:ec2:recover']);
});

test('the PTR name equals the A record name equals the node hostname', () => {
  assert.deepEqual(route53.hostnames, ['mail.acme-widgets.com', 'mail2.acme-widgets.com']);
  const ptrs = ofType(route53, 'aws:ec2/eipDomainName:EipDomainName');
  const aRecords = ofType(route53, 'aws:route53/record:Record').filter((r) => r.inputs.type === 'A');
  assert.equal(ptrs.length, 2);
  route53.hostnames.forEach((hostname, i) => {
    const ip = route53.publicIps[i];
    const a = aRecords.find((r) => r.inputs.name === hostname);
    assert.ok(a, `no A record for ${hostname}`);
    assert.deepEqual(a.inputs.records, [ip]);
    const ptr = ptrs.find((p) => p.inputs.domainName === hostname);
    assert.ok(ptr, `no PTR for ${hostname}`);
    assert.equal(ptr.inputs.allocationId, `eipalloc-${i + 1}`);
    assert.ok(ptr.dependencies.includes(a.urn), 'the PTR waits for its A record (AWS checks it)');
    const user = /^fqdn: (\S+)$/m.exec(String(ofType(route53, 'aws:ec2/instance:Instance')[i]?.inputs.userData));
    assert.equal(user?.[1], hostname, 'the host calls itself by its PTR name');
  });
});

test('MX and SPF list every node\'s IP', () => {
  assert.equal(route53.publicIps.length, 2);
  const mx = route53.records.find((r) => r.name === 'acme-widgets.com' && r.type === 'MX');
  assert.deepEqual(mx?.values, ['10 mail.acme-widgets.com', '10 mail2.acme-widgets.com']);
  const spf = route53.records.find((r) => r.name === 'acme-widgets.com' && r.type === 'TXT')?.values[0] ?? '';
  for (const ip of route53.publicIps) assert.ok(spf.includes(`ip4:${ip}`), `${ip} missing from ${spf}`);
  assert.match(spf, /^v=spf1 .* -all$/);
  const published = ofType(route53, 'aws:route53/record:Record');
  assert.deepEqual(published.find((r) => r.inputs.name === 'acme-widgets.com' && r.inputs.type === 'MX')?.inputs.records, mx?.values);
  assert.deepEqual(published.find((r) => r.inputs.name === 'acme-widgets.com' && r.inputs.type === 'TXT')?.inputs.records, [spf]);
});

test('the DKIM TXT carries the public half of the generated key and no string exceeds 255 bytes', () => {
  const [key] = ofType(route53, 'tls:index/privateKey:PrivateKey').filter((k) => k.inputs.algorithm === 'RSA');
  assert.equal(key?.inputs.algorithm, 'RSA');
  assert.equal(key?.inputs.rsaBits, 2048);
  const dkim = ofType(route53, 'aws:route53/record:Record').find((r) => r.inputs.name === 'ownrelay1._domainkey.acme-widgets.com');
  assert.equal(dkim?.inputs.type, 'TXT');
  const [value] = dkim?.inputs.records as string[];
  const strings = route53TxtStrings(value ?? '');
  assert.ok(strings.length > 1, 'a 2048-bit key needs more than one string');
  for (const s of strings) assert.ok(Buffer.byteLength(s) <= 255, `${Buffer.byteLength(s)} bytes`);
  assert.equal(strings.join(''), `v=DKIM1; k=rsa; p=${DKIM_PUBLIC_B64}`);
  for (const record of ofType(route53, 'aws:route53/record:Record').filter((r) => r.inputs.type === 'TXT')) {
    for (const v of record.inputs.records as string[]) for (const s of route53TxtStrings(v)) assert.ok(Buffer.byteLength(s) <= 255);
  }
});

test('DMARC, MTA-STS and TLS-RPT records are published', () => {
  const txt = (name: string): string[] => (ofType(route53, 'aws:route53/record:Record').find((r) => r.inputs.name === name && r.inputs.type === 'TXT')?.inputs.records ?? []) as string[];
  assert.match(txt('_dmarc.acme-widgets.com')[0] ?? '', /^v=DMARC1; p=quarantine/);
  assert.match(txt('_mta-sts.acme-widgets.com')[0] ?? '', /^v=STSv1; id=[0-9a-f]{32}$/);
  assert.match(txt('_smtp._tls.acme-widgets.com')[0] ?? '', /^v=TLSRPTv1; rua=mailto:/);
  const mtaStsA = ofType(route53, 'aws:route53/record:Record').find((r) => r.inputs.name === 'mta-sts.acme-widgets.com' && r.inputs.type === 'A');
  assert.deepEqual(mtaStsA?.inputs.records, route53.publicIps.slice(0, 1), 'node 0 serves the policy');
  for (const record of ofType(route53, 'aws:route53/record:Record')) assert.equal(record.inputs.zoneId, ZONE_ID);
  // every rendered record is in Route 53, and nothing else is
  const published = ofType(route53, 'aws:route53/record:Record').map((r) => `${String(r.inputs.name)} ${String(r.inputs.type)}`).sort();
  assert.deepEqual(published, route53.records.map((r) => `${r.name} ${r.type}`).sort());
});

test('manual DNS mode creates no Route 53 record', () => {
  assert.deepEqual(manual.created.filter((r) => r.type.startsWith('aws:route53/')), []);
  assert.deepEqual(ofType(manual, 'aws:ec2/eipDomainName:EipDomainName'), [], 'no PTR before the A record exists');
  for (const record of manual.records) {
    for (const value of record.values) assert.ok(manual.zoneSnippet.includes(`${record.name}.\t`), `${record.name} ${value} missing from the snippet`);
  }
  assert.match(manual.zoneSnippet, /^mail\.acme-widgets\.com\.\t3600\tIN\tA\t198\.51\.100\.1$/m);
  const steps = manual.manualSteps.join('\n');
  assert.match(steps, /aws ec2 modify-address-attribute --region eu-west-1 --allocation-id eipalloc-1 --domain-name mail\.acme-widgets\.com/);
  assert.match(steps, /port-25/);
  assert.match(steps, /198\.51\.100\.1 {2}-> {2}mail\.acme-widgets\.com/);
  assert.match(route53.manualSteps.join('\n'), /PTR is already set/);
  assert.deepEqual(manual.sshCommands, ['ssh admin@198.51.100.1  # mail.acme-widgets.com']);
});

test('a bad stack config fails with a clear message', async () => {
  await setUpMocks(baseConfig({ adminCidrs: ['0.0.0.0/0'] }), 'acme');
  assert.throws(() => createProgram(), (err: Error) => {
    assert.equal(err.name, 'StackConfigError');
    assert.match(err.message, /ownrelay:adminCidrs\.0: SSH must not be open to the whole Internet/);
    return true;
  });
});

test('every host gets its own SSH host key through user-data, and no relay is deployed without a deploy key', () => {
  const hostKeys = ofType(route53, 'tls:index/privateKey:PrivateKey').filter((k) => k.inputs.algorithm === 'ED25519');
  assert.equal(hostKeys.length, 2, 'one host key per node');
  const instances = ofType(route53, 'aws:ec2/instance:Instance');
  for (const [i, instance] of instances.entries()) {
    const userData = String(instance.inputs.userData);
    assert.match(userData, /ssh_keys:\s*\n\s*ed25519_private: \|?[\s\S]*key-of-acme-node\d-ssh-host-key/, `node ${i} gets a host key`);
  }
  assert.equal(ofType(route53, 'command:remote:Command').length, 0);
  assert.ok(route53.manualSteps.some((step) => /ownrelay:deployPrivateKey/.test(step)), 'the manual steps say how to deploy');
});

test('with a deploy key, the relay is deployed to every node over SSH with that node\'s host key pinned', () => {
  const runs = ofType(deployed, 'command:remote:Command').filter((c) => c.name.endsWith('-run'));
  assert.equal(runs.length, 2);
  for (const [i, run] of runs.entries()) {
    const wire = run.inputs.connection as Record<string, unknown>;
    const connection = (wire[SECRET_SIG] ? wire.value : wire) as Record<string, unknown>;
    assert.equal(connection.hostKey, `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyacmenode${i}sshhostkey`);
    assert.equal(connection.host, deployed.publicIps[i]);
    assert.equal(connection.user, 'admin');
  }
  const configs = ofType(deployed, 'command:remote:CopyToRemote').filter((c) => c.name.endsWith('-config'));
  assert.equal(configs.length, 2);
});

test('each deployed relay config names its own node\'s public addresses for `ownrelay doctor` (an Elastic IP is on no interface)', async () => {
  const configs = ofType(deployed, 'command:remote:CopyToRemote').filter((c) => c.name.endsWith('-config'));
  const seen: string[][] = [];
  for (const [i, ip] of deployed.publicIps.entries()) {
    const step = configs.find((c) => c.name.includes(`-node${i}-`));
    assert.ok(step, `a config for node ${i}`);
    const { publicAddresses } = parseConfig(await copiedText(step), step.name).doctor;
    // the Elastic IP, then the instance's IPv6 address (this stack has its own VPC, with IPv6)
    assert.equal(publicAddresses.length, 2, JSON.stringify(publicAddresses));
    assert.equal(publicAddresses[0], ip);
    assert.match(publicAddresses[1]!, /^2600:1f18:1234:5600::\d+$/);
    seen.push(publicAddresses);
  }
  assert.equal(new Set(seen.flat()).size, 4, 'no two nodes share an address');
});

test('the DKIM key shipped to each relay is the private half of the published DKIM record, and its config names the shipped files', async () => {
  const keySteps = ofType(deployed, 'command:remote:CopyToRemote').filter((c) => c.name.includes('-dkim-'));
  assert.equal(keySteps.length, 4, 'one key file per domain on each of the two nodes');
  const shipped = new Map<string, string>();
  for (const step of keySteps) {
    const pem = await copiedText(step);
    const path = String(step.inputs.remotePath);
    assert.match(path, /^ownrelay-staging-[0-9a-f]{16}\/dkim\/acme-(widgets|shop)\.com\.ownrelay1\.pem$/);
    shipped.set(path.replace(/^.*\//, ''), pem);
  }
  assert.deepEqual([...shipped.keys()].sort(), ['acme-shop.com.ownrelay1.pem', 'acme-widgets.com.ownrelay1.pem']);
  for (const domain of ['acme-widgets.com', 'acme-shop.com']) {
    const record = deployed.records.find((r) => r.name === `ownrelay1._domainkey.${domain}` && r.type === 'TXT');
    const published = /p=([A-Za-z0-9+/=]+)$/.exec(record?.values[0] ?? '')?.[1];
    const pem = shipped.get(`${domain}.ownrelay1.pem`) ?? '';
    const derived = createPublicKey(createPrivateKey(pem)).export({ type: 'spki', format: 'der' }).toString('base64');
    assert.equal(derived, published, `${domain}: the relay signs with the key whose public half is in DNS`);
  }
  for (const step of ofType(deployed, 'command:remote:CopyToRemote').filter((c) => c.name.endsWith('-config'))) {
    const config = parseConfig(await copiedText(step), step.name);
    assert.deepEqual(config.dkim.keys.map((k) => [k.domain, k.selector, k.privateKeyFile]), [
      ['acme-widgets.com', 'ownrelay1', '/etc/ownrelay/dkim/acme-widgets.com.ownrelay1.pem'],
      ['acme-shop.com', 'ownrelay1', '/etc/ownrelay/dkim/acme-shop.com.ownrelay1.pem'],
    ]);
  }
});

test('the DKIM private key never appears in the user-data, whose relay config names no key file', () => {
  const body = DKIM_PRIVATE_PEM.split('\n')[1] ?? '';
  assert.ok(body.length > 40);
  for (const outcome of [route53, manual, deployed]) {
    for (const instance of ofType(outcome, 'aws:ec2/instance:Instance')) {
      const userData = String(instance.inputs.userData);
      assert.ok(!userData.includes(body), 'no line of the private key');
      assert.ok(!userData.includes('BEGIN PRIVATE KEY') && !userData.includes('BEGIN RSA PRIVATE KEY'), 'no PKCS#8 or PKCS#1 key at all');
      const files = (parse(userData) as { write_files: { path: string; content: string }[] }).write_files;
      const relayConfig = parse(files.find((f) => f.path === '/etc/ownrelay/ownrelay.yaml')?.content ?? '') as Record<string, unknown>;
      assert.equal(relayConfig.dkim, undefined, 'the first boot must not name key files that arrive with the deploy');
      assert.equal(relayConfig.tls, undefined, 'certificate settings come with the deploy too');
      assert.ok(!files.some((f) => f.path.includes('dkim')));
    }
  }
});

test('the MTA-STS policy node 0 serves has the id of the _mta-sts record, and 443 is open exactly where it is served', async () => {
  const configs = ofType(deployed, 'command:remote:CopyToRemote').filter((c) => c.name.endsWith('-config'));
  assert.deepEqual(configs.map((c) => c.name), ['acme-node0-config', 'acme-node1-config']);
  const [node0, node1] = await Promise.all(configs.map(async (step) => parseConfig(await copiedText(step), step.name)));
  assert.ok(node0 && node1);
  const settings = node0.tls.mtaStsPolicy;
  assert.ok(settings, 'node 0 serves the policy');
  assert.deepEqual(settings.mx, ['mail.acme-widgets.com', 'mail2.acme-widgets.com'], 'every node is in the policy');
  assert.equal(settings.address, '::', 'the node has an AAAA record for mta-sts.<domain>: served on IPv6 too');
  // what server/tls/mta-sts-server.ts serves for these settings
  const served = renderMtaStsPolicy({ mode: settings.mode, maxAgeSeconds: settings.maxAgeSeconds, mxHosts: settings.mx.length > 0 ? settings.mx : [node0.hostname] });
  assert.match(served.text, /^version: STSv1\r\nmode: testing\r\n/);
  for (const domain of ['acme-widgets.com', 'acme-shop.com']) {
    const txt = deployed.records.find((r) => r.name === `_mta-sts.${domain}` && r.type === 'TXT');
    assert.deepEqual(txt?.values, [`v=STSv1; id=${served.id}`]);
    // the name of the policy host points at node 0, the one serving it
    assert.deepEqual(deployed.records.find((r) => r.name === `mta-sts.${domain}` && r.type === 'A')?.values, [deployed.publicIps[0]]);
  }
  // both nodes get certificates by HTTP-01, for their own names only on node 1
  for (const config of [node0, node1]) assert.deepEqual({ email: config.tls.acme?.email, challenge: config.tls.acme?.challenge }, { email: 'hostmaster@acme-widgets.com', challenge: 'http-01' });
  assert.equal(node1.tls.mtaStsPolicy, undefined);

  const nftables = (outcome: Outcome, node: number): string => {
    const userData = String(ofType(outcome, 'aws:ec2/instance:Instance')[node]?.inputs.userData);
    return (parse(userData) as { write_files: { path: string; content: string }[] }).write_files.find((f) => f.path === '/etc/nftables.conf')?.content ?? '';
  };
  assert.equal(nftables(route53, 0), renderNftables({ adminCidrs: ['203.0.113.0/24', '2001:db8:42::/48'], http01: true, mtaStsPolicy: true }));
  assert.match(nftables(route53, 0), /^\t\ttcp dport 443 accept$/m);
  assert.doesNotMatch(nftables(route53, 1), /dport 443/, 'node 1 serves no policy');
  assert.match(nftables(route53, 1), /^\t\ttcp dport 80 accept$/m, 'node 1 still renews its certificate');
  // without a CA certificate nothing is published, served or opened
  assert.deepEqual(manual.records.filter((r) => r.name.startsWith('_mta-sts.') || r.name.startsWith('mta-sts.')), []);
  assert.doesNotMatch(nftables(manual, 0), /dport (80|443)/);
});

test('ACME DNS-01 gives each host a role policy that changes only _acme-challenge TXT records of the zone; without it there is none', async () => {
  assert.deepEqual(ofType(route53, 'aws:iam/rolePolicy:RolePolicy'), [], 'HTTP-01 needs no Route 53 access');
  const dns01 = await runProgram(baseConfig({ relay: { tls: { acme: { email: 'hostmaster@acme-widgets.com', challenge: 'dns-01', dns01: { provider: 'route53' } } } } }), 'dns01');
  const policies = ofType(dns01, 'aws:iam/rolePolicy:RolePolicy');
  assert.equal(policies.length, 1, 'one per node');
  const document = JSON.parse(String(policies[0]!.inputs.policy)) as { Statement: Array<{ Action: string; Resource: string; Condition?: Record<string, Record<string, string[]>> }> };
  const change = document.Statement.find((st) => st.Action === 'route53:ChangeResourceRecordSets');
  assert.equal(change?.Resource, `arn:aws:route53:::hostedzone/${ZONE_ID}`);
  assert.deepEqual(change?.Condition, {
    'ForAllValues:StringLike': { 'route53:ChangeResourceRecordSetsNormalizedRecordNames': ['_acme-challenge.*'] },
    'ForAllValues:StringEquals': { 'route53:ChangeResourceRecordSetsRecordTypes': ['TXT'] },
  });
  assert.deepEqual(document.Statement.map((st) => st.Action).sort(), ['route53:ChangeResourceRecordSets', 'route53:GetChange', 'route53:ListHostedZonesByName']);
  // the policy belongs to the host's own role (not the snapshot service's)
  assert.ok(policies[0]!.name.endsWith('-node0-acme-dns01'), policies[0]!.name);
  await assert.rejects(
    runProgram(baseConfig({ dns: { mode: 'manual' }, relay: { tls: { acme: { email: 'hostmaster@acme-widgets.com', challenge: 'dns-01', dns01: { provider: 'route53' } } } } }), 'dns01-manual'),
    /tls\.acme\.challenge dns-01 needs ownrelay:dns mode route53/,
  );
});
