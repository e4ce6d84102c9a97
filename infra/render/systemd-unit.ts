/**
 * The relay's systemd unit, /etc/systemd/system/ownrelay.service.
 *
 * How the relay is launched: ExecStart runs the bundle itself, whose
 * `#!/usr/bin/env -S <environment> node <flags>` line (server/runtime-flags.ts) applies
 * the Node.js flags. The flags thus travel with the bundle: a deploy or a rollback
 * switches them together with the code they were tested with, while this unit is
 * written once at first boot. PATH is pinned so that `env` finds Debian's
 * /usr/bin/node and nothing installed under /usr/local. The deploy step must keep
 * the bundle executable (the build makes it 0755).
 *
 * Contracts:
 * - the relay never starts without the spool volume: Requires= and After= its
 *   mount unit (an fstab entry named by the spool directory);
 * - before the first deploy the unit is enabled but skipped, not failed
 *   (ConditionPathExists on the bundle);
 * - it runs as an unprivileged user whose only capability is binding ports < 1024,
 *   and can write only to the spool, its state directory and the Maildir root;
 * - stopping sends SIGTERM and waits long enough for the relay to finish open
 *   sessions (up to 15 s) and deliveries (up to 20 s) before SIGKILL;
 * - `systemctl reload` sends SIGHUP: the relay re-reads its config file and keeps
 *   the running one if the new one is invalid;
 * - the admin socket (the `ownrelay` command's) is <stateDir>/state/admin.sock by
 *   default: inside StateDirectory= (0750, the relay's group may enter) and
 *   ReadWritePaths=, so no RuntimeDirectory= is needed; the relay makes the socket
 *   0660, so members of the relay's group administer without sudo.
 *
 * Pure: the same options always render the same text.
 */
import { dirname } from 'node:path';
import { RELAY_CONFIG_PATH, SERVER_PATHS } from './relay-config';

export interface RelayUnitOptions {
  /** The deployed bundle (a symlink switched by the deploy step). */
  bundlePath?: string;
  /** The relay's config file. */
  configPath?: string;
  /** The queue; a mount point of its own volume. */
  spoolDir?: string;
  /** Generated state (self-signed certificate); also the working directory. */
  stateDir?: string;
  /** Maildir root for domains with `delivery: maildir`. */
  mailDir?: string;
  /** The unprivileged user (and group) the relay runs as. */
  user?: string;
}

export const RELAY_UNIT_NAME = 'ownrelay.service';
export const RELAY_UNIT_PATH = `/etc/systemd/system/${RELAY_UNIT_NAME}`;

/** The same paths as the relay config the infra renders (SERVER_PATHS), so the sandbox admits what the config names. */
export const RELAY_UNIT_DEFAULTS: Readonly<Required<RelayUnitOptions>> = Object.freeze({
  bundlePath: '/opt/ownrelay/current/ownrelay.js',
  configPath: RELAY_CONFIG_PATH,
  spoolDir: SERVER_PATHS.spool,
  stateDir: dirname(SERVER_PATHS.state),
  mailDir: SERVER_PATHS.mail,
  user: 'ownrelay',
});

/** Seconds systemd waits after SIGTERM: above the relay's 15 s session and 20 s delivery drains. */
export const RELAY_STOP_TIMEOUT_SEC = 60;

/**
 * The name of the mount unit systemd generates for a mount point, as
 * `systemd-escape --path --suffix=mount` computes it
 * ("/var/spool/ownrelay" -> "var-spool-ownrelay.mount").
 */
export function mountUnitName(mountPoint: string): string {
  const trimmed = mountPoint.replace(/\/+/g, '/').replace(/^\/|\/$/g, '');
  if (trimmed === '') return '-.mount';
  const escaped = [...Buffer.from(trimmed, 'utf8')]
    .map((byte, i) => {
      const ch = String.fromCharCode(byte);
      if (ch === '/') return '-';
      if (/[A-Za-z0-9:_]/.test(ch) || (ch === '.' && i > 0)) return ch;
      return `\\x${byte.toString(16).padStart(2, '0')}`;
    })
    .join('');
  return `${escaped}.mount`;
}

