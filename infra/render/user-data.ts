/**
 * The host's first boot: cloud-init user-data (#cloud-config), rendered with the
 * `yaml` package from one object. Pure: the same input always renders the same text.
 *
 * What cloud-init does with it, in its stage order (Debian's /etc/cloud/cloud.cfg):
 * - init: bootcmd waits for the spool device (a volume attached right after the
 *   instance starts may not be there yet); write_files (sshd drop-in, firewall,
 *   units); disk_setup formats the spool once; hostname; users; ssh.
 * - final: packages; deferred write_files (files owned by the `ownrelay` group,
 *   which exists only after the users stage, and apt configs that the packages'
 *   own scripts must not pre-empt); then runcmd.
 *
 * Offline first boot: cloud-init runs every module even when one fails, and its
 * package module tries the update and the install separately and only reports the
 * error at the end. runcmd is a plain `#!/bin/sh` script without `set -e`, so each
 * command runs regardless of the previous one. The image carries the packages, so
 * with the mirror unreachable `apt-get install` finds them installed and the host
 * comes up complete; `cloud-init status` reports the failed update.
 *
 * Secrets: user-data is readable through the instance metadata service and the
 * cloud console. The relay config passed here should carry no secrets; the deploy
 * step ships the real config over SSH.
 */
import { gzipSync } from 'node:zlib';
import { Document, isSeq, parse, visit } from 'yaml';
import { renderNftables } from './firewall';
import { RELAY_UNIT_DEFAULTS, RELAY_UNIT_NAME, RELAY_UNIT_PATH, SPOOL_LABEL, mountUnitName, renderRelayUnit, renderSpoolMountUnit } from './systemd-unit';

export interface AdminUser {
  /** Login name. */
  name: string;
  /** OpenSSH public keys (one per line of authorized_keys). At least one. */
  sshKeys: string[];
}

export interface UserDataInput {
  /** The fully qualified host name; equal to the PTR name of the host's IP. */
  hostname: string;
  adminUsers: AdminUser[];
  /** Networks allowed to SSH in (the host firewall; the security group mirrors it). */
  adminCidrs: string[];
  /** Open port 80 for ACME HTTP-01 challenges. */
  http01: boolean;
  /** The relay's YAML config; its paths.spool must be the spool volume's mount point. */
  relayConfigYaml: string;
  /** The spool volume's block device: /dev/nvme1n1 (or a stable /dev/disk/by-id path) on Nitro instances, /dev/vdb in a VM. */
  spoolDevice: string;
  /** IANA time zone; default UTC. */
  timezone?: string;
}

/** AWS refuses user-data larger than this (before base64). */
export const USER_DATA_MAX_BYTES = 16 * 1024;

/** The cloud-config keys this renderer emits; `cloud-init schema` accepts unknown keys, a test does not. */
export const ALLOWED_TOP_LEVEL_KEYS: readonly string[] = Object.freeze([
  'hostname',
  'fqdn',
  'preserve_hostname',
  'prefer_fqdn_over_hostname',
  'manage_etc_hosts',
  'timezone',
  'users',
  'ssh_pwauth',
  'disable_root',
  'package_update',
  'package_upgrade',
  'packages',
  'bootcmd',
  'write_files',
  'fs_setup',
  'runcmd',
]);

/** Debian packages the relay host needs; the image carries them, the first boot only makes sure. */
export const HOST_PACKAGES: readonly string[] = Object.freeze(['nodejs', 'unattended-upgrades', 'nftables', 'chrony']);

export const SSHD_DROP_IN_PATH = '/etc/ssh/sshd_config.d/00-ownrelay.conf';
export const RELAY_USER = RELAY_UNIT_DEFAULTS.user;

// sshd keeps the first value it reads and reads drop-ins in name order: "00-" comes before other drop-ins
const SSHD_DROP_IN = [
  '# ownrelay: keys only, no root. Rendered by infra.',
  'PasswordAuthentication no',
  'KbdInteractiveAuthentication no',
  'PermitRootLogin no',
  'AuthenticationMethods publickey',
  '',
].join('\n');

const APT_PERIODIC = ['APT::Periodic::Update-Package-Lists "1";', 'APT::Periodic::Unattended-Upgrade "1";', ''].join('\n');

