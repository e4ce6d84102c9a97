/**
 * End to end on a real Debian 13 host: the image carries the packages the
 * user-data asks for (test/vm/build-image.sh, cached), qemu boots it with exactly
 * the user-data the Pulumi program renders for a test customer, and then, in
 * order on one VM:
 * - first boot: cloud-init done without errors, SSH only with the admin key and
 *   the pinned host key, no password or root login, the host firewall dropping
 *   what the security group does not admit, the spool on its own disk, whose file
 *   system grows when the disk grows, the relay's own resolver on loopback;
 * - the deploy Pulumi runs, over SSH: a release starts the relay, a bad config is
 *   refused with the running relay untouched, a rollback switches back;
 * - mail: swaks submits on 587 (STARTTLS, AUTH), the relay resolves the MX through
 *   dnsmasq serving the rendered records and delivers to a Postfix on the host;
 *   SPF of the relay's address passes (spfquery, with the rendered SPF record);
 * - a reboot with mail queued (destination down): the queue survives and delivers;
 * - a power cut (SIGKILL of qemu) during submissions with the destination down:
 *   every message that got a 250 is delivered after the next boot.
 *
 * Everything the guest reaches is in the test's network namespace (test/vm/lab-net.ts).
 * Needs root, qemu-system-x86, qemu-utils, debootstrap, cloud-image-utils,
 * dnsmasq-base, openssh-client, swaks, postfix, spfquery and iproute2.
 * Prints the time of each phase ("phase <name>: <seconds> s").
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RELAY_CONFIG_PATH } from '../../infra/render/relay-config';
import { REMOTE_DEPLOY_SCRIPT_PATH } from '../../infra/render/deploy-script';
import { startPostfix, runCommand, waitUntil, type PostfixInstance } from '../helpers/postfix';
import { SmtpDialog } from '../helpers/smtp-dialog';
import { deployOverSsh } from '../vm/deploy-over-ssh';
import { startDnsmasq, type Dnsmasq } from '../vm/dnsmasq';
import { createLabNet, HOST_ADDRESS, NS_ADDRESS, type LabNet } from '../vm/lab-net';
import { FORWARDED_PORTS, QemuVm, buildImage } from '../vm/qemu-vm';
import {
  ADMIN_USER, CUSTOMER_DOMAIN, RELAY_HOSTNAME, REMOTE_DOMAIN, REMOTE_MX, SENDER, SMTP_PASSWORD, SMTP_USER, makeTestCustomer, type TestCustomer,
} from '../vm/test-customer';

const REPO = join(__dirname, '..', '..');
const BUNDLE = join(REPO, 'dist', 'ownrelay.js');

let work = '';
let net: LabNet | undefined;
let dns: Dnsmasq | undefined;
let destination: PostfixInstance | undefined;
let vm: QemuVm | undefined;
let customer: TestCustomer;
let firstVersion = '';
/** the config the relay runs on now */
let currentConfig = '';

function phase(name: string, startedAt: number): void {
  process.stdout.write(`phase ${name}: ${((Date.now() - startedAt) / 1000).toFixed(1)} s\n`);
}

function theVm(): QemuVm {
  assert.ok(vm, 'the VM was not booted');
  return vm;
}

/** The Postfix acting as dest.test's MX: on the host's veth address, port 25, where the rendered MX points. */
async function startDestination(): Promise<PostfixInstance> {
  const instance = await startPostfix({ hostname: REMOTE_MX, destinationDomains: [REMOTE_DOMAIN], serverTls: true, parentDir: work });
  const masterCf = join(instance.configDir, 'master.cf');
  writeFileSync(masterCf, readFileSync(masterCf, 'utf8').replace(`127.0.0.1:${instance.port} inet`, `${HOST_ADDRESS}:25 inet`));
  await instance.reload();
  await waitUntil(() => canConnect(HOST_ADDRESS, 25), 15_000, () => `Postfix does not listen on ${HOST_ADDRESS}:25:\n${instance.log()}`);
  return instance;
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    socket.setTimeout(2000, () => (socket.destroy(), resolve(false)));
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
}

async function relayIsActive(): Promise<boolean> {
  return (await theVm().ssh('systemctl is-active --quiet ownrelay.service')).code === 0;
}

