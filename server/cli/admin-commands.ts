/**
 * The administration commands of `ownrelay`: queue, users, config check, reload,
 * status. Global options: --config FILE (the relay's config: where the admin
 * socket and the spool are, and the file `users` edits) and --socket PATH.
 * Without either, the installed config file is used, and without that the
 * embedded default config (a relay started by `npm start` in this directory).
 *
 * Queue changes, reload and status talk to the running relay over its admin
 * socket. `queue list|show|summary` read the spool directly (read-only) when the
 * relay is not running, and say so on stderr. Exit codes: 0 done, 1 refused or
 * failed, 2 invalid config, 3 the relay is not running.
 */
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { ConfigError, defaultConfig, loadConfigFile } from '../config/load';
import type { RelayConfig } from '../config/schema';
import { adminRequest, RelayNotRunning } from '../admin/admin-client';
import { adminSocketPath, filterOf, type RelayStatus } from '../admin/admin-api';
import type { ActionResult } from '../admin/queue-control';
import { QueueView, type QueueDetail, type QueueItem, type QueueSummary } from '../admin/queue-view';
import type { AdminOp } from '../admin/protocol';
import { QUEUE_STATES, type QueueState } from '../queue/spool';
import type { ReloadResult } from '../relay';
import { hashPassword } from '../stages/password';
import { formatActions, formatQueueDetail, formatQueueList, formatStatus, formatSummary, parseAge, table } from './format';
import { readNewPassword } from './password-input';
import { UsersFile } from './users-file';

/** Where the deploy installs the config; used when neither --config nor --socket is given. */
export const INSTALLED_CONFIG_PATH = '/etc/ownrelay/ownrelay.yaml';

export const EXIT_NOT_RUNNING = 3;

interface GlobalOptions {
  config?: string;
  socket?: string;
}

class Target {
  private loaded?: RelayConfig;
  constructor(private readonly options: GlobalOptions) {}

  /** --config, else the installed file when it exists. */
  private get configFile(): string | undefined {
    if (this.options.config) return this.options.config;
    return existsSync(INSTALLED_CONFIG_PATH) ? INSTALLED_CONFIG_PATH : undefined;
  }

  /** The file a command edits (users): there must be one. */
  get configPath(): string {
    const file = this.configFile;
    if (file === undefined) throw new Error(`no config file: give --config FILE (${INSTALLED_CONFIG_PATH} does not exist)`);
    return file;
  }

  /**
   * The running relay's config: from the config file, or without one the
   * embedded default that `ownrelay run` (and `npm start`) use, whose socket and
   * spool are under ./var/ of the current directory.
   */
  config(): RelayConfig {
    if (!this.loaded) {
      const file = this.configFile;
      this.loaded = file === undefined ? defaultConfig() : loadConfigFile(file);
    }
    return this.loaded;
  }

  /**
   * The socket is found even when the file is invalid now (e.g. edited, then
   * `ownrelay reload` to hear the relay refuse it): admin.socket and paths.state
   * are then read from the YAML as it is.
   */
  get socket(): string {
    if (this.options.socket) return this.options.socket;
    try {
      return adminSocketPath(this.config());
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      const raw = readRawYaml(this.configPath);
      return adminSocketPath({ admin: { socket: stringAt(raw, 'admin', 'socket') }, paths: { state: stringAt(raw, 'paths', 'state') ?? './var/state' } } as RelayConfig);
    }
  }

  request<T>(op: AdminOp, args: Record<string, unknown> = {}): Promise<T> {
    return adminRequest<T>(this.socket, op, args);
  }

  /** Asks the relay; when it is not running, reads the spool instead (read-only) and says so. */
  async read<T>(op: AdminOp, args: Record<string, unknown>, offline: (view: QueueView) => Promise<T>): Promise<T> {
    try {
      return await this.request<T>(op, args);
    } catch (err) {
      if (!(err instanceof RelayNotRunning)) throw err;
      const spool = this.config().paths.spool;
      // without a config file, only a spool the default config's relay left here
      if (this.configFile === undefined && !existsSync(spool)) throw err;
      process.stderr.write(`note: the relay is not running; reading the spool ${spool} directly (read-only)\n`);
      return offline(new QueueView(spool));
    }
  }
}

function readRawYaml(path: string): unknown {
  try {
    return parseYaml(readFileSync(path, 'utf8')) as unknown;
  } catch {
    return undefined;
  }
}

function stringAt(value: unknown, section: string, key: string): string | undefined {
  const inner = value && typeof value === 'object' ? (value as Record<string, unknown>)[section] : undefined;
  const found = inner && typeof inner === 'object' ? (inner as Record<string, unknown>)[key] : undefined;
  return typeof found === 'string' ? found : undefined;
}