// #clear drops the origins of Debian's 50unattended-upgrades (point releases too): security updates only
const UNATTENDED_UPGRADES = [
  '// ownrelay: install security updates daily; never reboot on our own (a reboot interrupts mail: the operator schedules it).',
  '#clear Unattended-Upgrade::Origins-Pattern;',
  'Unattended-Upgrade::Origins-Pattern {',
  '\t"origin=Debian,codename=${distro_codename}-security,label=Debian-Security";',
  '};',
  'Unattended-Upgrade::Automatic-Reboot "false";',
  '',
].join('\n');

// waits up to 120 s for the spool device; never fails the boot (disk_setup then reports the missing device)
const WAIT_FOR_DEVICE = 'i=0; while [ ! -b "$1" ] && [ "$i" -lt 60 ]; do sleep 2; i=$((i+1)); done';

function validate(input: UserDataInput): void {
  if (!/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/i.test(input.hostname)) {
    throw new Error(`user-data: hostname ${JSON.stringify(input.hostname)} is not a fully qualified domain name`);
  }
  if (input.adminUsers.length === 0) throw new Error('user-data: at least one admin user is required (root login is disabled)');
  const seen = new Set<string>();
  for (const user of input.adminUsers) {
    if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(user.name) || user.name === 'root' || user.name === RELAY_USER) {
      throw new Error(`user-data: admin user name ${JSON.stringify(user.name)} is not allowed`);
    }
    if (seen.has(user.name)) throw new Error(`user-data: admin user ${user.name} is listed twice`);
    seen.add(user.name);
    if (user.sshKeys.length === 0) throw new Error(`user-data: admin user ${user.name} has no SSH key (logins are key-only)`);
    for (const key of user.sshKeys) {
      if (!/^(ssh-(ed25519|rsa)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/=]+( [^\r\n]*)?$/.test(key.trim())) {
        throw new Error(`user-data: admin user ${user.name} has a key that is not an OpenSSH public key: ${JSON.stringify(key.slice(0, 40))}`);
      }
    }
  }
  if (!input.spoolDevice.startsWith('/dev/')) throw new Error(`user-data: spoolDevice ${JSON.stringify(input.spoolDevice)} must be a /dev path`);
  const relayConfig: unknown = parse(input.relayConfigYaml);
  const spool = (relayConfig as { paths?: { spool?: unknown } } | null)?.paths?.spool;
  if (spool !== RELAY_UNIT_DEFAULTS.spoolDir) {
    throw new Error(`user-data: the relay config's paths.spool must be ${RELAY_UNIT_DEFAULTS.spoolDir} (the spool volume), got ${JSON.stringify(spool)}`);
  }
}

