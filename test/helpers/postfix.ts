/**
 * Real Postfix programs as peers of the relay in tests and the benchmark:
 * private Postfix instances (a destination that stores mail in a Maildir, a
 * sender that relays everything to a next hop), `smtp-sink` (a fast discarding
 * SMTP server that counts messages) and `smtp-source` (a load generator).
 *
 * Contract:
 * - A private instance lives entirely in one temp directory: its own
 *   config_directory (main.cf, master.cf), queue_directory, data_directory and
 *   log file. It listens only on 127.0.0.1 on a port of its own, runs no
 *   chroot, and needs neither /etc/postfix/main.cf nor the system instance,
 *   which it never starts, stops or reads the queue of. Every `postfix` command
 *   it runs carries `-c <its config_directory>`.
 * - Everything needs root (Postfix's master runs as root and drops to the
 *   `postfix` user) and the Debian packages `postfix` and `openssl`.
 * - `stop()` stops the instance and removes its directory; instances still
 *   running when the test process exits are stopped with it.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports';

const COMMAND_TIMEOUT_MS = 60_000;

export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program with a time limit and collects its output; never rejects on a non-zero exit. */
export function runCommand(file: string, args: string[], opts: { timeoutMs?: number; input?: string | Buffer } = {}): Promise<CommandResult> {
  return new Promise((resolveRun, rejectRun) => {
    const child = execFile(
      file,
      args,
      { timeout: opts.timeoutMs ?? COMMAND_TIMEOUT_MS, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (err && typeof (err as NodeJS.ErrnoException).code === 'string') {
          rejectRun(new Error(`cannot run ${file}: ${err.message}`));
          return;
        }
        if (err && (err as { killed?: boolean }).killed) {
          rejectRun(new Error(`${file} ${args.join(' ')} did not finish within ${opts.timeoutMs ?? COMMAND_TIMEOUT_MS} ms\n${stdout}\n${stderr}`));
          return;
        }
        resolveRun({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

/** A TCP port on 127.0.0.1 that was free a moment ago (for programs that cannot report the port they got). */
/** Polls `probe` every `intervalMs` until it returns true; rejects with `describe()` after `timeoutMs`. */
export async function waitUntil(probe: () => boolean | Promise<boolean>, timeoutMs: number, describe: () => string, intervalMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${describe()}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** True when the Postfix programs these helpers drive are installed. */
export function postfixAvailable(): boolean {
  return ['/usr/sbin/postfix', '/usr/sbin/smtp-sink', '/usr/sbin/smtp-source'].every((p) => existsSync(p));
}

function userIds(user: string): { uid: number; gid: number } {
  const uid = Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim());
  return { uid, gid };
}

// ---------------------------------------------------------------------------
// Private Postfix instances

export interface PostfixOptions {
  /** myhostname: the name in its greeting, EHLO and Received headers. */
  hostname: string;
  /** Domains it accepts mail for and stores in one Maildir (`maildir()`), any local part. */
  destinationDomains?: string[];
  /** Send all other mail to this next hop (`relayhost = [host]:port`). */
  relayhost?: { host: string; port: number };
  /** smtp_tls_security_level of its SMTP client: `may` (STARTTLS when offered) or `none`. */
  clientTls?: 'may' | 'none';
  /** Offer STARTTLS on its smtpd with a fresh self-signed certificate. */
  serverTls?: boolean;
  /** Initial check_recipient_access table: address -> action, e.g. `450 4.2.1 try later`. */
  recipientAccess?: Record<string, string>;
  /** Retry deferred mail within seconds instead of minutes (tests); false keeps Postfix's defaults (benchmark). */
  fastRetry?: boolean;
  /** Further main.cf settings, applied last. */
  main?: Record<string, string>;
  /** Parent directory of the instance's directory (default: the system temp dir); the postfix user must be able to traverse it. */
  parentDir?: string;
}

export interface PostfixInstance {
  /** The instance's directory: etc/ (config), queue/, data/, mail/, maillog. */
  readonly dir: string;
  readonly configDir: string;
  /** Port of its smtpd on 127.0.0.1. */
  readonly port: number;
  /** PID of its master process. */
  masterPid(): number | undefined;
  /** Directory of the Maildir that gets all mail for `destinationDomains`. */
  maildir(): string;
  /** Messages delivered to the Maildir so far. */
  deliveredCount(): number;
  /** The delivered messages' texts, oldest file name first. */
  deliveredMessages(): string[];
  waitForDelivered(count: number, timeoutMs: number): Promise<void>;
  /** Messages in its queue (incoming, active, deferred, hold, maildrop). */
  queuedCount(): number;
  /** Its log so far. */
  log(): string;
  /** Replaces the check_recipient_access table and reloads Postfix so new smtpd processes use it. */
  setRecipientAccess(table: Record<string, string>): Promise<void>;
  reload(): Promise<void>;
  stop(): Promise<void>;
}

const MASTER_CF = `# service type private unpriv chroot wakeup maxproc command
pickup     unix  n  -  n  60    1  pickup
cleanup    unix  n  -  n  -     0  cleanup
qmgr       unix  n  -  n  300   1  qmgr
tlsmgr     unix  -  -  n  1000? 1  tlsmgr
rewrite    unix  -  -  n  -     -  trivial-rewrite
bounce     unix  -  -  n  -     0  bounce
defer      unix  -  -  n  -     0  bounce
trace      unix  -  -  n  -     0  bounce
verify     unix  -  -  n  -     1  verify
flush      unix  n  -  n  1000? 0  flush
proxymap   unix  -  -  n  -     -  proxymap
proxywrite unix  -  -  n  -     1  proxymap
smtp       unix  -  -  n  -     -  smtp
relay      unix  -  -  n  -     -  smtp
showq      unix  n  -  n  -     -  showq
error      unix  -  -  n  -     -  error
retry      unix  -  -  n  -     -  error
discard    unix  -  -  n  -     -  discard
local      unix  -  n  n  -     -  local
virtual    unix  -  n  n  -     -  virtual
anvil      unix  -  -  n  -     1  anvil
scache     unix  -  -  n  -     1  scache
postlog    unix-dgram n - n -   1  postlogd
`;

const runningInstances = new Set<string>();
process.once('exit', () => {
  // Last resort for a test process that dies without stop(): `postfix stop` is synchronous here.
  for (const configDir of runningInstances) {
    try {
      execFileSync('/usr/sbin/postfix', ['-c', configDir, 'stop'], { stdio: 'ignore', timeout: 15_000 });
    } catch {
      // already stopped
    }
  }
});

export async function startPostfix(opts: PostfixOptions): Promise<PostfixInstance> {
  const dir = mkdtempIn(opts.parentDir ?? tmpdir(), `postfix-${opts.hostname}`);
  // Postfix daemons run as the postfix user and must be able to read the config and reach the queue.
  chmodSync(dir, 0o755);
  const configDir = join(dir, 'etc');
  const queueDir = join(dir, 'queue');
  const dataDir = join(dir, 'data');
  const mailDir = join(dir, 'mail');
  const logFile = join(dir, 'maillog');
  const accessFile = join(configDir, 'recipient_access');
  for (const d of [configDir, queueDir, dataDir, mailDir]) mkdirSync(d, { mode: 0o755 });
  const postfixUser = userIds('postfix');
  chownSync(dataDir, postfixUser.uid, postfixUser.gid);
  chownSync(mailDir, postfixUser.uid, postfixUser.gid);
  writeFileSync(logFile, '');

  const port = await freePort();
  const main: Record<string, string> = {
    compatibility_level: '3.6',
    myhostname: opts.hostname,
    mydomain: opts.hostname,
    myorigin: '$myhostname',
    mydestination: '',
    queue_directory: queueDir,
    data_directory: dataDir,
    // No syslog daemon needed: postlogd writes this file.
    maillog_file: logFile,
    maillog_file_prefixes: dir,
    inet_interfaces: '127.0.0.1',
    inet_protocols: 'ipv4',
    mynetworks: '127.0.0.0/8',
    // Only loopback peers: no DNS at all.
    smtpd_peername_lookup: 'no',
    smtp_dns_support_level: 'disabled',
    smtp_host_lookup: 'native',
    alias_maps: '',
    alias_database: '',
    local_recipient_maps: '',
    biff: 'no',
    smtputf8_enable: 'no',
    smtp_tls_security_level: opts.clientTls ?? 'none',
    smtpd_recipient_restrictions: `check_recipient_access texthash:${accessFile}, permit_mynetworks, reject_unauth_destination`,
  };
  if (opts.destinationDomains?.length) {
    Object.assign(main, {
      virtual_mailbox_domains: opts.destinationDomains.join(', '),
      virtual_mailbox_base: mailDir,
      // One Maildir ("inbox/": the slash means Maildir) for every recipient of those domains.
      virtual_mailbox_maps: 'static:inbox/',
      virtual_uid_maps: `static:${postfixUser.uid}`,
      virtual_gid_maps: `static:${postfixUser.gid}`,
      virtual_minimum_uid: '1',
    });
  }
  if (opts.relayhost) main.relayhost = `[${opts.relayhost.host}]:${opts.relayhost.port}`;
  if (opts.serverTls) {
    const key = join(configDir, 'key.pem');
    const cert = join(configDir, 'cert.pem');
    await mustSucceed('/usr/bin/openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${opts.hostname}`,
    ]);
    main.smtpd_tls_chain_files = `${key}, ${cert}`;
    main.smtpd_tls_security_level = 'may';
  }
  if (opts.fastRetry ?? true) {
    Object.assign(main, { queue_run_delay: '1s', minimal_backoff_time: '1s', maximal_backoff_time: '2s' });
  }
  Object.assign(main, opts.main ?? {});

  writeFileSync(join(configDir, 'main.cf'), Object.entries(main).map(([k, v]) => `${k} = ${v}`).join('\n') + '\n');
  writeFileSync(join(configDir, 'master.cf'), `127.0.0.1:${port} inet n - n - - smtpd\n${MASTER_CF}`);
  writeAccessTable(accessFile, opts.recipientAccess ?? {});

  const postfix = (...args: string[]) => postfixCommand(configDir, logFile, args);
  try {
    await postfix('check');
    await postfix('start');
  } catch (err) {
    rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    throw err;
  }
  runningInstances.add(configDir);

  const instance: PostfixInstance = {
    dir,
    configDir,
    port,
    masterPid: () => {
      try {
        return Number(readFileSync(join(queueDir, 'pid', 'master.pid'), 'utf8').trim()) || undefined;
      } catch {
        return undefined;
      }
    },
    maildir: () => join(mailDir, 'inbox'),
    deliveredCount: () => listFiles(join(mailDir, 'inbox', 'new')).length,
    deliveredMessages: () => {
      const newDir = join(mailDir, 'inbox', 'new');
      return listFiles(newDir).sort().map((f) => readFileSync(join(newDir, f), 'utf8'));
    },
    waitForDelivered: (count, timeoutMs) =>
      waitUntil(
        () => instance.deliveredCount() >= count,
        timeoutMs,
        () => `Postfix ${opts.hostname} stored ${instance.deliveredCount()} of ${count} messages; its log:\n${tailOf(instance.log())}`,
      ),
    queuedCount: () =>
      ['incoming', 'active', 'deferred', 'hold', 'maildrop'].reduce((n, q) => n + countFilesDeep(join(queueDir, q)), 0),
    log: () => readFileSync(logFile, 'utf8'),
    setRecipientAccess: async (table) => {
      writeAccessTable(accessFile, table);
      await instance.reload();
    },
    reload: async () => {
      await postfix('reload');
    },
    stop: async () => {
      try {
        if (runningInstances.has(configDir)) {
          runningInstances.delete(configDir);
          await postfix('stop');
          // `postfix stop` waits for the master; make sure no daemon still holds the directory.
          await waitUntil(() => !processRunningFor(configDir), 10_000, () => `Postfix ${opts.hostname} processes still running`).catch(() => undefined);
        }
      } finally {
        rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
      }
    },
  };
  return instance;
}

async function postfixCommand(configDir: string, logFile: string, args: string[]): Promise<void> {
  const result = await runCommand('/usr/sbin/postfix', ['-c', configDir, ...args]);
  if (result.code !== 0) {
    // Postfix reports most problems in its log, not on stderr.
    throw new Error(`postfix -c ${configDir} ${args.join(' ')} exited ${String(result.code)}: ${result.stderr}\n${tailOf(safeRead(logFile))}`);
  }
}

async function mustSucceed(file: string, args: string[]): Promise<void> {
  const result = await runCommand(file, args);
  if (result.code !== 0) throw new Error(`${file} ${args.join(' ')} exited ${String(result.code)}: ${result.stderr}`);
}

function writeAccessTable(file: string, table: Record<string, string>): void {
  writeFileSync(file, Object.entries(table).map(([k, v]) => `${k} ${v}`).join('\n') + '\n');
}

/** True while any process's MAIL_CONFIG or command line names this config directory. */
function processRunningFor(configDir: string): boolean {
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const environ = readFileSync(`/proc/${pid}/environ`, 'utf8');
      if (environ.split('\0').includes(`MAIL_CONFIG=${configDir}`)) return true;
    } catch {
      // gone or not ours
    }
  }
  return false;
}

function mkdtempIn(parent: string, prefix: string): string {
  mkdirSync(parent, { recursive: true });
  for (let i = 0; ; i++) {
    const dir = join(parent, `${prefix}-${process.pid}-${Date.now().toString(36)}-${i}`);
    try {
      mkdirSync(dir);
      return dir;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || i > 100) throw err;
    }
  }
}

function listFiles(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function countFilesDeep(dir: string): number {
  let n = 0;
  for (const entry of (() => {
    try {
      return readdirSync(dir, { withFileTypes: true });
    } catch {
      return [];
    }
  })()) {
    n += entry.isDirectory() ? countFilesDeep(join(dir, entry.name)) : 1;
  }
  return n;
}

function safeRead(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function tailOf(text: string, lines = 40): string {
  return text.split('\n').slice(-lines).join('\n');
}

// ---------------------------------------------------------------------------
// smtp-sink: a discarding SMTP server that counts messages

export interface SmtpSink {
  readonly port: number;
  readonly pid: number;
  /** Messages received so far (each "." of a DATA). */
  count(): number;
  /** Date.now() when the count last went up (undefined before the first message). */
  lastMessageAt(): number | undefined;
  /**
   * Resolves once `count` messages arrived; or, when no new message arrived for
   * `quietMs` (some were lost), or after `timeoutMs`, resolves with what came.
   */
  waitForCount(count: number, opts: { timeoutMs: number; quietMs?: number }): Promise<number>;
  stop(): Promise<void>;
}

const runningChildren = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of runningChildren) child.kill('SIGKILL');
});

/** Starts `smtp-sink -c` on 127.0.0.1 and counts messages from its running counter ("... mesg=N"). */
export async function startSmtpSink(opts: { maxConnections?: number } = {}): Promise<SmtpSink> {
  const port = await freePort();
  // As root smtp-sink must switch to an unprivileged user (-u).
  const child = spawn('/usr/sbin/smtp-sink', ['-u', 'postfix', '-c', '-m', String(opts.maxConnections ?? 512), `127.0.0.1:${port}`, '1024'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  runningChildren.add(child);
  let count = 0;
  let lastAt: number | undefined;
  let stderr = '';
  let pending = '';
  const watchers = new Set<() => void>();
  child.stdout!.setEncoding('latin1');
  child.stdout!.on('data', (chunk: string) => {
    // The counter line is rewritten in place with \r; keep only the last complete update.
    pending += chunk;
    const matches = [...pending.matchAll(/mesg=(\d+)/g)];
    const last = matches.at(-1);
    if (last) {
      const next = Number(last[1]);
      if (next > count) {
        count = next;
        lastAt = Date.now();
        for (const w of [...watchers]) w();
      }
      pending = pending.slice(last.index + last[0].length);
    }
  });
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => { runningChildren.delete(child); r(); }));

  // Ready once it accepts a connection.
  try {
    await waitUntil(() => canConnect(port), 10_000, () => `smtp-sink on port ${port} did not start: ${stderr}`, 50);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }

  return {
    port,
    pid: child.pid!,
    count: () => count,
    lastMessageAt: () => lastAt,
    waitForCount: (target, { timeoutMs, quietMs }) =>
      new Promise<number>((resolveWait) => {
        const started = Date.now();
        const finish = () => {
          watchers.delete(check);
          clearInterval(timer);
          resolveWait(count);
        };
        const check = () => {
          if (count >= target) finish();
        };
        const timer = setInterval(() => {
          const now = Date.now();
          if (now - started > timeoutMs) finish();
          else if (quietMs !== undefined && now - (lastAt ?? started) > quietMs) finish();
        }, 50);
        watchers.add(check);
        check();
      }),
    stop: async () => {
      if (runningChildren.has(child)) child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (runningChildren.has(child)) child.kill('SIGKILL');
      await exited;
    },
  };
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolveConnect) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolveConnect(true);
    });
    socket.once('error', () => resolveConnect(false));
  });
}

