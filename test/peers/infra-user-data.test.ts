/**
 * Policies for what the first boot puts on a relay host: the cloud-init user-data,
 * the host firewall and the relay's systemd unit. Real programs check the rendered
 * files: Debian's `cloud-init schema` (the cloud-config is what cloud-init accepts),
 * `nft -c` inside a fresh network namespace (the ruleset is what the kernel's
 * nftables parser accepts) and `systemd-analyze verify` (the units are what systemd
 * accepts). A missing program fails the test: .ci/run installs all three.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, cpSync, mkdirSync, symlinkSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import { parse } from 'yaml';
import { renderNftables } from '../../infra/render/firewall';
import { mountUnitName, renderRelayUnit, renderSpoolMountUnit } from '../../infra/render/systemd-unit';
import { renderRelayConfig, SERVER_PATHS } from '../../infra/render/relay-config';
import { ALLOWED_TOP_LEVEL_KEYS, USER_DATA_MAX_BYTES, renderUserData, type UserDataInput } from '../../infra/render/user-data';

const EXAMPLE_CONFIG = readFileSync(join(__dirname, '..', '..', 'server', 'config', 'ownrelay.example.yaml'), 'utf8');
const ED25519 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHb6mYzT3m4jXb0H0m9gWnqk0cYl2bU3o8v6X1r2s3t4';
const RSA2048 = `ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ${'C'.repeat(338)}`;

const HOST_KEY = (() => {
  const dir = mkdtempSync(join(tmpdir(), 'ownrelay-hostkey-'));
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', '', '-f', join(dir, 'key')]);
  const key = { privateKeyOpenssh: readFileSync(join(dir, 'key'), 'utf8'), publicKeyOpenssh: readFileSync(join(dir, 'key.pub'), 'utf8') };
  rmSync(dir, { recursive: true, force: true });
  return key;
})();

function input(overrides: Partial<UserDataInput> = {}): UserDataInput {
  return {
    hostname: 'mail.acme.example',
    adminUsers: [{ name: 'alice', sshKeys: [`${ED25519} alice@laptop`] }],
    adminCidrs: ['203.0.113.0/24', '2001:db8:42::/48'],
    http01: false,
    relayConfigYaml: EXAMPLE_CONFIG,
    spoolDevice: '/dev/nvme1n1',
    // a real key pair, so cloud-init's schema sees the shape it would get from the infra program
    sshHostKey: HOST_KEY,
    ...overrides,
  };
}

interface WriteFile { path: string; content: string; permissions?: string; owner?: string; defer?: boolean; encoding?: string }
interface CloudConfig {
  users: Array<Record<string, unknown>>;
  write_files: WriteFile[];
  fs_setup: Array<Record<string, unknown>>;
  runcmd: string[][];
  [key: string]: unknown;
}

function cloudConfigOf(text: string): CloudConfig {
  assert.ok(text.startsWith('#cloud-config\n'), 'user-data starts with #cloud-config');
  return parse(text) as CloudConfig;
}

/** A write_files entry, its content decoded when the renderer compressed it (gz+b64) to fit. */
function fileOf(config: CloudConfig, path: string): WriteFile {
  const file = config.write_files.find((f) => f.path === path);
  assert.ok(file, `write_files has ${path}`);
  if (file.encoding !== 'gz+b64') return file;
  return { ...file, content: gunzipSync(Buffer.from(file.content, 'base64')).toString('utf8') };
}

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'ownrelay-infra-'));
}

