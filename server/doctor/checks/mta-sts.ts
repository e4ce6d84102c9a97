/**
 * MTA-STS (RFC 8461): the _mta-sts TXT record, the policy served over HTTPS at
 * https://mta-sts.<domain>/.well-known/mta-sts.txt (valid certificate, no
 * redirects), and a policy whose mx: patterns cover every MX host of the domain:
 * a sender that honours an enforce policy refuses to deliver to an MX it does
 * not list.
 */
import { renderMtaStsPolicy, type MtaStsMode } from '../../../infra/render/dns-records';
import { publish } from '../fixes';
import type { Check, DoctorContext } from '../types';

const DEFAULT_MAX_AGE_SECONDS = 604_800;

export interface MtaStsPolicy {
  version: string | undefined;
  mode: string | undefined;
  maxAge: string | undefined;
  mx: string[];
}

export const mtaStsCheck: Check = {
  id: 'mta-sts',
  title: 'MTA-STS record and policy consistent with the MX',
  async run(context) {
    const { domain, dns, net } = context;
    const mxHosts = await currentMxHosts(context);
    const name = `_mta-sts.${domain}`;
    const url = `https://mta-sts.${domain}/.well-known/mta-sts.txt`;
    const txt = await dns.txt(name);
    if (txt.kind === 'error') return { status: 'fail', detail: txt.message, fix: 'make sure the resolver answers; then run the doctor again' };
    const records = (txt.kind === 'records' ? txt.records : []).filter((r) => /^v=STSv1\s*(;|$)/.test(r));
    if (records.length !== 1) {
      return { status: 'fail', detail: records.length === 0 ? `no MTA-STS record at ${name}` : `${name} has ${records.length} MTA-STS records: senders ignore them all`, fix: policyFix(context, 'testing', DEFAULT_MAX_AGE_SECONDS, mxHosts, url) };
    }
    const id = /(?:^|;)\s*id=([a-zA-Z0-9]{1,32})\s*(;|$)/.exec(records[0]!)?.[1];
    if (!id) return { status: 'fail', detail: `${name}: ${records[0]}\ninvalid: no id= of 1 to 32 letters and digits`, fix: policyFix(context, 'testing', DEFAULT_MAX_AGE_SECONDS, mxHosts, url) };

    let response: { status: number; contentType: string; body: string };
    try {
      response = await net.httpsGet(url);
    } catch (err) {
      return { status: 'fail', detail: `${name}: ${records[0]}\nthe policy cannot be fetched: ${(err as Error).message}`, fix: `serve the policy at ${url} with a certificate valid for mta-sts.${domain}; mta-sts.${domain} must resolve to the server that serves it\n${policyFix(context, 'testing', DEFAULT_MAX_AGE_SECONDS, mxHosts, url)}` };
    }
    if (response.status !== 200) return { status: 'fail', detail: `${url} answered HTTP ${response.status} (RFC 8461 wants 200, no redirects)`, fix: policyFix(context, 'testing', DEFAULT_MAX_AGE_SECONDS, mxHosts, url) };
    const policy = parsePolicy(response.body);
    const maxAge = Number(policy.maxAge);
    const problems: string[] = [];
    if (!/^text\/plain\b/i.test(response.contentType)) problems.push(`Content-Type is "${response.contentType}", RFC 8461 wants text/plain`);
    if (policy.version !== 'STSv1') problems.push('the policy has no "version: STSv1" line');
    if (!['enforce', 'testing', 'none'].includes(policy.mode ?? '')) problems.push(`mode is ${policy.mode ?? 'missing'}; expected enforce, testing or none`);
    if (!(Number.isInteger(maxAge) && maxAge >= 0 && maxAge <= 31_557_600)) problems.push(`max_age is ${policy.maxAge ?? 'missing'}; expected seconds, at most 31557600`);
    const uncovered = mxHosts.filter((host) => !policy.mx.some((pattern) => mxMatches(pattern, host)));
    if (policy.mode !== 'none' && uncovered.length) problems.push(`the policy's mx: lines (${policy.mx.join(', ') || 'none'}) do not cover ${uncovered.join(', ')}: senders that enforce it will not deliver there`);
    const mode: MtaStsMode = policy.mode === 'enforce' ? 'enforce' : 'testing';
    const facts = [`${name}: ${records[0]}`, `${url}: mode ${policy.mode ?? '?'}, mx ${policy.mx.join(', ') || 'none'}, max_age ${policy.maxAge ?? '?'}`];
    if (problems.length) return { status: 'fail', detail: [...problems, ...facts].join('\n'), fix: policyFix(context, mode, Number.isInteger(maxAge) && maxAge > 0 ? maxAge : DEFAULT_MAX_AGE_SECONDS, mxHosts, url) };
    if (policy.mode === 'none') return { status: 'warn', detail: ['mode none: the policy is being withdrawn, senders do not use it', ...facts].join('\n'), fix: 'publish mode: testing (then enforce) once the server\'s certificate is valid' };
    return { status: 'pass', detail: facts.join('\n') };
  },
};

async function currentMxHosts({ domain, hostname, dns }: DoctorContext): Promise<string[]> {
  const mx = await dns.mx(domain);
  const hosts = mx.kind === 'records' ? mx.records.map((r) => r.exchange).filter((h) => h !== '') : [];
  return hosts.length > 0 ? [...new Set(hosts)] : [hostname];
}

function policyFix({ domain }: DoctorContext, mode: MtaStsMode, maxAgeSeconds: number, mxHosts: string[], url: string): string {
  const policy = renderMtaStsPolicy({ mode, maxAgeSeconds, mxHosts });
  return [
    `serve this policy at ${url} (Content-Type: text/plain):`,
    ...policy.text.trimEnd().split(/\r\n/).map((line) => `  ${line}`),
    publish('and publish its id (change it whenever the policy changes)', [{ name: `_mta-sts.${domain}`, type: 'TXT', values: [`v=STSv1; id=${policy.id}`] }]),
  ].join('\n');
}

/** "key: value" lines (CRLF or LF); repeated mx lines collected */
export function parsePolicy(text: string): MtaStsPolicy {
  const policy: MtaStsPolicy = { version: undefined, mode: undefined, maxAge: undefined, mx: [] };
  for (const line of text.split(/\r?\n/)) {
    const match = /^([a-z_]+):\s*(.*?)\s*$/.exec(line);
    if (!match) continue;
    const [, key, value] = match as unknown as [string, string, string];
    if (key === 'version') policy.version = value;
    else if (key === 'mode') policy.mode = value;
    else if (key === 'max_age') policy.maxAge = value;
    else if (key === 'mx') policy.mx.push(value.toLowerCase().replace(/\.$/, ''));
  }
  return policy;
}

/** RFC 8461 4.1: exact, or "*.example.org" matching exactly one more label on the left */
export function mxMatches(pattern: string, host: string): boolean {
  if (pattern.startsWith('*.')) {
    const suffix = pattern.slice(1);
    return host.endsWith(suffix) && !host.slice(0, -suffix.length).includes('.') && host.length > suffix.length;
  }
  return pattern === host;
}
