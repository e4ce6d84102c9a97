/**
 * `ownrelay doctor <domain>`: checks that the server is ready to send for a
 * domain and exits non-zero when it is not, so a deploy can be gated on it.
 * Exit codes: 0 every check passed or warned, 1 a check failed, 2 bad config
 * (from the command's common error handling), other errors 1 with a message.
 * The checks load only when the command runs: `ownrelay run` never pays for them.
 */
import { existsSync } from 'node:fs';
import { Command, InvalidArgumentError } from 'commander';
import { givenConfigPath } from '../cli/config-option';
import { loadConfigFile } from '../config/load';
import { CHECK_IDS, DEFAULT_TIMEOUT_MS } from './types';

/** where the deploy puts the relay config on a server */
const SERVER_CONFIG_PATH = '/etc/ownrelay/ownrelay.yaml';

interface DoctorCommandOptions {
  json?: boolean;
  config?: string;
  ip: string[];
  dnsServer: string[];
  smtpPort: number;
  connectTo: string[];
  timeout: number;
  skip: string[];
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

function positiveInteger(name: string, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1 || n > max) throw new InvalidArgumentError(`${name}: expected a whole number from 1 to ${max}`);
    return n;
  };
}

export function addDoctorCommand(program: Command): void {
  program
    .command('doctor')
    .description('check that the server is ready to send for a domain (DNS, reverse DNS, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, certificate, port 25, blocklists, open relay); exit code 1 when a check fails')
    .argument('<domain>', 'the mail domain to check')
    .option('--json', 'print the report as JSON')
    .option('-c, --config <file>', `the relay config (default: ${SERVER_CONFIG_PATH})`)
    .option('--ip <address>', 'a public address of the server (repeatable; default: the config\'s doctor.publicAddresses, else the public addresses of this host\'s interfaces)', collect, [])
    .option('--dns-server <host:port>', 'resolver to ask (repeatable; default: the config\'s dns.servers, else the system\'s)', collect, [])
    .option('--smtp-port <port>', 'the port senders reach the server on', positiveInteger('--smtp-port', 65535), 25)
    .option('--connect-to <HOST:PORT:ADDRESS:PORT>', 'send connections for HOST:PORT to ADDRESS:PORT, TLS still checked against HOST (repeatable)', collect, [])
    .option('--timeout <ms>', 'per connection and DNS query', positiveInteger('--timeout', 600_000), DEFAULT_TIMEOUT_MS)
    .option('--skip <check>', `a check not to run (repeatable): ${CHECK_IDS.join(', ')}`, collect, [])
    .action(async (domain: string, options: DoctorCommandOptions, command: Command) => {
      const given = givenConfigPath(options, command);
      const configPath = given ?? SERVER_CONFIG_PATH;
      if (!given && !existsSync(configPath)) throw new Error(`no --config given and ${SERVER_CONFIG_PATH} does not exist`);
      const config = loadConfigFile(configPath);
      const { publicInterfaceAddresses } = require('./identity') as typeof import('./identity');
      const { renderReport } = require('./render') as typeof import('./render');
      const { runDoctor } = require('./runner') as typeof import('./runner');
      // --ip, else the addresses the config names (the infra writes the Elastic IP there), else the interfaces'
      const ips = options.ip.length > 0 ? options.ip : config.doctor.publicAddresses.length > 0 ? config.doctor.publicAddresses : publicInterfaceAddresses();
      if (ips.length === 0) {
        throw new Error('no public address on this host\'s interfaces (behind NAT, such as an AWS Elastic IP, the public address is not on the host): pass it with --ip, or set doctor.publicAddresses in the config');
      }
      const report = await runDoctor({
        domain,
        config,
        ips,
        ...(options.dnsServer.length > 0 ? { dnsServers: options.dnsServer } : {}),
        smtpPort: options.smtpPort,
        timeoutMs: options.timeout,
        connectTo: options.connectTo,
        skip: options.skip,
      });
      process.stdout.write(options.json ? `${JSON.stringify(report, null, 2)}\n` : renderReport(report));
      process.exitCode = report.ok ? 0 : 1;
    });
}
