/**
 * dnsmasq as the authoritative DNS of the test's domains, serving exactly the
 * records given (DnsRecord[] as infra/render/dns-records.ts renders them): MX, A,
 * AAAA and TXT (long TXT values split into 255-byte strings with splitTxt). No
 * upstream, no /etc/hosts: any other name gets REFUSED or NXDOMAIN. Listens on one
 * address, port 53, UDP and TCP. Needs the dnsmasq binary (dnsmasq-base).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { splitTxt, type DnsRecord } from '../../infra/render/dns-records';
import { waitUntil } from '../helpers/postfix';

export interface Dnsmasq {
  log(): string;
  stop(): Promise<void>;
}

function quote(text: string): string {
  if (/["\\\n]/.test(text)) throw new Error(`dnsmasq: cannot serve TXT text with quotes or backslashes: ${text}`);
  return `"${text}"`;
}

export function dnsmasqConfig(records: readonly DnsRecord[], listen: string): string {
  const lines = ['no-resolv', 'no-hosts', 'no-poll', 'bind-interfaces', `listen-address=${listen}`, 'port=53', 'log-queries', 'auth-ttl=60'];
  for (const record of records) {
    for (const value of record.values) {
      if (record.type === 'A' || record.type === 'AAAA') lines.push(`host-record=${record.name},${value}`);
      else if (record.type === 'MX') {
        const [preference, exchange] = value.split(' ');
        lines.push(`mx-host=${record.name},${exchange},${preference}`);
      } else lines.push(`txt-record=${record.name},${splitTxt(value).map(quote).join(',')}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

export async function startDnsmasq(records: readonly DnsRecord[], listen: string, dir: string): Promise<Dnsmasq> {
  const conf = join(dir, 'dnsmasq.conf');
  writeFileSync(conf, dnsmasqConfig(records, listen));
  let output = '';
  const child: ChildProcess = spawn('dnsmasq', ['--keep-in-foreground', '--log-facility=-', `--conf-file=${conf}`, '--user=root', '--pid-file='], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  let exited = false;
  child.on('exit', () => (exited = true));
  await waitUntil(() => exited || /started, version/.test(output), 10_000, () => `dnsmasq did not start:\n${output}`);
  if (exited) throw new Error(`dnsmasq exited at start:\n${output}`);
  return {
    log: () => output,
    stop: () =>
      new Promise((resolve) => {
        if (exited) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}
