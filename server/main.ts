/**
 * The `ownrelay` command. `run` starts the relay (on the embedded default config
 * when no --config is given; SIGHUP reloads the config file); `check-config` (alias
 * of `config check`) validates a file with the same schema and messages the relay
 * uses; `hash-password` makes a users[].passwordHash; `tls-report` prints a day's
 * RFC 8460 TLS report for a destination domain; `doctor` checks that the server is
 * ready to send for a domain (server/doctor/). The administration commands
 * (queue, users, config check, reload, status) live in cli/admin-commands.ts, and
 * `logs`, which reads the relay's log, in cli/logs-command.ts.
 */
// file fsyncs run on libuv's thread pool; concurrent sessions need more than 4 threads
process.env.UV_THREADPOOL_SIZE ??= '16';

import { Command } from 'commander';
import { ConfigError, defaultConfig, loadConfigFile } from './config/load';
import { createLogger } from './log/logger';
import { Relay } from './relay';
import { hashPassword } from './stages/password';
import { RelayConfigSchema } from './config/schema';
import { z } from 'zod';
import { previousUtcDay, tlsReportDir, tlsReportForDay } from './delivery/tls-report';
import { addDoctorCommand } from './doctor/command';
import { checkConfigFile, registerAdminCommands, EXIT_NOT_RUNNING } from './cli/admin-commands';
import { givenConfigPath } from './cli/config-option';
import { registerLogsCommand } from './cli/logs-command';
import { AdminRequestFailed, RelayNotRunning } from './admin/admin-client';

const program = new Command('ownrelay').description('a dedicated, durable SMTP relay').showHelpAfterError();

program
  .command('run', { isDefault: true })
  .description('run the relay')
  .option('-c, --config <file>', 'YAML config file (default: the embedded development config)')
  .action(async (options: { config?: string }, command: Command) => {
    const configPath = givenConfigPath(options, command);
    const config = configPath ? loadConfigFile(configPath) : defaultConfig();
    const logger = createLogger(config.log.level);
    if (!configPath) logger.info({ event: 'config', source: 'embedded default' }, 'no --config given: running the embedded default config (loopback only)');
    // reload: re-read the config file; a refusal is logged and the running config kept.
    // Every signal handler is registered before the start: an early SIGHUP cannot end
    // the process, and a SIGTERM during the start stops the relay gracefully once it
    // has started (sessions may already be in DATA on the first listener).
    let relay: Relay | undefined;
    let stopSignal: string | undefined;
    process.on('SIGHUP', () => {
      if (!relay) return logger.warn({ event: 'signal', signal: 'SIGHUP' }, 'received SIGHUP while starting: ignored');
      logger.info({ event: 'signal', signal: 'SIGHUP' }, 'received SIGHUP: reloading the config');
      relay.reload().catch(() => undefined);
    });
    const stop = (signal: string) => {
      if (stopSignal) return;
      stopSignal = signal;
      logger.info({ event: 'signal', signal }, relay ? `received ${signal}` : `received ${signal} while starting: stopping once started`);
      if (relay) stopRelay(relay);
    };
    const stopRelay = (running: Relay) =>
      running.stop().then(
        () => logger.flush(() => process.exit(0)),
        (err: unknown) => {
          logger.error({ event: 'stop-error', err: String(err) }, 'error while stopping');
          logger.flush(() => process.exit(1));
        },
      );
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    relay = await Relay.start(config, logger, configPath ? { configPath } : {});
    if (stopSignal) stopRelay(relay);
  });

program
  .command('check-config')
  .description('validate a config file; exit code 0 when it is valid (same as `config check`)')
  .argument('<file>', 'YAML config file')
  .action(checkConfigFile);

program
  .command('hash-password')
  .description('read a password from standard input and print its hash for users[].passwordHash')
  .action(async () => {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    const password = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
    if (!password) throw new Error('no password on standard input');
    process.stdout.write(`${await hashPassword(password)}\n`);
  });

program
  .command('tls-report')
  .description('print the RFC 8460 TLS report (JSON) of one destination domain for one UTC day')
  .option('-c, --config <file>', 'YAML config file (default: the embedded development config)')
  .requiredOption('-d, --domain <domain>', 'the policy domain, e.g. example.com')
  .option('--day <YYYY-MM-DD>', 'the UTC day (default: yesterday)')
  .option('--organization <name>', 'organization-name of the report (default: the hostname setting)')
  .option('--contact <address>', 'contact-info of the report (default: postmaster@<hostname>)')
  .action(async (options: { config?: string; domain: string; day?: string; organization?: string; contact?: string }, command: Command) => {
    const configPath = givenConfigPath(options, command);
    const config = configPath ? loadConfigFile(configPath) : defaultConfig();
    const day = options.day ?? previousUtcDay();
    const dir = tlsReportDir(config);
    const meta = { organizationName: options.organization ?? config.hostname, contactInfo: options.contact ?? `postmaster@${config.hostname}` };
    const report = await tlsReportForDay(dir, day, options.domain, meta);
    if (!report) throw new Error(`no TLS sessions to ${options.domain} were recorded on ${day} (in ${dir})`);
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  });

program
  .command('config-schema')
  .description('print the JSON Schema of the config file (for editor completion)')
  .action(() => {
    process.stdout.write(`${JSON.stringify(z.toJSONSchema(RelayConfigSchema, { io: 'input' }), null, 2)}\n`);
  });

// The administration commands print to a terminal or a pipe: a reader that stops
// early (`ownrelay logs | head`) ends the command quietly. Not for `run`, whose
// standard output is its log.
program.hook('preAction', (_program, command) => {
  if (command.name() === 'run') return;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
});

addDoctorCommand(program);
registerAdminCommands(program);
registerLogsCommand(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`${err.message}\n`);
    process.exit(2);
  }
  if (err instanceof RelayNotRunning) {
    process.stderr.write(`ownrelay: ${err.message}\n`);
    process.exit(EXIT_NOT_RUNNING);
  }
  if (err instanceof AdminRequestFailed) {
    process.stderr.write(`ownrelay: refused by the relay: ${err.message}\n`);
    process.exit(1);
  }
  process.stderr.write(`ownrelay: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