/** The cloud-config as data; renderUserData serializes it. */
export function buildCloudConfig(input: UserDataInput, opts: { compressRelayConfig?: boolean } = {}): Record<string, unknown> {
  validate(input);
  const { spoolDir, stateDir, mailDir, configPath } = RELAY_UNIT_DEFAULTS;
  const spoolMount = mountUnitName(spoolDir);
  const owner = `${RELAY_USER}:${RELAY_USER}`;
  return {
    hostname: input.hostname.split('.')[0],
    fqdn: input.hostname,
    prefer_fqdn_over_hostname: false,
    preserve_hostname: false,
    manage_etc_hosts: true,
    timezone: input.timezone ?? 'UTC',
    // no `default` entry: the image's default user (and its cloud key pair) is not created
    users: [
      ...input.adminUsers.map((user) => ({
        name: user.name,
        shell: '/bin/bash',
        groups: ['adm', 'systemd-journal'],
        sudo: 'ALL=(ALL) NOPASSWD:ALL',
        lock_passwd: true,
        ssh_authorized_keys: user.sshKeys.map((key) => key.trim()),
      })),
      // useradd --system also creates the ownrelay group (USERGROUPS_ENAB)
      { name: RELAY_USER, system: true, shell: '/usr/sbin/nologin', homedir: stateDir, no_create_home: true, lock_passwd: true },
    ],
    ssh_pwauth: false,
    disable_root: true,
    package_update: true,
    // upgrades belong to unattended-upgrades, not to a boot that may be offline
    package_upgrade: false,
    packages: [...HOST_PACKAGES],
    bootcmd: [['sh', '-c', WAIT_FOR_DEVICE, 'wait-for-spool-device', input.spoolDevice]],
    write_files: [
      { path: SSHD_DROP_IN_PATH, permissions: '0644', content: SSHD_DROP_IN },
      { path: '/etc/nftables.conf', permissions: '0755', content: renderNftables({ adminCidrs: input.adminCidrs, http01: input.http01 }) },
      { path: `/etc/systemd/system/${spoolMount}`, permissions: '0644', content: renderSpoolMountUnit({ spoolDir }) },
      { path: RELAY_UNIT_PATH, permissions: '0644', content: renderRelayUnit() },
      { path: '/etc/apt/apt.conf.d/20auto-upgrades', permissions: '0644', content: APT_PERIODIC, defer: true },
      { path: '/etc/apt/apt.conf.d/52ownrelay-unattended-upgrades', permissions: '0644', content: UNATTENDED_UPGRADES, defer: true },
      opts.compressRelayConfig
        ? { path: configPath, permissions: '0640', owner: `root:${RELAY_USER}`, encoding: 'gz+b64', content: gzipSync(input.relayConfigYaml, { level: 9 }).toString('base64'), defer: true }
        : { path: configPath, permissions: '0640', owner: `root:${RELAY_USER}`, content: input.relayConfigYaml, defer: true },
    ],
    // partition "auto" reuses an ext4 labelled ownrelay-spool and leaves a disk with any other
    // filesystem alone; "none" would format the raw device on every new instance
    fs_setup: [{ label: SPOOL_LABEL, filesystem: 'ext4', device: input.spoolDevice, partition: 'auto', overwrite: false }],
    runcmd: [
      ['systemctl', 'daemon-reload'],
      ['systemctl', 'enable', '--now', 'nftables.service'],
      ['systemctl', 'enable', '--now', 'chrony.service'],
      ['systemctl', 'enable', '--now', 'unattended-upgrades.service'],
      ['systemctl', 'enable', '--now', spoolMount],
      // the volume may come from a previous instance, where the relay user had another uid
      ['sh', '-c', 'mountpoint -q "$1" && chown -R "$2" "$1" && chmod 0750 "$1"', 'own-spool', spoolDir, owner],
      ['install', '-d', '-o', RELAY_USER, '-g', RELAY_USER, '-m', '0750', stateDir, mailDir],
      ['systemctl', 'enable', RELAY_UNIT_NAME],
      // skipped (not failed) until the deploy step ships the bundle
      ['systemctl', 'start', '--no-block', RELAY_UNIT_NAME],
    ],
  };
}

/** Throws when the user-data is larger than AWS accepts, with the size and the limit. */
export function assertUserDataSize(userData: string): void {
  const bytes = Buffer.byteLength(userData, 'utf8');
  if (bytes > USER_DATA_MAX_BYTES) {
    throw new Error(`user-data is ${bytes} bytes, over the ${USER_DATA_MAX_BYTES}-byte limit of EC2: shorten the relay config (comments) or the admin keys`);
  }
}

function serialize(config: Record<string, unknown>): string {
  const doc = new Document(config);
  // commands (lists inside lists) on one line each: readable, and a third of the bytes
  visit(doc, {
    Seq(_key, node, path) {
      if (isSeq(path[path.length - 1])) node.flow = true;
    },
  });
  return `#cloud-config\n${doc.toString({ lineWidth: 0, minContentWidth: 0 })}`;
}

/**
 * Renders the user-data. The relay config is written as plain text when everything
 * fits in USER_DATA_MAX_BYTES, gzip+base64 (cloud-init's `gz+b64`) when only that
 * fits; otherwise it throws.
 */
export function renderUserData(input: UserDataInput): string {
  const plain = serialize(buildCloudConfig(input));
  if (Buffer.byteLength(plain, 'utf8') <= USER_DATA_MAX_BYTES) return plain;
  const compressed = serialize(buildCloudConfig(input, { compressRelayConfig: true }));
  assertUserDataSize(compressed);
  return compressed;
}
