/**
 * One mail host: an EC2 instance and the spool volume that outlives it.
 *
 * Contract:
 * - IMDSv2 only (`httpTokens: required`), encrypted gp3 root, termination
 *   protection, an instance profile with AmazonSSMManagedInstanceCore so Session
 *   Manager is a second way in when SSH breaks.
 * - The AMI is pinned in the stack config; a new image never replaces the host.
 *   User-data changes are applied in place (`userDataReplaceOnChange: false`),
 *   not by replacing the host: replacing it would lose its queue and IP reputation.
 * - The spool is a separate encrypted gp3 volume in the instance's zone, kept when
 *   the instance or the stack goes (`retainOnDelete`), tagged for the daily DLM
 *   snapshots of `SpoolSnapshots`.
 * - A failed system status check triggers EC2 auto-recovery (same instance id,
 *   volumes and Elastic IP, on other hardware); a failed instance check, a reboot.
 *
 * How the host finds the spool device: it is attached as /dev/sdf, but on Nitro
 * instances (t3, m5, ... every current type) EBS volumes are NVMe devices whose
 * numbering (/dev/nvme1n1, ...) depends on discovery order. The stable name is
 * udev's /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<id without dash>
 * (the NVMe serial is the volume id), so that path is what the user-data gets.
 * Older Xen types (t2, m4, ...) see /dev/xvdf instead.
 */
import * as aws from '@pulumi/aws';
import * as pulumi from '@pulumi/pulumi';
import { acmeDns01Policy } from '../render/acme-dns01-policy';

export interface RelayHostArgs {
  /** The host's fully qualified name (its PTR); used for tags. */
  hostname: pulumi.Input<string>;
  ami: pulumi.Input<string>;
  instanceType: string;
  subnetId: pulumi.Input<string>;
  /** The subnet's zone; the spool volume is created there. */
  availabilityZone: pulumi.Input<string>;
  securityGroupIds: pulumi.Input<string>[];
  /** Give the instance an IPv6 address (the subnet must have a /64). */
  ipv6: boolean;
  /** Renders the user-data once the spool's device path is known (it names the volume id). */
  userData: (spoolDevice: string) => pulumi.Input<string>;
  spoolVolumeGiB: pulumi.Input<number>;
  /** The value of the `ownrelay:spool` tag that `SpoolSnapshots` targets. */
  spoolSnapshotTag: pulumi.Input<string>;
  /** For the EC2 alarm actions (arn:aws:automate:<region>:ec2:recover). */
  region: pulumi.Input<string>;
  rootVolumeGiB?: number;
  tags?: Record<string, string>;
  /** The Route 53 zone whose `_acme-challenge` TXT records the relay may change (ACME DNS-01). */
  acmeDns01ZoneId?: pulumi.Input<string>;
}

/** Where the spool volume is attached (the API's name; see the module comment for what the host sees). */
export const SPOOL_ATTACH_DEVICE = '/dev/sdf';
/** The tag key of spool volumes; `SpoolSnapshots` snapshots volumes carrying its stack's value. */
export const SPOOL_TAG_KEY = 'ownrelay:spool';

const XEN_FAMILIES = /^(t1|t2|m1|m2|m3|m4|c1|c3|c4|r3|r4|i2|i3|x1|x1e|d2|g2|g3|p2|p3|h1|f1|cc2|cr1|hs1)\./;

/** The device path the host sees for the spool volume (see the module comment). */
export function spoolDevicePath(volumeId: string, instanceType: string): string {
  if (XEN_FAMILIES.test(instanceType)) return '/dev/xvdf';
  return `/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${volumeId.replace('-', '')}`;
}

export class RelayHost extends pulumi.ComponentResource {
  readonly instanceId: pulumi.Output<string>;
  readonly spoolVolumeId: pulumi.Output<string>;
  readonly ipv6Address: pulumi.Output<string | undefined>;
  readonly spoolDevice: pulumi.Output<string>;