async function relayMainPid(): Promise<string> {
  return (await theVm().sshOk('systemctl show -p MainPID --value ownrelay.service')).trim();
}

async function waitForRelayPorts(): Promise<void> {
  let listening = '';
  await waitUntil(
    async () => {
      listening = await theVm().sshOk('ss -ltnH');
      return [25, 465, 587].every((port) => new RegExp(`:${port}\\s`).test(listening));
    },
    120_000,
    () => `the relay does not listen on 25, 465 and 587:\n${listening}`,
    2000,
  );
}

async function spoolMessageFiles(): Promise<string[]> {
  const out = await theVm().sshOk("sudo find /var/spool/ownrelay -type f -not -path '*/tmp/*' -not -path '*/lost+found/*' -printf '%P\\n'");
  return out.split('\n').filter(Boolean).sort();
}

/** Submits one message with swaks on 587 (STARTTLS, AUTH PLAIN); returns swaks' output. */
async function submit(subject: string): Promise<string> {
  const result = await runCommand('swaks', [
    '--server', NS_ADDRESS, '--port', String(FORWARDED_PORTS.submission), '--tls', '--auth', 'PLAIN',
    '--auth-user', SMTP_USER, '--auth-password', SMTP_PASSWORD, '--from', SENDER, '--to', `bob@${REMOTE_DOMAIN}`,
    '--ehlo', 'app.acme.test', '--header', `Subject: ${subject}`, '--body', `token ${subject}\n`, '--timeout', '60',
  ], { timeoutMs: 120_000 });
  assert.equal(result.code, 0, `swaks failed:\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

/** Tokens (Subject lines) of the messages the destination stored, with repeats. */
function deliveredTokens(instance: PostfixInstance): string[] {
  return instance.deliveredMessages().map((text) => /^Subject: (.*)$/m.exec(text)?.[1]?.trim() ?? '');
}

/**
 * Sends messages over plain SMTP to the relay's port 25 (the host is in
 * relay.networks) on `sessions` connections until `stop()` says so or a session
 * breaks; records the token of every message answered 250.
 */
async function sendUntilStopped(prefix: string, sessions: number, accepted: string[], stop: () => boolean): Promise<void> {
  let next = 0;
  const session = async (): Promise<void> => {
    let dialog: SmtpDialog;
    try {
      dialog = await SmtpDialog.connect(FORWARDED_PORTS.mx, { host: NS_ADDRESS });
      if ((await dialog.read(30_000)).code !== 220) return;
      if ((await dialog.command('EHLO load.acme.test', 30_000)).code !== 250) return;
    } catch {
      return;
    }
    try {
      while (!stop()) {
        const token = `${prefix}-${next++}`;
        if ((await dialog.command(`MAIL FROM:<${SENDER}>`, 30_000)).code !== 250) return;
        if ((await dialog.command(`RCPT TO:<bob@${REMOTE_DOMAIN}>`, 30_000)).code !== 250) return;
        if ((await dialog.command('DATA', 30_000)).code !== 354) return;
        dialog.write(`From: <${SENDER}>\r\nTo: <bob@${REMOTE_DOMAIN}>\r\nSubject: ${token}\r\n\r\n${'load '.repeat(200)}\r\n.\r\n`);
        const reply = await dialog.read(60_000);
        if (reply.code === 250) accepted.push(token);
        else return;
      }
      await dialog.command('QUIT', 5000).catch(() => undefined);
    } catch {
      // the connection broke (the power cut)
    } finally {
      dialog.close();
    }
  };
  await Promise.all(Array.from({ length: sessions }, () => session()));
}

// a test run that is interrupted still takes its VM, namespace and servers down
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    void cleanUp().finally(() => process.exit(130));
  });
}

async function cleanUp(): Promise<void> {
  await vm?.powerCut();
  vm = undefined;
  await destination?.stop().catch(() => undefined);
  destination = undefined;
  await dns?.stop();
  dns = undefined;
  net?.destroy();
  net = undefined;
  if (work) rmSync(work, { recursive: true, force: true });
}

/**
 * Like a well-behaved client under a restart: each message is sent until it gets
 * a 250 (a refused or dropped connection, or a 4xx, is retried on a new
 * connection after a short pause); a 5xx is a failure. Stops starting new
 * messages once `stop()` says so.
 */
async function sendWithRetries(prefix: string, sessions: number, stop: () => boolean): Promise<{ accepted: string[]; retries: number; failed: string[] }> {
  const accepted: string[] = [];
  const failed: string[] = [];
  let retries = 0;
  let next = 0;
  const sendOne = async (token: string): Promise<'ok' | 'retry' | 'failed'> => {
    let dialog: SmtpDialog | undefined;
    try {
      dialog = await SmtpDialog.connect(FORWARDED_PORTS.mx, { host: NS_ADDRESS });
      const steps: [string | undefined, number][] = [[undefined, 220], ['EHLO load.acme.test', 250], [`MAIL FROM:<${SENDER}>`, 250], [`RCPT TO:<bob@${REMOTE_DOMAIN}>`, 250], ['DATA', 354]];
      for (const [line, want] of steps) {
        const reply = line === undefined ? await dialog.read(30_000) : await dialog.command(line, 30_000);
        if (reply.code !== want) return reply.code >= 500 ? 'failed' : 'retry';
      }
      dialog.write(`From: <${SENDER}>\r\nTo: <bob@${REMOTE_DOMAIN}>\r\nSubject: ${token}\r\n\r\n${'load '.repeat(200)}\r\n.\r\n`);
      const reply = await dialog.read(60_000);
      if (reply.code === 250) return 'ok';
      return reply.code >= 500 ? 'failed' : 'retry';
    } catch {
      return 'retry';
    } finally {
      dialog?.close();
    }
  };
  const session = async (): Promise<void> => {
    while (!stop()) {
      const token = `${prefix}-${next++}`;
      for (;;) {
        const outcome = await sendOne(token);
        if (outcome === 'ok') accepted.push(token);
        if (outcome === 'failed') failed.push(token);
        if (outcome !== 'retry') break;
        retries++;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  };
  await Promise.all(Array.from({ length: sessions }, () => session()));
  return { accepted, retries, failed };
}

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'ownrelay-server-test-'));
  // Postfix's daemons run as the postfix user and must reach their directory below this one
  chmodSync(work, 0o755);

  let startedAt = Date.now();
  const imageDir = buildImage();
  phase('image', startedAt);

  startedAt = Date.now();
  execFileSync('npm', ['run', '--silent', 'bundle'], { cwd: REPO, stdio: ['ignore', 'ignore', 'inherit'] });
  phase('bundle', startedAt);

  customer = await makeTestCustomer(work);
  net = createLabNet();
  dns = await startDnsmasq(customer.dnsRecords, HOST_ADDRESS, work);
  destination = await startDestination();

  startedAt = Date.now();
  vm = new QemuVm({
    imageDir, workDir: work, net, userData: customer.userData, instanceId: `ownrelay-test-${process.pid}`,
    adminUser: ADMIN_USER, adminKeyFile: customer.adminKeyFile, hostPublicKey: customer.hostKey.publicKeyOpenssh,
  });
  await vm.bootAndWaitForSsh();
  phase('first boot', startedAt);
});

after(cleanUp);

test('first boot: cloud-init ran exactly the rendered user-data and finished without errors', async () => {
  const status = JSON.parse(await theVm().sshOk('cloud-init status --format json')) as { status: string; errors: unknown[]; recoverable_errors: Record<string, unknown> };
  assert.equal(status.status, 'done');
  assert.deepEqual(status.errors, []);
  assert.deepEqual(status.recoverable_errors, {});
  assert.equal(await theVm().sshOk('sudo cat /var/lib/cloud/instance/user-data.txt'), customer.userData);
  assert.equal((await theVm().sshOk('hostname -f')).trim(), RELAY_HOSTNAME);
  assert.equal((await theVm().sshOk('systemctl is-system-running || true')).trim(), 'running');
});

test('first boot: SSH takes the admin key only, from a host with the pinned key', async () => {
  const v = theVm();
  // the connections so far pinned the rendered host key; a different pin is refused
  const otherKnownHosts = join(work, 'known_hosts.other');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', '', '-f', join(work, 'other_host_key')]);
  writeFileSync(otherKnownHosts, `[${NS_ADDRESS}]:${FORWARDED_PORTS.ssh} ${readFileSync(join(work, 'other_host_key.pub'), 'utf8')}`);
  const wrongPin = await v.ssh('true', { extraOptions: ['-o', `UserKnownHostsFile=${otherKnownHosts}`] });
  assert.notEqual(wrongPin.code, 0);
  assert.match(wrongPin.stderr, /host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/i);

  const password = await v.ssh('true', { extraOptions: ['-o', 'PubkeyAuthentication=no', '-o', 'PreferredAuthentications=password,keyboard-interactive'] });
  assert.notEqual(password.code, 0);
  assert.match(password.stderr, /Permission denied \(publickey\)/);

  const root = await v.ssh('id -u', { user: 'root' });
  assert.notEqual(root.code, 0);
  assert.doesNotMatch(root.stdout, /^0$/m);

  const sshd = await v.sshOk('sudo sshd -T');
  assert.match(sshd, /^passwordauthentication no$/m);
  assert.match(sshd, /^permitrootlogin no$/m);
  assert.match(sshd, /^kbdinteractiveauthentication no$/m);
});

test('first boot: the spool is the second disk, and the relay waits for its first deploy', async () => {
  const v = theVm();
  assert.equal((await v.sshOk('findmnt -n -o SOURCE,FSTYPE,LABEL --mountpoint /var/spool/ownrelay')).trim().split(/\s+/).join(' '), '/dev/vdb ext4 ownrelay-spool');
  assert.equal((await v.sshOk('stat -c %U:%a /var/spool/ownrelay')).trim(), 'ownrelay:750');
  assert.equal((await v.sshOk('systemctl is-enabled ownrelay.service')).trim(), 'enabled');
  assert.equal(await relayIsActive(), false);
});

test("the spool's file system grows with its volume, online, by the rendered udev rule", async () => {
  const v = theVm();
  const size = async () => Number((await v.sshOk('df -B1 --output=size /var/spool/ownrelay | tail -n 1')).trim());
  const before = await size();
  assert.ok(before > 0 && before < 1.1 * 1024 ** 3, `a 1 GiB volume at first (${before} bytes)`);
  // as AWS does with a modified EBS volume: the disk grows under the running host
  await v.resizeDisk('spool', 2 * 1024 ** 3);
  let now = before;
  try {
    await waitUntil(async () => (now = await size()) > 1.8 * 1024 ** 3, 90_000, () => `the file system is still ${now} bytes`, 2000);
  } catch (err) {
    const log = await v.ssh('sudo journalctl -b --no-pager -u ownrelay-spool-grow -u systemd-udevd | tail -n 40');
    throw new Error(`${(err as Error).message}; the journal says:\n${log.stdout}`);
  }
  assert.match(await v.sshOk('sudo journalctl -b --no-pager -u ownrelay-spool-grow'), /resize2fs/);
});

test('first boot: the host firewall admits SSH from the admin network and the mail ports, and drops the rest', async () => {
  const v = theVm();
  assert.equal((await v.sshOk('systemctl is-active nftables.service')).trim(), 'active');
  assert.match(await v.sshOk('sudo nft list chain inet filter input'), /policy drop/);
  // a listener on a port the security group does not open: reachable on the guest, not from outside
  await v.sshOk('sudo systemd-run --unit=ownrelay-probe python3 -m http.server 8080 --bind 0.0.0.0');
  await waitUntil(async () => (await v.ssh("python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/', timeout=5)\"")).code === 0, 60_000, () => 'the probe listener did not start', 1000);
  const reply = await new Promise<string>((resolve) => {
    let data = '';
    const socket = connect({ host: NS_ADDRESS, port: FORWARDED_PORTS.probe }, () => socket.write('GET / HTTP/1.0\r\n\r\n'));
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (data += chunk));
    socket.setTimeout(10_000, () => socket.destroy());
    socket.on('close', () => resolve(data));
    socket.on('error', () => undefined);
  });
  assert.equal(reply, '', 'port 8080 answered from outside the host');
  await v.sshOk('sudo systemctl stop ownrelay-probe');
});

test("first boot: the relay's own resolver (unbound) runs and answers on loopback only", async () => {
  const v = theVm();
  let state = '';
  try {
    await waitUntil(async () => (state = (await v.ssh('systemctl is-active unbound.service')).stdout.trim()) === 'active', 60_000, () => `unbound is ${state}`, 1000);
  } catch (err) {
    const status = await v.ssh('systemctl status --no-pager unbound.service; sudo journalctl -b --no-pager -u unbound | tail -n 20');
    throw new Error(`${(err as Error).message}; it says:\n${status.stdout}`);
  }
  // no Internet here: unbound answers from its built-in local data
  const answer = await v.sshOk(`node -e "const r = new (require('node:dns').promises.Resolver)(); r.setServers(['127.0.0.1']); r.resolve4('localhost').then((a) => console.log(a.join(',')))"`);
  assert.equal(answer.trim(), '127.0.0.1');
  const listening = await v.sshOk('ss -H -lnu sport = :53');
  assert.match(listening, /127\.0\.0\.1:53/);
  assert.doesNotMatch(listening, /(0\.0\.0\.0|\*|\[::\]):53\b/);
});

test('deploy: the Pulumi deploy step ships the bundle and config over SSH and starts the relay', async () => {
  const startedAt = Date.now();
  currentConfig = customer.deployConfig();
  const result = await deployOverSsh(theVm(), BUNDLE, currentConfig, work, customer.dkimKeys);
  assert.equal(result.code, 0, `deploy failed:\n${result.stdout}\n${result.stderr}`);
  assert.match(result.stdout, new RegExp(`running release ${result.version}`));
  // the first boot installed every host package: the deploy's dpkg check finds them all, so apt is not run
  assert.doesNotMatch(`${result.stdout}${result.stderr}`, /host packages|could not install/);
  firstVersion = result.version;
  assert.equal(await relayIsActive(), true);
  await waitForRelayPorts();
  assert.equal(await theVm().sshOk(`sudo cat ${RELAY_CONFIG_PATH}`), currentConfig);
  phase('first deploy', startedAt);
});

test('mail: swaks submits on 587, the relay finds the MX in the rendered DNS and Postfix on the host receives; SPF and DKIM pass', async () => {
  const startedAt = Date.now();
  const before = destination?.deliveredCount() ?? 0;
  const out = await submit('mail-flow-1');
  assert.match(out, /STARTTLS/);
  assert.match(out, /235 /);
  assert.ok(destination);
  await destination.waitForDelivered(before + 1, 180_000);
  const message = destination.deliveredMessages().find((text) => /^Subject: mail-flow-1$/m.test(text));
  assert.ok(message, 'the message arrived');
  // the top Received header is the destination's: the address it saw the relay connect from
  const received = /^Received: from ([^\n]*(?:\n[ \t][^\n]*)*)/m.exec(message)?.[1] ?? '';
  const seen = /\[([0-9.]+)\]/.exec(received)?.[1];
  assert.equal(seen, NS_ADDRESS, `Received: ${received}`);
  assert.match(received, new RegExp(RELAY_HOSTNAME.replace(/\./g, '\\.')));
  // SPF as the destination would check it: spfquery asks dnsmasq (the namespace's resolv.conf)
  assert.ok(net);
  const pass = net.exec('spfquery', ['-ip', seen ?? '', '-sender', SENDER, '-helo', RELAY_HOSTNAME]);
  const spf = await runCommand(pass.file, pass.args);
  assert.match(spf.stdout, /^pass/m, `spfquery: ${spf.stdout}\n${spf.stderr}`);
  // and the rendered SPF fails any other address
  const other = net.exec('spfquery', ['-ip', '192.0.2.1', '-sender', SENDER, '-helo', RELAY_HOSTNAME]);
  assert.match((await runCommand(other.file, other.args)).stdout, /^fail/m);
  assert.match(dns?.log() ?? '', new RegExp(`query\\[MX\\] ${REMOTE_DOMAIN} from ${NS_ADDRESS}`));
  // DKIM as the destination would check it: dkimverify (python3-dkim) fetches the key the
  // infra renders into DNS from dnsmasq; the relay signed with the key the deploy shipped
  const file = join(work, 'mail-flow-1.eml');
  writeFileSync(file, message.replace(/\r?\n/g, '\r\n'));
  const verify = net.exec('sh', ['-c', 'dkimverify < "$1"', 'dkimverify', file]);
  const dkim = await runCommand(verify.file, verify.args);
  assert.match(dkim.stdout, /signature ok/, `dkimverify: ${dkim.stdout}\n${dkim.stderr}`);
  assert.match(message, new RegExp(`^DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=${CUSTOMER_DOMAIN.replace('.', '\\.')};`, 'm'));
  // the customer's view of it: the message's story from the journal, by its queue id
  const queueId = /queued as ([0-9A-Z]+)/.exec(out)?.[1];
  assert.ok(queueId, 'swaks saw the queue id');
  const story = await theVm().sshOk(`sudo ownrelay logs ${queueId}`);
  assert.match(story, new RegExp(`^\\S+Z info  accepted +accepted ${queueId} from <${SENDER.replace(/\./g, '\\.')}>`, 'm'));
  assert.match(story, new RegExp(`^\\S+Z info  delivered +delivered ${queueId} to <[^>]+>: 250 `, 'm'));
  phase('mail flow', startedAt);
});

test('redeploy under load: a config change is a reload that loses nothing and refuses nobody', async () => {
  const startedAt = Date.now();
  const dest = destination;
  assert.ok(dest);
  const deliveredBefore = dest.deliveredCount();
  let stopLoad = false;
  const load = sendWithRetries('redeploy', 4, () => stopLoad);
  let pid: string;
  let result: Awaited<ReturnType<typeof deployOverSsh>>;
  try {
    // some traffic before, during and after the reload
    await new Promise((r) => setTimeout(r, 5000));
    pid = await relayMainPid();
    currentConfig = customer.deployConfig({ limits: { maxRecipients: 50 } });
    result = await deployOverSsh(theVm(), BUNDLE, currentConfig, work, customer.dkimKeys);
    await new Promise((r) => setTimeout(r, 5000));
  } finally {
    // the later tests count the queue: no client may go on sending after this one
    stopLoad = true;
  }
  const { accepted, retries, failed } = await load;
  assert.equal(result.code, 0, `deploy failed:\n${result.stdout}\n${result.stderr}`);
  // a config change alone reloads the running relay (a new release would restart it)
  assert.match(result.stdout, /reloaded its config/, result.stdout);
  assert.equal(await relayMainPid(), pid, 'the same relay process runs the new config');
  assert.deepEqual(failed, [], 'messages refused for good');
  assert.equal(retries, 0, 'a reload refuses no connection and defers no message');
  assert.ok(accepted.length > 0);
  await waitUntil(
    () => accepted.every((t) => deliveredTokens(dest).includes(t)),
    300_000,
    () => `not delivered: ${accepted.filter((t) => !deliveredTokens(dest).includes(t)).join(', ')}`,
    1000,
  );
  const delivered = deliveredTokens(dest).filter((t) => t.startsWith('redeploy-'));
  process.stdout.write(`redeploy under load: ${accepted.length} accepted, ${delivered.length} delivered (${dest.deliveredCount() - deliveredBefore} new files), ${retries} retried attempts\n`);
  phase('redeploy under load', startedAt);
});

test('deploy: a config that fails validation is refused and the running relay is untouched', async () => {
  const v = theVm();
  const pid = await relayMainPid();
  const bad = `${customer.deployConfig()}limits:\n  maxRecipients: -5\n`;
  const result = await deployOverSsh(v, BUNDLE, bad, work, customer.dkimKeys);
  assert.notEqual(result.code, 0);
  assert.match(result.stderr, /the new config is invalid; nothing was changed/);
  assert.match(result.stderr, /maxRecipients/);
  assert.equal(await relayMainPid(), pid);
  assert.equal(await relayIsActive(), true);
  assert.equal(await v.sshOk(`sudo cat ${RELAY_CONFIG_PATH}`), currentConfig);
  assert.equal((await v.sshOk('readlink /opt/ownrelay/current')).trim(), `/opt/ownrelay/releases/${firstVersion}`);
});

test('deploy: a second release, then a rollback to the first release and its config', async () => {
  const v = theVm();
  const secondBundle = join(work, 'ownrelay-2.js');
  copyFileSync(BUNDLE, secondBundle);
  appendFileSync(secondBundle, '\n// second build\n');
  const secondConfig = customer.deployConfig({ log: { level: 'debug' } });
  const deployed = await deployOverSsh(v, secondBundle, secondConfig, work, customer.dkimKeys);
  assert.equal(deployed.code, 0, `deploy failed:\n${deployed.stdout}\n${deployed.stderr}`);
  assert.notEqual(deployed.version, firstVersion);
  assert.equal((await v.sshOk('readlink /opt/ownrelay/current')).trim(), `/opt/ownrelay/releases/${deployed.version}`);
  assert.equal(await v.sshOk(`sudo cat ${RELAY_CONFIG_PATH}`), secondConfig);

  const rollback = await v.ssh(`sudo ${REMOTE_DEPLOY_SCRIPT_PATH} rollback`, { timeoutMs: 180_000 });
  assert.equal(rollback.code, 0, `rollback failed:\n${rollback.stdout}\n${rollback.stderr}`);
  assert.equal((await v.sshOk('readlink /opt/ownrelay/current')).trim(), `/opt/ownrelay/releases/${firstVersion}`);
  assert.equal(await v.sshOk(`sudo cat ${RELAY_CONFIG_PATH}`), currentConfig);
  assert.equal(await relayIsActive(), true);
  await waitForRelayPorts();
});

test('reboot with mail queued: the queue survives and delivers once the destination is back', async () => {
  const startedAt = Date.now();
  const v = theVm();
  assert.ok(destination);
  await destination.stop();
  destination = undefined;
  const tokens = ['queued-1', 'queued-2', 'queued-3'];
  for (const token of tokens) await submit(token);
  const queued = await spoolMessageFiles();
  assert.ok(queued.length >= tokens.length, `queued files: ${queued.join(', ')}`);
  const bootId = (await v.sshOk('cat /proc/sys/kernel/random/boot_id')).trim();

  await v.ssh('sudo systemctl reboot', { timeoutMs: 30_000 }).catch(() => undefined);
  await waitUntil(async () => (await v.waitForSsh()) !== bootId, 600_000, () => 'the guest did not come back with a new boot id', 3000);
  await waitUntil(() => relayIsActive(), 120_000, () => 'the relay is not active after the reboot', 2000);
  const afterReboot = await spoolMessageFiles();
  // the queue ids (19 characters) of the files in incoming/, active/ and deferred/; nothing may end up in corrupt/
  assert.deepEqual(afterReboot.filter((f) => f.startsWith('corrupt/')), []);
  const ids = (files: string[]) => [...new Set(files.map((f) => /[0-9A-Z]{19}/.exec(f)?.[0] ?? f))].sort();
  assert.deepEqual(ids(afterReboot), ids(queued), 'the queue after the reboot');

  destination = await startDestination();
  const dest = destination;
  await waitUntil(() => tokens.every((t) => deliveredTokens(dest).includes(t)), 300_000, () => `delivered: ${deliveredTokens(dest).join(', ')}`, 1000);
  phase('reboot with queue', startedAt);
});

test('power cut during submissions: every message answered 250 is delivered after the next boot', async () => {
  const startedAt = Date.now();
  const v = theVm();
  assert.ok(destination);
  await destination.stop();
  destination = undefined;

  const accepted: string[] = [];
  let cut = false;
  const load = sendUntilStopped('power', 4, accepted, () => cut);
  await waitUntil(() => accepted.length >= 40, 300_000, () => `only ${accepted.length} messages accepted`, 200);
  await v.powerCut();
  cut = true;
  await load;
  const acceptedBeforeCut = [...new Set(accepted)];
  process.stdout.write(`power cut after ${acceptedBeforeCut.length} accepted messages\n`);

  await v.bootAndWaitForSsh();
  await waitUntil(() => relayIsActive(), 120_000, () => 'the relay is not active after the power cut', 2000);
  destination = await startDestination();
  const dest = destination;
  await waitUntil(
    () => acceptedBeforeCut.every((t) => deliveredTokens(dest).includes(t)),
    600_000,
    () => `lost: ${acceptedBeforeCut.filter((t) => !deliveredTokens(dest).includes(t)).join(', ')}`,
    2000,
  );
  const delivered = deliveredTokens(dest).filter((t) => t.startsWith('power-'));
  const duplicates = delivered.length - new Set(delivered).size;
  process.stdout.write(`power cut: ${acceptedBeforeCut.length} accepted, ${new Set(delivered).size} distinct delivered (${delivered.length - acceptedBeforeCut.length >= 0 ? delivered.length - acceptedBeforeCut.length : 0} beyond the accepted), ${duplicates} duplicates\n`);
  phase('power cut', startedAt);
});
