/**
 * The IAM policy a relay host needs for ACME DNS-01 through Route 53: change only
 * TXT records named `_acme-challenge.*` in the customer's hosted zone, follow its
 * changes until they are in sync, and find the zone by name. Pure; the host
 * component attaches it to the instance role when the relay uses DNS-01.
 */
export function acmeDns01Policy(zoneId: string): Record<string, unknown> {
  const id = zoneId.replace(/^\/?hostedzone\//, '');
  return {
    Version: '2012-10-17',
    Statement: [
      {
        Sid: 'AcmeChallengeRecordsOnly',
        Effect: 'Allow',
        Action: 'route53:ChangeResourceRecordSets',
        Resource: `arn:aws:route53:::hostedzone/${id}`,
        Condition: {
          'ForAllValues:StringLike': { 'route53:ChangeResourceRecordSetsNormalizedRecordNames': ['_acme-challenge.*'] },
          'ForAllValues:StringEquals': { 'route53:ChangeResourceRecordSetsRecordTypes': ['TXT'] },
        },
      },
      { Sid: 'FollowChanges', Effect: 'Allow', Action: 'route53:GetChange', Resource: 'arn:aws:route53:::change/*' },
      { Sid: 'FindZone', Effect: 'Allow', Action: 'route53:ListHostedZonesByName', Resource: '*' },
    ],
  };
}
