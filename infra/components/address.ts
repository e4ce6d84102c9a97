/**
 * A node's public identity: an Elastic IP attached to its instance, the forward
 * records of its host name, and reverse DNS (PTR) set to that same name.
 *
 * Contract: PTR name = A name = the node's host name (forward-confirmed reverse
 * DNS, which the big mailbox providers check). AWS refuses to set the PTR until the
 * A record resolves to the address, so the `EipDomainName` depends on the A record
 * and exists only when this component creates that record (a Route 53 zone is
 * given). Without a zone (manual DNS), the PTR is a manual step: see
 * `ptrCommand`. The Elastic IP outlives the instance: replacing the host keeps the
 * address and its reputation.
 */
import * as aws from '@pulumi/aws';
import * as pulumi from '@pulumi/pulumi';
import { DEFAULT_TTL_SECONDS } from '../render/dns-records';

export interface RelayAddressArgs {
  instanceId: pulumi.Input<string>;
  /** The node's fully qualified host name. */
  hostname: string;
  /** The Route 53 zone for the A/AAAA records; omit in manual DNS mode (then no PTR either). */
  zoneId?: pulumi.Input<string>;
  /** The instance's IPv6 address, for the AAAA record; omit when the node has none. */
  ipv6Address?: pulumi.Input<string | undefined>;
  ttlSeconds?: number;
  tags?: Record<string, string>;
}

export class RelayAddress extends pulumi.ComponentResource {
  readonly publicIp: pulumi.Output<string>;
  readonly allocationId: pulumi.Output<string>;
  readonly hostname: string;
  /** The PTR name AWS publishes for the address; undefined until it is set (manual DNS mode). */
  readonly ptrName: pulumi.Output<string | undefined>;

  constructor(name: string, args: RelayAddressArgs, opts?: pulumi.ComponentResourceOptions) {
    super('ownrelay:infra:RelayAddress', name, {}, opts);
    this.hostname = args.hostname;
    const tags = args.tags ?? {};
    const eip = new aws.ec2.Eip(`${name}-eip`, { domain: 'vpc', tags: { ...tags, Name: args.hostname } }, { parent: this });
    new aws.ec2.EipAssociation(`${name}-eip`, { allocationId: eip.allocationId, instanceId: args.instanceId }, { parent: this });
    this.publicIp = eip.publicIp;
    this.allocationId = eip.allocationId;

    if (args.zoneId !== undefined) {
      const ttl = args.ttlSeconds ?? DEFAULT_TTL_SECONDS;
      const a = new aws.route53.Record(`${name}-a`, { zoneId: args.zoneId, name: args.hostname, type: 'A', ttl, records: [eip.publicIp] }, { parent: this });
      if (args.ipv6Address !== undefined) {
        const ipv6 = pulumi.output(args.ipv6Address).apply((address) => {
          if (address === undefined) throw new Error(`${args.hostname}: the instance has no IPv6 address for its AAAA record`);
          return address;
        });
        new aws.route53.Record(`${name}-aaaa`, { zoneId: args.zoneId, name: args.hostname, type: 'AAAA', ttl, records: [ipv6] }, { parent: this });
      }
      const ptr = new aws.ec2.EipDomainName(`${name}-ptr`, { allocationId: eip.allocationId, domainName: args.hostname }, { parent: this, dependsOn: [a] });
      this.ptrName = ptr.ptrRecord.apply((name) => name.replace(/\.$/, ''));
    } else {
      this.ptrName = pulumi.output(undefined);
    }

    this.registerOutputs({ publicIp: this.publicIp, allocationId: this.allocationId, ptrName: this.ptrName });
  }

  /** The AWS CLI command that sets the PTR once the A record is published elsewhere (manual DNS mode). */
  ptrCommand(region: string): pulumi.Output<string> {
    return pulumi.interpolate`aws ec2 modify-address-attribute --region ${region} --allocation-id ${this.allocationId} --domain-name ${this.hostname}`;
  }
}