function print(json: boolean | undefined, value: unknown, human: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : human());
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

interface SelectionOptions {
  sender?: string;
  domain?: string;
  minAge?: string;
  state?: string;
  all?: boolean;
}

/** queue ids per request: well under the admin socket's request size */
const IDS_PER_REQUEST = 10_000;

/**
 * The requests that carry out a steering command: ids given (from standard input
 * with `-`, in batches), or one filter. Ids and a filter together, or neither
 * (without --all), are refused, so a mistyped command never selects everything.
 */
async function selection(ids: string[], o: SelectionOptions): Promise<Record<string, unknown>[]> {
  const filter = { sender: o.sender, recipientDomain: o.domain, minAgeSeconds: o.minAge !== undefined ? parseAge(o.minAge) : undefined, state: o.state };
  const filtered = Object.values(filter).some((value) => value !== undefined);
  if (ids.length > 0) {
    if (filtered || o.all) throw new Error('give queue ids or a filter (--sender, --domain, --min-age, --state, --all), not both');
    const given = ids.includes('-') ? [...ids.filter((id) => id !== '-'), ...(await readStdin()).split(/\s+/).filter(Boolean)] : ids;
    const batches: Record<string, unknown>[] = [];
    for (let i = 0; i < given.length; i += IDS_PER_REQUEST) batches.push({ ids: given.slice(i, i + IDS_PER_REQUEST) });
    return batches;
  }
  if (!filtered && !o.all) throw new Error('name the messages: queue ids, - to read them from standard input, a filter (--sender, --domain, --min-age, --state) or --all');
  return [{ select: filter }];
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export function registerAdminCommands(program: Command): void {
  program.option('--config <file>', `the relay's config file (default ${INSTALLED_CONFIG_PATH}, or where there is none the embedded default config)`).option('--socket <path>', 'the admin socket (default: admin.socket of the config, or <paths.state>/admin.sock)');
  const target = () => new Target(program.opts<GlobalOptions>());

  const queue = program.command('queue').description('look at and steer the mail queue');
  queue
    .command('list')
    .description('list queued messages (like postqueue -p)')
    .option('--sender <address>', 'only this envelope sender (or @domain)')
    .option('--domain <domain>', 'only messages with pending recipients at this domain')
    .option('--min-age <age>', 'only messages at least this old (90s, 30m, 4h, 2d)')
    .option('--state <state>', 'only this state: incoming, active, deferred, hold, corrupt')
    .option('--json', 'machine-readable output')
    .action(async (o: { sender?: string; domain?: string; minAge?: string; state?: string; json?: boolean }) => {
      const args = { sender: o.sender, recipientDomain: o.domain, minAgeSeconds: o.minAge !== undefined ? parseAge(o.minAge) : undefined, state: o.state };
      const items = await target().read<QueueItem[]>('queue.list', args, (view) => view.list(filterOf(args)));
      print(o.json, items, () => formatQueueList(items, Object.values(args).some((value) => value !== undefined)));
    });
  queue
    .command('show')
    .description('one message: envelope, headers, each recipient\'s status and last error')
    .argument('<id>', 'queue id')
    .option('--json', 'machine-readable output')
    .action(async (id: string, o: { json?: boolean }) => {
      const detail = await target().read<QueueDetail>('queue.show', { id }, async (view) => {
        const found = await view.show(id);
        if (!found) throw new Error(`${id}: not in the queue`);
        return found;
      });
      print(o.json, detail, () => formatQueueDetail(detail));
    });
  queue
    .command('summary')
    .description('messages by destination domain and age in minutes (like qshape)')
    .option('--state <states>', 'comma-separated states (default incoming,active,deferred,hold)')
    .option('--json', 'machine-readable output')
    .action(async (o: { state?: string; json?: boolean }) => {
      const states = o.state?.split(',').map((s) => s.trim());
      for (const state of states ?? []) {
        if (!(QUEUE_STATES as readonly string[]).includes(state)) throw new Error(`unknown state ${JSON.stringify(state)}; expected one of ${QUEUE_STATES.join(', ')}`);
      }
      const summary = await target().read<QueueSummary>('queue.summary', { states }, (view) => view.summary(states as QueueState[] | undefined));
      print(o.json, summary, () => formatSummary(summary));
    });
  const actions: Array<[string, string]> = [
    ['hold', 'keep messages aside: never delivered until released'],
    ['release', 'put held messages back in the queue, due now'],
    ['retry', 'try deferred messages again now'],
    ['delete', 'delete messages (never one being delivered); each deletion is logged'],
  ];
  for (const [name, description] of actions) {
    queue
      .command(name)
      .description(description)
      .argument('[ids...]', 'queue ids; - reads them from standard input (as `postsuper -d -` does)')
      .option('--sender <address>', 'instead of ids: the messages of this envelope sender (or @domain)')
      .option('--domain <domain>', 'instead of ids: the messages with pending recipients at this domain')
      .option('--min-age <age>', 'instead of ids: the messages at least this old (90s, 30m, 4h, 2d)')
      .option('--state <state>', 'instead of ids: the messages in this state')
      .option('--all', 'instead of ids: every message the action applies to')
      .option('--json', 'machine-readable output')
      .action(async (ids: string[], o: SelectionOptions & { json?: boolean }) => {
        const results: ActionResult[] = [];
        for (const args of await selection(ids, o)) results.push(...(await target().request<ActionResult[]>(`queue.${name}` as AdminOp, args)));
        print(o.json, results, () => (results.length === 0 ? 'no queued message matches\n' : formatActions(name, results)));
        if (results.some((r) => !r.ok)) process.exitCode = 1;
      });
  }
  queue
    .command('flush')
    .description('try every deferred message again now')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const result = await target().request<{ count: number }>('queue.flush');
      print(o.json, result, () => `${result.count} deferred message(s) due now\n`);
    });

  const users = program.command('users').description('SMTP AUTH users in the config file (hashes only); apply with `ownrelay reload`');
  const reloadHint = async (reload: boolean | undefined): Promise<string> => {
    if (!reload) return 'run `ownrelay reload` to apply it\n';
    await target().request<ReloadResult>('reload');
    return 'relay reloaded\n';
  };
  /** Loads the config's users, applies `change` (which says what it did), saves the file with its comments, and reports. */
  const editUsers = async (reload: boolean | undefined, change: (file: UsersFile) => Promise<string> | string): Promise<void> => {
    const file = UsersFile.load(target().configPath);
    const done = await change(file);
    await file.save();
    process.stdout.write(`${done} ${file.path}; ${await reloadHint(reload)}`);
  };
  users
    .command('list')
    .description('list users and the senders each may use')
    .option('--json', 'machine-readable output')
    .action((o: { json?: boolean }) => {
      const list = UsersFile.load(target().configPath).list();
      print(o.json, list, () => (list.length === 0 ? 'no users\n' : table(['USER', 'SENDERS'], list.map((u) => [u.name, u.senders.join(', ')]))));
    });
  users
    .command('add')
    .description('add a user; the password is read from standard input or a prompt')
    .argument('<name>', 'user name for SMTP AUTH')
    .requiredOption('--sender <address>', 'an envelope sender it may use: app@example.org or @example.org (repeatable)', collect)
    .option('--reload', 'reload the running relay afterwards')
    .action((name: string, o: { sender: string[]; reload?: boolean }) =>
      editUsers(o.reload, async (file) => {
        file.add(name, await hashPassword(await readNewPassword()), o.sender);
        return `user ${name} added to`;
      }),
    );
  users
    .command('passwd')
    .description('set a new password; read from standard input or a prompt')
    .argument('<name>', 'user name')
    .option('--reload', 'reload the running relay afterwards')
    .action((name: string, o: { reload?: boolean }) =>
      editUsers(o.reload, async (file) => {
        if (!file.has(name)) throw new Error(`no user ${name} in ${file.path}`);
        file.setPassword(name, await hashPassword(await readNewPassword()));
        return `password of ${name} changed in`;
      }),
    );
  users
    .command('remove')
    .description('remove a user')
    .argument('<name>', 'user name')
    .option('--reload', 'reload the running relay afterwards')
    .action((name: string, o: { reload?: boolean }) =>
      editUsers(o.reload, (file) => {
        file.remove(name);
        return `user ${name} removed from`;
      }),
    );

  program
    .command('config')
    .description('config file tools')
    .command('check')
    .description('validate a config file with the relay\'s schema; exit code 0 when it is valid')
    .argument('<file>', 'YAML config file')
    .action(checkConfigFile);

  program
    .command('reload')
    .description('make the running relay re-read its config file (an invalid file is refused and the running config kept)')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const result = await target().request<ReloadResult>('reload');
      print(o.json, result, () =>
        [
          'reloaded',
          ...result.replacedListeners.map((l) => `replaced listener ${l} (its open sessions finish on the old one)`),
          ...(result.needsRestart.length > 0 ? [`changed but applied only after a restart: ${result.needsRestart.join(', ')}`] : []),
        ].join('\n') + '\n',
      );
    });

  program
    .command('status')
    .description('version, uptime, listeners, queue, certificate and recent delivery errors of the running relay')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const status = await target().request<RelayStatus>('status');
      print(o.json, status, () => formatStatus(status));
    });
}

/** `config check FILE` and `check-config FILE`: throws the ConfigError, or says the file is valid. */
export function checkConfigFile(file: string): void {
  loadConfigFile(file);
  process.stdout.write(`${file}: valid\n`);
}
