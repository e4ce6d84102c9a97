/**
 * A Debian 13 relay host under qemu, for the end-to-end server test.
 *
 * - `buildImage()` runs test/vm/build-image.sh with the user-data's HOST_PACKAGES
 *   and returns the cached image directory (root.raw, vmlinuz, initrd.img).
 * - `QemuVm` boots that image through a copy-on-write overlay (the cached image
 *   is never written), with a blank second disk as the spool device (/dev/vdb)
 *   and a NoCloud seed (cloud-localds) holding the given user-data as the third
 *   disk. qemu runs inside the test's network namespace (lab-net.ts) with user
 *   networking: the guest reaches the host's veth address only; `hostfwd` exposes
 *   the guest's ports 22, 25, 587 and one probe port on the namespace address.
 *   TCG (software emulation): KVM is not usable on the CI machines.
 * - `ssh()` runs a command as the admin user with the host key pinned
 *   (StrictHostKeyChecking=yes against a known_hosts holding only the key the
 *   user-data installs); a host answering with another key gets nothing.
 * - `powerCut()` is SIGKILL of qemu: the guest's unflushed page cache is lost, what
 *   the guest flushed to its disks is kept (qemu writes it to the image files).
 * - `resizeDisk()` grows a disk under the running guest (qemu's block_resize over
 *   its QMP socket), as AWS grows a modified EBS volume.
 * The disks survive `stop()`/`powerCut()`; `boot()` again starts the same machine.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { HOST_PACKAGES } from '../../infra/render/user-data';
import { runCommand, waitUntil, type CommandResult } from '../helpers/postfix';
import { NS_ADDRESS, type LabNet } from './lab-net';

export const GUEST_PORTS = { ssh: 22, mx: 25, submission: 587, probe: 8080 } as const;
/** where each guest port is forwarded to, on NS_ADDRESS (the namespace is the test's own: these ports are free) */
export const FORWARDED_PORTS = { ssh: 2222, mx: 2525, submission: 2587, probe: 2808 } as const;

const REPO = join(__dirname, '..', '..');

/** Builds (or finds in the cache) the image; returns its directory. */
export function buildImage(): string {
  const out = execFileSync('bash', [join(__dirname, 'build-image.sh'), ...HOST_PACKAGES], { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 30 * 60_000 });
  const dir = out.trim().split('\n').pop();
  if (!dir) throw new Error('build-image.sh printed no image directory');
  return dir;
}

export interface VmOptions {
  imageDir: string;
  /** scratch directory for the overlay, spool disk, seed, keys and console log */
  workDir: string;
  net: LabNet;
  userData: string;
  instanceId: string;
  /** the admin user's login and private key file */
  adminUser: string;
  adminKeyFile: string;
  /** the host's public key as the user-data installs it ("ssh-ed25519 AAAA...") */
  hostPublicKey: string;
  memoryMiB?: number;
}

class KernelPanic extends Error {
  constructor(console: string) {
    super(`the guest kernel panicked:\n${console}`);
  }
}

export class QemuVm {
  private child?: ChildProcess;
  private exited = true;
  private readonly knownHosts: string;
  readonly consoleLog: string;

  constructor(private readonly opts: VmOptions) {
    this.knownHosts = join(opts.workDir, 'known_hosts');
    this.consoleLog = join(opts.workDir, 'console.log');
    const [type, key] = opts.hostPublicKey.trim().split(/\s+/);
    writeFileSync(this.knownHosts, `[${NS_ADDRESS}]:${FORWARDED_PORTS.ssh} ${type} ${key}\n`);
    const overlay = join(opts.workDir, 'root.qcow2');
    if (!existsSync(overlay)) {
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', join(opts.imageDir, 'root.raw'), overlay]);
      execFileSync('truncate', ['-s', '1G', join(opts.workDir, 'spool.raw')]);
      writeFileSync(join(opts.workDir, 'user-data'), opts.userData);
      writeFileSync(join(opts.workDir, 'meta-data'), `instance-id: ${opts.instanceId}\n`);
      // the platform's network metadata (EC2 serves its own): IPv4 DHCP. Without it cloud-init's
      // fallback also asks for DHCPv6, which qemu's user network never answers (ifup waits 5 min)
      writeFileSync(join(opts.workDir, 'network-config'), 'version: 2\nethernets:\n  eth0:\n    dhcp4: true\n');
      execFileSync('cloud-localds', [`--network-config=${join(opts.workDir, 'network-config')}`, join(opts.workDir, 'seed.img'), join(opts.workDir, 'user-data'), join(opts.workDir, 'meta-data')]);
    }
  }