function assertAbsolutePath(name: string, value: string): void {
  if (!value.startsWith('/') || /[\s"'\\]/.test(value)) {
    throw new Error(`renderRelayUnit: ${name} must be an absolute path without spaces or quotes, got ${JSON.stringify(value)}`);
  }
}

/** The spool and state directories, and the Maildir root unless it lies inside one of them ("-": it may not exist yet). */
function readWritePaths(o: Required<RelayUnitOptions>): string[] {
  const inside = (path: string, dir: string) => path === dir || path.startsWith(`${dir}/`);
  const mailCovered = inside(o.mailDir, o.spoolDir) || inside(o.mailDir, o.stateDir);
  return [o.spoolDir, o.stateDir, ...(mailCovered ? [] : [`-${o.mailDir}`])];
}

export function renderRelayUnit(opts: RelayUnitOptions = {}): string {
  const o: Required<RelayUnitOptions> = {
    bundlePath: opts.bundlePath ?? RELAY_UNIT_DEFAULTS.bundlePath,
    configPath: opts.configPath ?? RELAY_UNIT_DEFAULTS.configPath,
    spoolDir: opts.spoolDir ?? RELAY_UNIT_DEFAULTS.spoolDir,
    stateDir: opts.stateDir ?? RELAY_UNIT_DEFAULTS.stateDir,
    mailDir: opts.mailDir ?? RELAY_UNIT_DEFAULTS.mailDir,
    user: opts.user ?? RELAY_UNIT_DEFAULTS.user,
  };
  for (const key of ['bundlePath', 'configPath', 'spoolDir', 'stateDir', 'mailDir'] as const) assertAbsolutePath(key, o[key]);
  if (!/^[a-z_][a-z0-9_-]*$/.test(o.user)) throw new Error(`renderRelayUnit: user ${JSON.stringify(o.user)} is not a valid user name`);
  if (!o.stateDir.startsWith('/var/lib/')) throw new Error(`renderRelayUnit: stateDir must be under /var/lib/ (StateDirectory=), got ${o.stateDir}`);
  const spoolMount = mountUnitName(o.spoolDir);

  return [
    '# ownrelay: rendered by infra (infra/render/systemd-unit.ts).',
    '[Unit]',
    'Description=ownrelay SMTP relay',
    `After=network-online.target ${spoolMount}`,
    'Wants=network-online.target',
    '# the queue lives on its own volume: never run on the empty mount point',
    `Requires=${spoolMount}`,
    '# enabled at first boot, started once the deploy step has shipped a bundle',
    `ConditionPathExists=${o.bundlePath}`,
    '',
    '[Service]',
    'Type=exec',
    `User=${o.user}`,
    `Group=${o.user}`,
    `ExecStart=${o.bundlePath} run --config ${o.configPath}`,
    '# SIGHUP: re-read the config (an invalid file is refused and the running config kept)',
    'ExecReload=/bin/kill -HUP $MAINPID',
    '# the bundle\'s #! line runs `env node`: resolve it to Debian\'s /usr/bin/node',
    'Environment=PATH=/usr/bin:/bin',
    '# spool fsyncs run on the libuv thread pool',
    'Environment=UV_THREADPOOL_SIZE=16',
    `StateDirectory=${o.stateDir.slice('/var/lib/'.length)}`,
    'StateDirectoryMode=0750',
    `WorkingDirectory=${o.stateDir}`,
    'UMask=0027',
    'Restart=on-failure',
    'RestartSec=5s',
    'KillSignal=SIGTERM',
    `TimeoutStopSec=${RELAY_STOP_TIMEOUT_SEC}`,
    'LimitNOFILE=65536',
    '',
    '# privileges: binding ports below 1024 (25, 465, 587; 80 and 443 for ACME and MTA-STS) and nothing else',
    'AmbientCapabilities=CAP_NET_BIND_SERVICE',
    'CapabilityBoundingSet=CAP_NET_BIND_SERVICE',
    'NoNewPrivileges=yes',
    '',
    '# file system: read-only except the queue, the state (certificates, admin socket) and the Maildirs',
    'ProtectSystem=strict',
    `ReadWritePaths=${readWritePaths(o).join(' ')}`,
    'ProtectHome=yes',
    'PrivateTmp=yes',
    'PrivateDevices=yes',
    '',
    '# kernel and process isolation',
    'ProtectKernelTunables=yes',
    'ProtectKernelModules=yes',
    'ProtectKernelLogs=yes',
    'ProtectControlGroups=yes',
    'ProtectClock=yes',
    'ProtectHostname=yes',
    'ProtectProc=invisible',
    'RestrictNamespaces=yes',
    'RestrictRealtime=yes',
    'RestrictSUIDSGID=yes',
    'LockPersonality=yes',
    'RemoveIPC=yes',
    '# AF_NETLINK: getaddrinfo() with AI_ADDRCONFIG asks the kernel which address families are configured',
    'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK',
    'SystemCallArchitectures=native',
    'SystemCallFilter=@system-service',
    'SystemCallFilter=~@privileged',
    '# a filtered call fails with EPERM instead of killing the process (Node probes optional calls such as io_uring)',
    'SystemCallErrorNumber=EPERM',
    '# no MemoryDenyWriteExecute=: V8 compiles JavaScript to machine code at run time',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

/** The filesystem label the first boot gives the spool volume; the mount finds it by this label. */
export const SPOOL_LABEL = 'ownrelay-spool';

/**
 * The spool volume's mount unit (named by mountUnitName(spoolDir), the unit the
 * relay Requires=). A native unit rather than cloud-init `mounts:`, which skips
 * any fs_spec that is not an attached device at that moment (a LABEL= or a volume
 * attached after boot) and so could leave the relay without its mount unit.
 * Wanted by multi-user.target, not local-fs.target: a missing volume delays and
 * fails nothing but the relay (systemd waits for the device, 90 s by default).
 */
export function renderSpoolMountUnit(opts: { spoolDir?: string; label?: string } = {}): string {
  const spoolDir = opts.spoolDir ?? RELAY_UNIT_DEFAULTS.spoolDir;
  const label = opts.label ?? SPOOL_LABEL;
  assertAbsolutePath('spoolDir', spoolDir);
  if (!/^[A-Za-z0-9_-]{1,16}$/.test(label)) throw new Error(`renderSpoolMountUnit: ext4 label ${JSON.stringify(label)} must be 1-16 letters, digits, - or _`);
  return [
    '# ownrelay: rendered by infra (infra/render/systemd-unit.ts).',
    '[Unit]',
    'Description=ownrelay spool volume',
    '',
    '[Mount]',
    `What=/dev/disk/by-label/${label}`,
    `Where=${spoolDir}`,
    'Type=ext4',
    'Options=defaults,noatime,nodev,nosuid,noexec',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

/** The udev rule that grows the spool's file system when its volume grows. */
export const SPOOL_GROW_RULE_PATH = '/etc/udev/rules.d/90-ownrelay-spool-grow.rules';

/**
 * A udev rule: when the spool's volume changes size while it is in use (the
 * kernel's change event with RESIZE=1, sent for a grown EBS/NVMe or virtio disk),
 * grow its ext4 file system online, in a transient unit (`journalctl -u
 * ownrelay-spool-grow`): RUN programs must return at once. Raising
 * `spoolVolumeGiB` and `pulumi up` is then all it takes. Only RESIZE: resize2fs
 * itself closes the device after writing, which makes a change event without it.
 */
export function renderSpoolGrowRule(opts: { label?: string } = {}): string {
  const label = opts.label ?? SPOOL_LABEL;
  return [
    '# ownrelay: the spool volume grew, grow its file system',
    `ACTION=="change", SUBSYSTEM=="block", ENV{RESIZE}=="1", ENV{ID_FS_LABEL}=="${label}", RUN+="/usr/bin/systemd-run --no-block --collect --unit=ownrelay-spool-grow /usr/sbin/resize2fs /dev/%k"`,
    '',
  ].join('\n');
}