/** Runs a program that .ci/run installs; a missing program is a failure, not a skip. */
function run(cmd: string, args: string[]): { status: number | null; output: string } {
  const result = spawnSync(cmd, args, { encoding: 'utf8' });
  if (result.error) assert.fail(`${cmd} could not run (${result.error.message}); .ci/run installs it`);
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

function nftCheck(ruleset: string): { status: number | null; output: string } {
  const dir = tempDir();
  try {
    const file = join(dir, 'nftables.conf');
    writeFileSync(file, ruleset);
    // a private network namespace: checking needs CAP_NET_ADMIN, and nothing touches the host's rules
    return run('unshare', ['--net', 'nft', '-c', '-f', file]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('the user-data is valid cloud-config according to Debian\'s cloud-init schema', () => {
  const dir = tempDir();
  try {
    for (const [name, text] of [
      ['plain.yaml', renderUserData(input({ relayConfigYaml: renderRelayConfig({ hostname: 'mail.acme.example', domains: ['acme.example'], relay: {}, listenIpv6: true }).yaml }))],
      ['compressed.yaml', renderUserData(input({ adminUsers: tenAdmins(RSA2048), sshHostKey: undefined }))],
    ] as const) {
      assert.equal(text.includes('encoding: gz+b64'), name === 'compressed.yaml', `${name} covers its encoding of the relay config`);
      const file = join(dir, name);
      writeFileSync(file, text);
      const result = run('cloud-init', ['schema', '--config-file', file]);
      assert.equal(result.status, 0, result.output);
      assert.match(result.output, /Valid cloud-config/);
      assert.doesNotMatch(result.output, /deprecat/i);
    }
    // the check itself can fail: a wrong type is refused
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, '#cloud-config\nssh_pwauth: [nope]\n');
    assert.notEqual(run('cloud-init', ['schema', '--config-file', bad]).status, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('only known top-level keys are used', () => {
  const config = cloudConfigOf(renderUserData(input({ http01: true })));
  const unknown = Object.keys(config).filter((key) => !ALLOWED_TOP_LEVEL_KEYS.includes(key));
  assert.deepEqual(unknown, []);
  // and every allowed key is a real cloud-config key of the installed cloud-init
  const schemaPath = execFileSync('/usr/bin/python3', ['-c', 'import cloudinit.config.schema as s, os; print(os.path.join(os.path.dirname(s.__file__), "schemas", "schema-cloud-config-v1.json"))'], { encoding: 'utf8' }).trim();
  const schema = JSON.parse(readFileSync(schemaPath, 'utf8')) as { $defs: Record<string, { properties?: Record<string, unknown> }> };
  const known = new Set(Object.values(schema.$defs).flatMap((def) => Object.keys(def.properties ?? {})));
  assert.deepEqual(ALLOWED_TOP_LEVEL_KEYS.filter((key) => !known.has(key)), []);
});

test('password and root logins are disabled', () => {
  const config = cloudConfigOf(renderUserData(input()));
  assert.equal(config.ssh_pwauth, false);
  assert.equal(config.disable_root, true);
  const sshdPath = config.write_files.find((f) => f.path.startsWith('/etc/ssh/sshd_config.d/'))?.path;
  assert.ok(sshdPath);
  const sshd = fileOf(config, sshdPath);
  assert.match(sshd.path, /\/0\d-[a-z-]+\.conf$/, 'sorts before other drop-ins (sshd keeps the first value)');
  for (const line of ['PasswordAuthentication no', 'KbdInteractiveAuthentication no', 'PermitRootLogin no']) {
    assert.ok(sshd.content.split('\n').includes(line), line);
  }
  const admins = config.users.filter((u) => u.name === 'alice');
  assert.equal(admins.length, 1);
  assert.equal(admins[0]?.lock_passwd, true);
  assert.deepEqual(admins[0]?.ssh_authorized_keys, [`${ED25519} alice@laptop`]);
  assert.equal(admins[0]?.sudo, 'ALL=(ALL) NOPASSWD:ALL');
  assert.ok(!config.users.some((u) => typeof u !== 'object' || 'passwd' in u || 'plain_text_passwd' in u || 'hashed_passwd' in u));
  assert.throws(() => renderUserData(input({ adminUsers: [{ name: 'bob', sshKeys: [] }] })), /no SSH key/);
  assert.throws(() => renderUserData(input({ adminUsers: [{ name: 'root', sshKeys: [ED25519] }] })), /not allowed/);
});

test('SSH is only open to the admin CIDRs in the host firewall', () => {
  const ruleset = renderNftables({ adminCidrs: ['203.0.113.7/24', '198.51.100.9', '2001:db8:42::1/48'], http01: false });
  const result = nftCheck(ruleset);
  assert.equal(result.status, 0, result.output);
  const lines = ruleset.split('\n').map((l) => l.trim());
  assert.ok(lines.includes('type filter hook input priority filter; policy drop;'));
  assert.ok(lines.includes('type filter hook forward priority filter; policy drop;'));
  assert.ok(lines.includes('elements = { 203.0.113.0/24, 198.51.100.9/32 }'), 'IPv4 set, canonical networks');
  assert.ok(lines.includes('elements = { 2001:db8:42::/48 }'), 'IPv6 set');
  const sshRules = lines.filter((l) => /\bdport\b.*\b22\b/.test(l));
  assert.deepEqual(sshRules, ['ip saddr @admin_v4 tcp dport 22 accept', 'ip6 saddr @admin_v6 tcp dport 22 accept']);
  assert.ok(lines.includes('tcp dport { 25, 465, 587 } accept'));
  // the user-data carries this same firewall
  const config = cloudConfigOf(renderUserData(input()));
  assert.equal(fileOf(config, '/etc/nftables.conf').content, renderNftables({ adminCidrs: input().adminCidrs, http01: false }));
  assert.ok(config.runcmd.some((c) => c.join(' ') === 'systemctl enable --now nftables.service'));
  // refusals, and a broken ruleset really fails the nft check
  assert.throws(() => renderNftables({ adminCidrs: ['0.0.0.0/0'], http01: false }), /whole Internet/);
  assert.throws(() => renderNftables({ adminCidrs: ['::/0'], http01: false }), /whole Internet/);
  assert.throws(() => renderNftables({ adminCidrs: [], http01: false }), /at least one/);
  assert.throws(() => renderNftables({ adminCidrs: ['10.0.0.0/8; flush ruleset'], http01: false }), /not an IPv4 or IPv6 CIDR/);
  assert.notEqual(nftCheck(ruleset.replace('policy drop;', 'policy dorp;')).status, 0);
});

test('port 80 is closed unless HTTP-01 is enabled', () => {
  const closed = renderNftables({ adminCidrs: ['203.0.113.0/24'], http01: false });
  const open = renderNftables({ adminCidrs: ['203.0.113.0/24'], http01: true });
  const port80 = (text: string) => text.split('\n').filter((l) => /\bdport\b[^;]*\b80\b/.test(l)).map((l) => l.trim());
  assert.deepEqual(port80(closed), []);
  assert.deepEqual(port80(open), ['tcp dport 80 accept']);
  assert.equal(nftCheck(open).status, 0);
});

test('port 443 is closed unless the relay serves the MTA-STS policy', () => {
  const https = (text: string) => text.split('\n').filter((l) => /\bdport\b[^;]*\b443\b/.test(l)).map((l) => l.trim());
  assert.deepEqual(https(renderNftables({ adminCidrs: ['203.0.113.0/24'], http01: true })), []);
  const open = renderNftables({ adminCidrs: ['203.0.113.0/24'], http01: true, mtaStsPolicy: true });
  assert.deepEqual(https(open), ['tcp dport 443 accept']);
  const result = nftCheck(open);
  assert.equal(result.status, 0, result.output);
  // the user-data carries the same choice
  assert.deepEqual(https(fileOf(cloudConfigOf(renderUserData(input({ http01: true, mtaStsPolicy: true }))), '/etc/nftables.conf').content), ['tcp dport 443 accept']);
  assert.deepEqual(https(fileOf(cloudConfigOf(renderUserData(input())), '/etc/nftables.conf').content), []);
});

test('admins are in the relay\'s group, so they use the admin socket without sudo, and that group exists before them', () => {
  const config = cloudConfigOf(renderUserData(input({ adminUsers: [{ name: 'alice', sshKeys: [ED25519] }, { name: 'bob', sshKeys: [ED25519] }] })));
  // cloud-init creates users in list order; an admin first would create the group and make `useradd --system ownrelay` fail
  assert.deepEqual(config.users.map((u) => u.name), ['ownrelay', 'alice', 'bob']);
  for (const admin of config.users.slice(1)) assert.deepEqual(admin.groups, ['adm', 'systemd-journal', 'ownrelay']);
  // the socket lives in the state directory, which the unit makes writable and the group may enter
  const unit = renderRelayUnit().split('\n');
  assert.ok(unit.includes('StateDirectory=ownrelay'));
  assert.ok(unit.includes('StateDirectoryMode=0750'));
  assert.ok(unit.some((l) => l.startsWith('ReadWritePaths=') && l.split(/[= ]/).includes('/var/lib/ownrelay')));
  assert.ok(unit.some((l) => l.startsWith('RestrictAddressFamilies=') && l.includes('AF_UNIX')));
});

test('the relay unit runs unprivileged with only CAP_NET_BIND_SERVICE', () => {
  const unit = renderRelayUnit();
  const lines = unit.split('\n');
  for (const line of [
    'User=ownrelay',
    'ExecStart=/opt/ownrelay/current/ownrelay.js run --config /etc/ownrelay/ownrelay.yaml',
    'ConditionPathExists=/opt/ownrelay/current/ownrelay.js',
    'AmbientCapabilities=CAP_NET_BIND_SERVICE',
    'CapabilityBoundingSet=CAP_NET_BIND_SERVICE',
    'NoNewPrivileges=yes',
    'ProtectSystem=strict',
    'ProtectHome=yes',
    'PrivateTmp=yes',
    'ProtectKernelTunables=yes',
    'Restart=on-failure',
    'KillSignal=SIGTERM',
    'TimeoutStopSec=60',
    'LimitNOFILE=65536',
    'Environment=UV_THREADPOOL_SIZE=16',
    // SIGHUP re-reads the config: `systemctl reload ownrelay` applies an edit without dropping a connection
    'ExecReload=/bin/kill -HUP $MAINPID',
  ]) {
    assert.ok(lines.includes(line), line);
  }
  assert.equal(lines.filter((l) => /^(Ambient)?Capabilit/.test(l)).length, 2);
  assert.ok(!lines.some((l) => /^MemoryDenyWriteExecute=/.test(l)), 'V8 needs writable+executable memory');
  assert.ok(!lines.some((l) => /^(User=root|PermissionsStartOnly|ExecStart=\+|ExecStart=!)/.test(l)));
  const rw = lines.find((l) => l.startsWith('ReadWritePaths='));
  // the rendered relay config writes only below these: spool, state (and the Maildirs inside it)
  assert.equal(rw, 'ReadWritePaths=/var/spool/ownrelay /var/lib/ownrelay');
  assert.deepEqual(SERVER_PATHS, { spool: '/var/spool/ownrelay', mail: '/var/lib/ownrelay/mail', state: '/var/lib/ownrelay/state' });
  // a Maildir root elsewhere is added, optional until it exists
  assert.match(renderRelayUnit({ mailDir: '/var/mail/ownrelay' }), /^ReadWritePaths=\/var\/spool\/ownrelay \/var\/lib\/ownrelay -\/var\/mail\/ownrelay$/m);

  // systemd itself accepts both units, in a throwaway root that has the bundle and the system units
  const root = tempDir();
  try {
    const unitDir = join(root, 'etc', 'systemd', 'system');
    mkdirSync(unitDir, { recursive: true });
    cpSync('/usr/lib/systemd/system', join(root, 'usr', 'lib', 'systemd', 'system'), { recursive: true, verbatimSymlinks: true });
    // ExecReload's /bin/kill, laid out as on a merged-/usr Debian (/bin -> usr/bin)
    mkdirSync(join(root, 'usr', 'bin'), { recursive: true });
    copyFileSync('/usr/bin/kill', join(root, 'usr', 'bin', 'kill'));
    symlinkSync('usr/bin', join(root, 'bin'));
    mkdirSync(join(root, 'opt', 'ownrelay', 'current'), { recursive: true });
    writeFileSync(join(root, 'opt', 'ownrelay', 'current', 'ownrelay.js'), '#!/bin/sh\n');
    chmodSync(join(root, 'opt', 'ownrelay', 'current', 'ownrelay.js'), 0o755);
    writeFileSync(join(unitDir, 'ownrelay.service'), unit);
    writeFileSync(join(unitDir, mountUnitName('/var/spool/ownrelay')), renderSpoolMountUnit());
    const ok = run('systemd-analyze', ['verify', `--root=${root}`, 'ownrelay.service', mountUnitName('/var/spool/ownrelay')]);
    assert.equal(ok.status, 0, ok.output);
    assert.equal(ok.output.trim(), '', 'no warnings (systemd only warns about unknown keys and bad values)');
    // without the spool's mount unit the relay cannot start
    rmSync(join(unitDir, mountUnitName('/var/spool/ownrelay')));
    const noMount = run('systemd-analyze', ['verify', `--root=${root}`, 'ownrelay.service']);
    assert.notEqual(noMount.status, 0);
    assert.match(noMount.output, /var-spool-ownrelay\.mount/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('the spool volume is formatted only once and mounted before the relay starts', () => {
  const config = cloudConfigOf(renderUserData(input()));
  assert.deepEqual(config.fs_setup, [{ label: 'ownrelay-spool', filesystem: 'ext4', device: '/dev/nvme1n1', partition: 'auto', overwrite: false }]);
  const mount = fileOf(config, '/etc/systemd/system/var-spool-ownrelay.mount').content.split('\n');
  assert.ok(mount.includes('What=/dev/disk/by-label/ownrelay-spool'));
  assert.ok(mount.includes('Where=/var/spool/ownrelay'));
  const unit = fileOf(config, '/etc/systemd/system/ownrelay.service').content.split('\n');
  assert.ok(unit.includes('Requires=var-spool-ownrelay.mount'));
  assert.ok(unit.some((l) => l.startsWith('After=') && l.split(/[= ]/).includes('var-spool-ownrelay.mount')));
  const commands = config.runcmd.map((c) => c.join(' '));
  const mountAt = commands.indexOf('systemctl enable --now var-spool-ownrelay.mount');
  const chownAt = commands.findIndex((c) => c.includes('chown -R') && c.includes('/var/spool/ownrelay'));
  const startAt = commands.indexOf('systemctl start --no-block ownrelay.service');
  assert.ok(mountAt >= 0 && chownAt > mountAt && startAt > chownAt, commands.join('\n'));
  // a grown volume grows the file system when udev reports the new size (test/server grows a real one)
  const rule = fileOf(config, '/etc/udev/rules.d/90-ownrelay-spool-grow.rules').content;
  assert.match(rule, /^ACTION=="change", SUBSYSTEM=="block", ENV\{RESIZE\}=="1", ENV\{ID_FS_LABEL\}=="ownrelay-spool", RUN\+="\/usr\/bin\/systemd-run --no-block --collect --unit=ownrelay-spool-grow \/usr\/sbin\/resize2fs \/dev\/%k"$/m);
  assert.ok(commands.indexOf('udevadm control --reload') > mountAt);
  // the relay's queue is on that volume, and its config is readable by the relay's group only
  assert.throws(() => renderUserData(input({ relayConfigYaml: 'hostname: mail.acme.example\n' })), /paths\.spool/);
  const relayConfig = fileOf(config, '/etc/ownrelay/ownrelay.yaml');
  assert.deepEqual([relayConfig.permissions, relayConfig.owner, relayConfig.defer], ['0640', 'root:ownrelay', true]);
  const relayUser = config.users.find((u) => u.name === 'ownrelay');
  assert.equal(relayUser?.system, true);
  assert.equal(relayUser?.shell, '/usr/sbin/nologin');
});

function tenAdmins(key: string): UserDataInput['adminUsers'] {
  return Array.from({ length: 10 }, (_, i) => ({ name: `admin${i}`, sshKeys: [`${key} admin${i}@workstation`] }));
}

test('the user-data stays under 16 KB with 10 admins and a long relay config', () => {
  // the worst cases: 10 Ed25519 admins with the host key and the whole commented example
  // config, and 10 RSA-2048 admins with that config but no host key
  for (const [key, sshHostKey] of [[ED25519, HOST_KEY], [RSA2048, undefined]] as const) {
    const text = renderUserData(input({ adminUsers: tenAdmins(key), sshHostKey, http01: true, adminCidrs: ['203.0.113.0/24', '198.51.100.0/24', '2001:db8::/32'] }));
    assert.ok(Buffer.byteLength(text) <= USER_DATA_MAX_BYTES, `${Buffer.byteLength(text)} bytes`);
    const config = cloudConfigOf(text);
    assert.equal(config.users.length, 11);
    // whatever encoding was needed, the relay gets the settings it was given (comments may be dropped to fit)
    const content = fileOf(config, '/etc/ownrelay/ownrelay.yaml').content;
    assert.deepEqual(parse(content), parse(EXAMPLE_CONFIG));
  }
  // 30 KB of settings that gzip cannot shrink enough (comments would be dropped)
  const noise = Array.from({ length: 700 }, (_, i) => createHash('sha256').update(String(i)).digest('base64')).join('');
  const huge = `${EXAMPLE_CONFIG}\nnoise: "${noise}"\n`;
  assert.throws(() => renderUserData(input({ relayConfigYaml: huge })), /over the 16384-byte limit/);
});

test('what the infra program really ships fits: 10 RSA-2048 admins, the host key and the rendered relay config', () => {
  // the first-boot config (no overrides, DKIM keys or certificate settings: they come with the deploy)
  const { yaml } = renderRelayConfig({ hostname: 'mail.acme.example', domains: ['acme.example'], relay: {}, listenIpv6: true });
  const text = renderUserData(input({ adminUsers: tenAdmins(RSA2048), relayConfigYaml: yaml }));
  assert.ok(Buffer.byteLength(text) <= USER_DATA_MAX_BYTES, `${Buffer.byteLength(text)} bytes`);
  assert.doesNotMatch(text, /gz\+b64/, 'with room to spare: the config stays readable');
});

test('the host SSH key the infra program generated is installed, so the deploy can pin it', () => {
  const config = parse(renderUserData(input()).replace(/^#cloud-config\n/, '')) as { ssh_keys?: Record<string, string> };
  assert.equal(config.ssh_keys?.ed25519_public, HOST_KEY.publicKeyOpenssh.trim());
  assert.match(config.ssh_keys?.ed25519_private ?? '', /^-----BEGIN OPENSSH PRIVATE KEY-----/);
});
