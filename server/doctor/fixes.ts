/**
 * The records a fix asks for, in zone-file form, rendered by the same functions
 * the infra program publishes with (infra/render/dns-records.ts), so the doctor
 * and `pulumi up` never disagree about what a record should say.
 */
import { DEFAULT_TTL_SECONDS, renderZoneSnippet, type DnsRecord } from '../../infra/render/dns-records';

export function zoneLines(records: Array<Pick<DnsRecord, 'name' | 'type' | 'values'>>): string {
  return renderZoneSnippet(records.map((record) => ({ ...record, ttl: DEFAULT_TTL_SECONDS })))
    .trimEnd()
    .split('\n')
    .map((line) => `  ${line}`)
    .join('\n');
}

export function publish(what: string, records: Array<Pick<DnsRecord, 'name' | 'type' | 'values'>>): string {
  return `${what}:\n${zoneLines(records)}`;
}

export function ipv4s(ips: readonly string[]): string[] {
  return ips.filter((ip) => !ip.includes(':'));
}

export function ipv6s(ips: readonly string[]): string[] {
  return ips.filter((ip) => ip.includes(':'));
}
