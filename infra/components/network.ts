/**
 * Where the mail hosts live and what may reach them: one public subnet per node's
 * availability zone (in a small VPC of our own, or the account's default VPC) and
 * one security group.
 *
 * Contract: the group opens the mail ports (25, 465, 587) to the whole Internet,
 * SSH (22) only to the admin networks (a /0 is refused, never defaulted), port 80
 * to the world only when HTTP-01 certificates are on, port 443 only when a relay
 * serves the MTA-STS policy, and nothing else; all egress
 * is allowed (the relay delivers to any MX). The host firewall rendered by
 * `render/firewall.ts` mirrors it. Our own VPC is dual-stack: an Amazon-provided
 * /56 and one /64 per subnet, so each host gets an IPv6 address; the default VPC
 * is used as it is (IPv4 only as far as this component knows).
 */
import * as aws from '@pulumi/aws';
import * as pulumi from '@pulumi/pulumi';
import ipaddr from 'ipaddr.js';
import { HTTPS_PORT, HTTP_PORT, MAIL_PORTS, SSH_PORT, splitAdminCidrs } from '../render/firewall';

export interface RelayNetworkArgs {
  /** One entry per node: the zone of that node's own subnet (zones may repeat when nodes outnumber zones). */
  availabilityZones: pulumi.Input<string>[];
  /** Networks allowed to SSH in; at least one, no /0. Known at construction (they shape the rules). */
  adminCidrs: readonly string[];
  /** Open port 80 to the world for ACME HTTP-01 challenges. */
  http01: boolean;
  /** Open port 443 to the world: a relay serves the MTA-STS policy there (node 0; the other nodes' host firewalls keep it closed). */
  mtaStsPolicy?: boolean;
  /** Use the account's default VPC and its default subnets instead of creating a VPC. */
  useDefaultVpc: boolean;
  tags?: Record<string, string>;
}

/** The IPv4 range of our own VPC; subnet i is 10.42.i.0/24. */
export const VPC_CIDR = '10.42.0.0/16';

export class RelayNetwork extends pulumi.ComponentResource {
  readonly vpcId: pulumi.Output<string>;
  /** One per node, in the order of `availabilityZones`. */
  readonly subnetIds: pulumi.Output<string>[];
  /** The zone of each subnet, in the same order. */
  readonly availabilityZones: pulumi.Output<string>[];
  readonly securityGroupId: pulumi.Output<string>;
  /** Whether the subnets give hosts an IPv6 address (only in our own VPC). */
  readonly hasIpv6: boolean;

  constructor(name: string, args: RelayNetworkArgs, opts?: pulumi.ComponentResourceOptions) {
    super('ownrelay:infra:RelayNetwork', name, {}, opts);
    const tags = args.tags ?? {};
    const zones = args.availabilityZones.map((zone) => pulumi.output(zone));

    if (args.useDefaultVpc) {
      const vpc = aws.ec2.getVpcOutput({ default: true }, { parent: this });
      this.vpcId = vpc.id;
      this.subnetIds = zones.map((zone) => aws.ec2.getSubnetOutput({ vpcId: vpc.id, availabilityZone: zone, defaultForAz: true }, { parent: this }).id);
      this.hasIpv6 = false;
    } else {
      const vpc = new aws.ec2.Vpc(`${name}-vpc`, {
        cidrBlock: VPC_CIDR,
        assignGeneratedIpv6CidrBlock: true,
        enableDnsSupport: true,
        enableDnsHostnames: true,
        tags: { ...tags, Name: `${name}-vpc` },
      }, { parent: this });
      const gateway = new aws.ec2.InternetGateway(`${name}-igw`, { vpcId: vpc.id, tags: { ...tags, Name: `${name}-igw` } }, { parent: this });
      const routes = new aws.ec2.RouteTable(`${name}-public`, {
        vpcId: vpc.id,
        routes: [
          { cidrBlock: '0.0.0.0/0', gatewayId: gateway.id },
          { ipv6CidrBlock: '::/0', gatewayId: gateway.id },
        ],
        tags: { ...tags, Name: `${name}-public` },
      }, { parent: this });
      this.vpcId = vpc.id;
      this.subnetIds = zones.map((zone, i) => {
        const subnet = new aws.ec2.Subnet(`${name}-public-${i}`, {
          vpcId: vpc.id,
          availabilityZone: zone,
          cidrBlock: `10.42.${i}.0/24`,
          ipv6CidrBlock: vpc.ipv6CidrBlock.apply((block) => ipv6Subnet64(block, i)),
          assignIpv6AddressOnCreation: true,
          // a public IPv4 address from launch, so first boot reaches the mirrors before the Elastic IP is attached
          mapPublicIpOnLaunch: true,
          tags: { ...tags, Name: `${name}-public-${i}` },
        }, { parent: this });
        new aws.ec2.RouteTableAssociation(`${name}-public-${i}`, { subnetId: subnet.id, routeTableId: routes.id }, { parent: this });
        return subnet.id;
      });
      this.hasIpv6 = true;
    }
    this.availabilityZones = zones;

    const admin = splitAdminCidrs(args.adminCidrs);
    const world = { cidrBlocks: ['0.0.0.0/0'], ipv6CidrBlocks: ['::/0'] };
    const ingress: aws.types.input.ec2.SecurityGroupIngress[] = [
      ...MAIL_PORTS.map((port) => ({ description: `mail (${port}) from anywhere`, protocol: 'tcp', fromPort: port, toPort: port, ...world })),
      {
        description: 'SSH from the admin networks only',
        protocol: 'tcp',
        fromPort: SSH_PORT,
        toPort: SSH_PORT,
        ...(admin.ipv4.length > 0 ? { cidrBlocks: admin.ipv4 } : {}),
        ...(admin.ipv6.length > 0 ? { ipv6CidrBlocks: admin.ipv6 } : {}),
      },
    ];
    if (args.http01) ingress.push({ description: 'ACME HTTP-01 challenges', protocol: 'tcp', fromPort: HTTP_PORT, toPort: HTTP_PORT, ...world });
    if (args.mtaStsPolicy === true) ingress.push({ description: 'MTA-STS policy over HTTPS', protocol: 'tcp', fromPort: HTTPS_PORT, toPort: HTTPS_PORT, ...world });

    const group = new aws.ec2.SecurityGroup(`${name}-sg`, {
      vpcId: this.vpcId,
      description: 'ownrelay: mail ports from anywhere, SSH from the admin networks',
      ingress,
      egress: [{ description: 'all egress (delivery to any MX, package mirrors)', protocol: '-1', fromPort: 0, toPort: 0, ...world }],
      tags: { ...tags, Name: `${name}-sg` },
    }, { parent: this });
    this.securityGroupId = group.id;

    this.registerOutputs({ vpcId: this.vpcId, subnetIds: this.subnetIds, securityGroupId: this.securityGroupId });
  }
}

/** The `index`-th /64 of an Amazon-provided /56 (index 0..255). */
export function ipv6Subnet64(block56: string, index: number): string {
  if (!Number.isInteger(index) || index < 0 || index > 255) throw new Error(`ipv6Subnet64: index ${index} is outside 0..255`);
  const [address, bits] = ipaddr.IPv6.parseCIDR(block56);
  if (bits !== 56) throw new Error(`ipv6Subnet64: expected a /56, got ${block56}`);
  const bytes = address.toByteArray();
  bytes[7] = index;
  for (let i = 8; i < 16; i++) bytes[i] = 0;
  return `${ipaddr.fromByteArray(bytes).toString()}/64`;
}