// ---------------------------------------------------------------------------
// smtp-source: a parallel SMTP load generator

export interface SmtpSourceOptions {
  port: number;
  /** Messages in all (-m). */
  messages: number;
  /** Parallel sessions (-s). */
  sessions?: number;
  /** Payload bytes per message, headers not counted (-l). */
  size?: number;
  from: string;
  to: string;
  /** Name in HELO (-M). */
  helo?: string;
  /** Recipients per message (-r): `to` itself, then `to` prefixed with 2, 3, ... (`2user@...`). */
  recipients?: number;
  /** One connection per message (smtp-source's default, as Postfix measures); true reuses connections (-d). */
  reuseConnections?: boolean;
  timeoutMs?: number;
}

/** Runs smtp-source against 127.0.0.1:port. It exits non-zero if the server refuses anything. */
export function runSmtpSource(opts: SmtpSourceOptions): Promise<CommandResult> {
  const args = ['-s', String(opts.sessions ?? 1), '-m', String(opts.messages), '-f', opts.from, '-t', opts.to, '-M', opts.helo ?? 'client.test'];
  if (opts.size !== undefined) args.push('-l', String(opts.size));
  if (opts.recipients !== undefined) args.push('-r', String(opts.recipients));
  if (opts.reuseConnections) args.push('-d');
  args.push(`127.0.0.1:${opts.port}`);
  return runCommand('/usr/sbin/smtp-source', args, { timeoutMs: opts.timeoutMs ?? 300_000 });
}