  constructor(name: string, args: RelayHostArgs, opts?: pulumi.ComponentResourceOptions) {
    super('ownrelay:infra:RelayHost', name, {}, opts);
    const tags = { ...(args.tags ?? {}), 'ownrelay:host': pulumi.output(args.hostname) };
    const tagMap = pulumi.output(tags);

    const role = new aws.iam.Role(`${name}-role`, {
      assumeRolePolicy: JSON.stringify({
        Version: '2012-10-17',
        Statement: [{ Effect: 'Allow', Principal: { Service: 'ec2.amazonaws.com' }, Action: 'sts:AssumeRole' }],
      }),
      tags: tagMap,
    }, { parent: this });
    new aws.iam.RolePolicyAttachment(`${name}-ssm`, { role: role.name, policyArn: aws.iam.ManagedPolicy.AmazonSSMManagedInstanceCore }, { parent: this });
    if (args.acmeDns01ZoneId !== undefined) {
      new aws.iam.RolePolicy(`${name}-acme-dns01`, { role: role.id, policy: pulumi.output(args.acmeDns01ZoneId).apply((zoneId) => JSON.stringify(acmeDns01Policy(zoneId))) }, { parent: this });
    }
    const profile = new aws.iam.InstanceProfile(`${name}-profile`, { role: role.name, tags: tagMap }, { parent: this });

    // created before the instance: the user-data names it, and its zone is the subnet's
    const spool = new aws.ebs.Volume(`${name}-spool`, {
      availabilityZone: args.availabilityZone,
      type: 'gp3',
      size: args.spoolVolumeGiB,
      encrypted: true,
      finalSnapshot: true,
      tags: pulumi.all([tagMap, args.spoolSnapshotTag, args.hostname]).apply(([t, spoolTag, hostname]) => ({ ...t, [SPOOL_TAG_KEY]: spoolTag, Name: `${hostname} spool` })),
    }, { parent: this, retainOnDelete: true });
    this.spoolVolumeId = spool.id;
    this.spoolDevice = spool.id.apply((id) => spoolDevicePath(id, args.instanceType));

    const instance = new aws.ec2.Instance(`${name}-instance`, {
      ami: args.ami,
      instanceType: args.instanceType,
      subnetId: args.subnetId,
      vpcSecurityGroupIds: args.securityGroupIds,
      iamInstanceProfile: profile.name,
      ...(args.ipv6 ? { ipv6AddressCount: 1 } : {}),
      metadataOptions: { httpTokens: 'required', httpEndpoint: 'enabled', httpPutResponseHopLimit: 1 },
      rootBlockDevice: { volumeType: 'gp3', volumeSize: args.rootVolumeGiB ?? 10, encrypted: true, deleteOnTermination: true },
      disableApiTermination: true,
      userData: this.spoolDevice.apply((device) => pulumi.output(args.userData(device))),
      userDataReplaceOnChange: false,
      monitoring: false,
      tags: pulumi.all([tagMap, args.hostname]).apply(([t, hostname]) => ({ ...t, Name: hostname })),
      volumeTags: tagMap,
    }, { parent: this });
    this.instanceId = instance.id;
    this.ipv6Address = instance.ipv6Addresses.apply((addresses) => addresses[0]);

    new aws.ec2.VolumeAttachment(`${name}-spool`, {
      instanceId: instance.id,
      volumeId: spool.id,
      deviceName: SPOOL_ATTACH_DEVICE,
      // a clean unmount before the volume leaves (instance replaced): the spool's fsyncs were for something
      stopInstanceBeforeDetaching: true,
    }, { parent: this });

    const alarm = (suffix: string, metricName: string, action: string, description: string): aws.cloudwatch.MetricAlarm =>
      new aws.cloudwatch.MetricAlarm(`${name}-${suffix}`, {
        alarmDescription: pulumi.interpolate`${args.hostname}: ${description}`,
        namespace: 'AWS/EC2',
        metricName,
        dimensions: { InstanceId: instance.id },
        statistic: 'Maximum',
        period: 60,
        evaluationPeriods: 2,
        comparisonOperator: 'GreaterThanThreshold',
        threshold: 0,
        alarmActions: [pulumi.interpolate`arn:aws:automate:${args.region}:ec2:${action}`],
        tags: tagMap,
      }, { parent: this });
    alarm('recover', 'StatusCheckFailed_System', 'recover', 'system status check failed: EC2 recovers the instance onto healthy hardware');
    alarm('reboot', 'StatusCheckFailed_Instance', 'reboot', 'instance status check failed: EC2 reboots it');

    this.registerOutputs({ instanceId: this.instanceId, spoolVolumeId: this.spoolVolumeId, ipv6Address: this.ipv6Address });
  }
}

export interface SpoolSnapshotsArgs {
  /** The `ownrelay:spool` tag value of the volumes to snapshot (one per stack). */
  spoolSnapshotTag: pulumi.Input<string>;
  /** Snapshots kept per volume; default 7 (a week of dailies). */
  keep?: number;
  /** UTC time of the daily snapshot; default 03:00. */
  timeUtc?: string;
  tags?: Record<string, string>;
}

/**
 * Daily snapshots of a stack's spool volumes by Data Lifecycle Manager. One policy
 * per stack, targeting the stack's own tag value: with a shared value (`true`),
 * every stack's policy in an account would snapshot every stack's volumes.
 */
export class SpoolSnapshots extends pulumi.ComponentResource {
  readonly policyId: pulumi.Output<string>;

  constructor(name: string, args: SpoolSnapshotsArgs, opts?: pulumi.ComponentResourceOptions) {
    super('ownrelay:infra:SpoolSnapshots', name, {}, opts);
    const tags = args.tags ?? {};
    const role = new aws.iam.Role(`${name}-dlm`, {
      assumeRolePolicy: JSON.stringify({
        Version: '2012-10-17',
        Statement: [{ Effect: 'Allow', Principal: { Service: 'dlm.amazonaws.com' }, Action: 'sts:AssumeRole' }],
      }),
      tags,
    }, { parent: this });
    new aws.iam.RolePolicyAttachment(`${name}-dlm`, { role: role.name, policyArn: aws.iam.ManagedPolicy.AWSDataLifecycleManagerServiceRole }, { parent: this });
    const policy = new aws.dlm.LifecyclePolicy(`${name}-snapshots`, {
      description: 'ownrelay spool: daily snapshots',
      executionRoleArn: role.arn,
      state: 'ENABLED',
      policyDetails: {
        resourceTypes: ['VOLUME'],
        targetTags: pulumi.output(args.spoolSnapshotTag).apply((value) => ({ [SPOOL_TAG_KEY]: value })),
        schedules: [{
          name: 'daily',
          createRule: { interval: 24, intervalUnit: 'HOURS', times: args.timeUtc ?? '03:00' },
          retainRule: { count: args.keep ?? 7 },
          copyTags: true,
        }],
      },
      tags,
    }, { parent: this });
    this.policyId = policy.id;
    this.registerOutputs({ policyId: this.policyId });
  }
}