  private get qmpSocket(): string {
    return join(this.opts.workDir, 'qmp.sock');
  }

  /** Grows a disk of the running guest to `bytes` (block_resize); the guest sees a capacity change at once. */
  async resizeDisk(drive: 'spool', bytes: number): Promise<void> {
    await qmp(this.qmpSocket, [{ execute: 'qmp_capabilities' }, { execute: 'block_resize', arguments: { device: drive, size: bytes } }]);
  }

  get running(): boolean {
    return !this.exited;
  }

  /** Starts qemu; resolves once the process runs (see waitForSsh). */
  boot(): void {
    if (this.running) throw new Error('the VM is already running');
    const { workDir, imageDir } = this.opts;
    const fwd = (Object.keys(GUEST_PORTS) as (keyof typeof GUEST_PORTS)[])
      .map((name) => `hostfwd=tcp:${NS_ADDRESS}:${FORWARDED_PORTS[name]}-:${GUEST_PORTS[name]}`)
      .join(',');
    const args = [
      '-name', 'ownrelay-test',
      // one vCPU: with two, multi-threaded TCG now and then crashes the guest kernel while
      // it patches its own code at boot (an int3 oops in sched_clock), three boots in a row once
      '-machine', 'q35', '-accel', 'tcg', '-cpu', 'max', '-smp', '1', '-m', String(this.opts.memoryMiB ?? 1024),
      '-display', 'none', '-serial', `file:${this.consoleLog}`, '-monitor', 'none', '-no-user-config', '-nodefaults',
      '-kernel', join(imageDir, 'vmlinuz'), '-initrd', join(imageDir, 'initrd.img'),
      '-append', 'root=/dev/vda rw console=ttyS0 net.ifnames=0',
      '-drive', `file=${join(workDir, 'root.qcow2')},if=virtio,format=qcow2`,
      '-drive', `file=${join(workDir, 'spool.raw')},if=virtio,format=raw,id=spool`,
      '-qmp', `unix:${this.qmpSocket},server=on,wait=off`,
      '-drive', `file=${join(workDir, 'seed.img')},if=virtio,format=raw,readonly=on`,
      '-netdev', `user,id=net0,${fwd}`,
      '-device', 'virtio-net-pci,netdev=net0',
      '-device', 'virtio-rng-pci',
    ];
    const command = this.opts.net.exec('qemu-system-x86_64', args);
    let stderr = '';
    const child = spawn(command.file, command.args, { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    this.exited = false;
    child.on('exit', (code, signal) => {
      this.exited = true;
      if (code !== 0 && signal === null) process.stderr.write(`qemu exited ${String(code)}: ${stderr}\n`);
    });
    this.child = child;
  }

  /** Power cut: SIGKILL to qemu, then waits for it to be gone. */
  async powerCut(): Promise<void> {
    if (!this.child || this.exited) return;
    this.child.kill('SIGKILL');
    await waitUntil(() => this.exited, 10_000, () => 'qemu survived SIGKILL');
  }

  /** Clean shutdown through the guest (poweroff), SIGKILL after the timeout. */
  async stop(timeoutMs = 120_000): Promise<void> {
    if (!this.running) return;
    await this.ssh('sudo systemctl poweroff', { timeoutMs: 15_000 }).catch(() => undefined);
    await waitUntil(() => this.exited, timeoutMs, () => 'the guest did not power off').catch(() => this.powerCut());
  }

  /** The options of every ssh/scp call: the admin key only, the host key pinned. */
  sshOptions(): string[] {
    return [
      '-i', this.opts.adminKeyFile,
      '-o', 'IdentitiesOnly=yes',
      '-o', 'BatchMode=yes',
      '-o', `UserKnownHostsFile=${this.knownHosts}`,
      '-o', 'GlobalKnownHostsFile=/dev/null',
      '-o', 'StrictHostKeyChecking=yes',
      '-o', 'ConnectTimeout=10',
      '-o', 'ServerAliveInterval=5',
      '-o', 'LogLevel=ERROR',
    ];
  }

  /** Runs a shell command on the guest as the admin user. */
  ssh(command: string, opts: { timeoutMs?: number; input?: string; user?: string; extraOptions?: string[] } = {}): Promise<CommandResult> {
    return runCommand(
      'ssh',
      // ssh keeps the first value of an option: the extra options go first
      [...(opts.extraOptions ?? []), ...this.sshOptions(), '-p', String(FORWARDED_PORTS.ssh), `${opts.user ?? this.opts.adminUser}@${NS_ADDRESS}`, command],
      { timeoutMs: opts.timeoutMs ?? 120_000, input: opts.input },
    );
  }

  /** Like ssh(), but throws with the output when the command fails. */
  async sshOk(command: string, opts: { timeoutMs?: number; input?: string } = {}): Promise<string> {
    const result = await this.ssh(command, opts);
    if (result.code !== 0) throw new Error(`on the guest, \`${command}\` exited ${String(result.code)}:\n${result.stdout}\n${result.stderr}`);
    return result.stdout;
  }

  /** Copies local files into a directory on the guest (relative paths start in the admin's home), over SFTP. */
  async copyTo(files: string[], remoteDir: string): Promise<void> {
    const result = await runCommand('scp', [...this.sshOptions(), '-q', '-P', String(FORWARDED_PORTS.ssh), ...files, `${this.opts.adminUser}@${NS_ADDRESS}:${remoteDir}/`], { timeoutMs: 300_000 });
    if (result.code !== 0) throw new Error(`scp to the guest failed: ${result.stderr}`);
  }

  /** Waits until SSH with the admin key (and the pinned host key) works; returns the guest's boot id. */
  async waitForSsh(timeoutMs = 600_000): Promise<string> {
    let last = '';
    let bootId = '';
    await waitUntil(
      async () => {
        if (this.exited) throw new Error(`qemu exited while waiting for SSH; console:\n${this.consoleTail()}`);
        if (this.kernelPanicked()) throw new KernelPanic(this.consoleTail());
        // cloud-init restarts sshd with the rendered host key: wait for it to finish before the first real command
        const result = await this.ssh('cloud-init status --wait >/dev/null; cat /proc/sys/kernel/random/boot_id', { timeoutMs: 600_000 }).catch((err: Error) => ({ code: -1, stdout: '', stderr: err.message }));
        last = result.stderr.trim();
        bootId = result.stdout.trim();
        return result.code === 0;
      },
      timeoutMs,
      () => `no SSH to the guest: ${last}\nconsole:\n${this.consoleTail()}`,
      3000,
    );
    return bootId;
  }

  /**
   * Boots and waits for SSH. Software emulation with several threads now and then
   * crashes the guest kernel within its first seconds (before the root file system
   * is mounted, so no disk is touched); such a boot is cut and started again.
   */
  async bootAndWaitForSsh(attempts = 5): Promise<string> {
    for (let attempt = 1; ; attempt++) {
      this.boot();
      try {
        return await this.waitForSsh();
      } catch (err) {
        if (!(err instanceof KernelPanic) || attempt >= attempts) throw err;
        process.stderr.write(`the guest kernel crashed while booting (attempt ${attempt}), booting again\n`);
        await this.powerCut();
      }
    }
  }

  private kernelPanicked(): boolean {
    try {
      const console = readFileSync(this.consoleLog, 'utf8');
      return console.includes('Kernel panic - not syncing') || /\bOops: /.test(console);
    } catch {
      return false;
    }
  }

  consoleTail(lines = 60): string {
    try {
      return readFileSync(this.consoleLog, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no console output)';
    }
  }
}

/**
 * Runs QMP commands in order on qemu's QMP socket (one JSON object per line):
 * after the greeting, each command's "return" is awaited; an "error" rejects.
 * Asynchronous "event" lines are skipped.
 */
function qmp(socketPath: string, commands: Array<{ execute: string; arguments?: Record<string, unknown> }>): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    const timer = setTimeout(() => finish(new Error(`QMP on ${socketPath} did not answer`)), 30_000);
    let buffer = '';
    let next = -1; // -1: waiting for the greeting
    const finish = (err?: Error): void => {
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve();
    };
    socket.setEncoding('utf8');
    socket.on('error', (err) => finish(err));
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      let newline: number;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (line === '') continue;
        const message = JSON.parse(line) as { return?: unknown; error?: { desc?: string }; event?: string };
        if (message.event !== undefined) continue;
        if (message.error) return finish(new Error(`QMP ${commands[next]?.execute ?? 'greeting'}: ${message.error.desc ?? JSON.stringify(message.error)}`));
        next++;
        if (next === commands.length) return finish();
        socket.write(`${JSON.stringify(commands[next])}\n`);
      }
    });
  });
}
