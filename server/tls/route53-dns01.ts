/**
 * DNS-01 through Amazon Route 53 (AWS SDK v3).
 *
 * Contract: `publish` UPSERTs the TXT record `_acme-challenge.<name>` (TTL 60) in
 * the hosted zone and resolves only once Route 53 reports the change INSYNC (on
 * all its name servers); `withdraw` DELETEs the same record the same way. The
 * hosted zone is `hostedZoneId` when given, else the public zone whose name is the
 * longest suffix of the record name. Credentials and region come from the SDK's
 * default chain: on the server, the instance profile, whose policy (granted by
 * the infra program) allows changing only `_acme-challenge` TXT records.
 */
import {
  ChangeResourceRecordSetsCommand,
  ListHostedZonesByNameCommand,
  Route53Client,
  waitUntilResourceRecordSetsChanged,
} from '@aws-sdk/client-route-53';
import type { Logger } from '../log/logger';
import type { Dns01Provider } from './dns01';

/** how long a change may take to reach every Route 53 name server */
const MAX_WAIT_S = 300;

export class Route53Dns01Provider implements Dns01Provider {
  private readonly zones = new Map<string, string>();

  constructor(
    private readonly client: Route53Client,
    private readonly logger: Logger,
    private readonly hostedZoneId?: string,
  ) {}

  static create(settings: { hostedZoneId?: string | undefined }, logger: Logger): Route53Dns01Provider {
    // Route 53 is a global service; its API lives in us-east-1
    return new Route53Dns01Provider(new Route53Client({ region: process.env.AWS_REGION ?? 'us-east-1' }), logger, settings.hostedZoneId);
  }

  publish(recordName: string, value: string): Promise<void> {
    return this.change('UPSERT', recordName, value);
  }

  withdraw(recordName: string, value: string): Promise<void> {
    return this.change('DELETE', recordName, value);
  }

  private async change(action: 'UPSERT' | 'DELETE', recordName: string, value: string): Promise<void> {
    const zoneId = await this.zoneFor(recordName);
    const result = await this.client.send(
      new ChangeResourceRecordSetsCommand({
        HostedZoneId: zoneId,
        ChangeBatch: {
          Comment: `ownrelay ACME DNS-01 ${action === 'UPSERT' ? 'challenge' : 'clean-up'}`,
          Changes: [{ Action: action, ResourceRecordSet: { Name: recordName, Type: 'TXT', TTL: 60, ResourceRecords: [{ Value: JSON.stringify(value) }] } }],
        },
      }),
    );
    const changeId = result.ChangeInfo?.Id;
    if (!changeId) throw new Error(`Route 53 gave no change id for ${action} ${recordName}`);
    this.logger.info({ event: 'acme-dns01-change', action, record: recordName, zone: zoneId, change: changeId }, `Route 53: ${action} TXT ${recordName}`);
    await waitUntilResourceRecordSetsChanged({ client: this.client, maxWaitTime: MAX_WAIT_S, minDelay: 2, maxDelay: 10 }, { Id: changeId });
  }

  private async zoneFor(recordName: string): Promise<string> {
    if (this.hostedZoneId) return this.hostedZoneId;
    const labels = recordName.replace(/\.$/, '').toLowerCase().split('.');
    for (let i = 1; i < labels.length - 1; i++) {
      const name = `${labels.slice(i).join('.')}.`;
      const known = this.zones.get(name);
      if (known) return known;
      const listed = await this.client.send(new ListHostedZonesByNameCommand({ DNSName: name, MaxItems: 1 }));
      const zone = listed.HostedZones?.[0];
      if (zone?.Id && zone.Name?.toLowerCase() === name && !zone.Config?.PrivateZone) {
        this.zones.set(name, zone.Id);
        return zone.Id;
      }
    }
    throw new Error(`no public Route 53 hosted zone holds ${recordName}; set tls.acme.dns01.hostedZoneId`);
  }
}
