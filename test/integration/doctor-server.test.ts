/**
 * `ownrelay doctor`, the server as the Internet sees it: the certificate on its
 * SMTP port, the open-relay self-test, outbound port 25 (refused, and timing out
 * as behind AWS's block), and the command run as a child process for its exit
 * code and JSON. Real parts on loopback: the relay, a receiving smtp-server that
 * relays anything, python3 holding a listener with a full accept queue.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { RelayConfig } from '../../server/config/schema';
import { CHECKS, runDoctor, type DoctorReport } from '../../server/doctor/runner';
import { startDestination, type DestinationServer } from '../helpers/destination-server';
import { DOMAIN, HOST, IP, result, startDoctorWorld, type DoctorWorld } from '../helpers/doctor-world';
import { PROJECT_ROOT } from '../helpers/relay-process';
import { startTestRelay } from '../helpers/test-relay';

let world: DoctorWorld;
before(async () => {
  world = await startDoctorWorld();
});
after(async () => {
  await world?.stop();
});

describe('ownrelay doctor: the server and the command', () => {
  test('a certificate from an untrusted CA, and one that expires within the configured days, fail', async () => {
    const untrusted = await runDoctor(world.options({ trustedCa: [] }));
    assert.match(result(untrusted, 'certificate').detail, /is not trusted: /);

    const soon = await world.issue(HOST, 5);
    writeFileSync(join(world.dir, 'soon-cert.pem'), soon.cert);
    writeFileSync(join(world.dir, 'soon-key.pem'), soon.key);
    const expiring = await startTestRelay(() => ({
      hostname: HOST,
      listeners: [{ role: 'mx', address: IP, port: 0, earlyTalkerCheck: false }],
      tls: { certFile: join(world.dir, 'soon-cert.pem'), keyFile: join(world.dir, 'soon-key.pem') },
    }));
    try {
      const report = await runDoctor(world.options({ smtpPort: expiring.ports[0]! }));
      const certificate = result(report, 'certificate');
      assert.equal(certificate.status, 'fail');
      assert.match(certificate.detail, /the certificate expires in [45] days .*, less than 14: renewal is failing/);
    } finally {
      await expiring.stop();
    }
  });

  test('a server that accepts relaying from a stranger fails as an open relay; one that trusts the tester\'s network cannot tell', async () => {
    const open: DestinationServer = await startDestination();
    try {
      const report = await runDoctor(world.options({ smtpPort: 25, connectTo: [`${IP}:25:127.0.0.1:${open.port}`] }));
      const check = result(report, 'open-relay');
      assert.equal(check.status, 'fail');
      assert.match(check.detail, /^127\.0\.0\.7:25: OPEN RELAY: accepted mail from <ownrelay-doctor@example\.com> to <ownrelay-doctor@example\.net> without AUTH/m);
      assert.match(check.detail, /^127\.0\.0\.7:25 after STARTTLS: OPEN RELAY/m);
      assert.equal(open.messages.length, 0, 'the test never sends a message');
    } finally {
      await open.close();
    }

    const trusting = await startTestRelay(() => ({ hostname: HOST, listeners: [{ role: 'mx', address: IP, port: 0, earlyTalkerCheck: false }], relay: { networks: ['127.0.0.0/8'] } }));
    try {
      const report = await runDoctor(world.options({ smtpPort: trusting.ports[0]!, config: trusting.relay.config }));
      const check = result(report, 'open-relay');
      assert.equal(check.status, 'warn', check.detail);
      assert.match(check.detail, /relaying accepted, but this test comes from 127\.0\.0\.\d+, which relay\.networks trusts/);
    } finally {
      await trusting.stop();
    }
  });

  test('a server that does not answer on its SMTP port fails the certificate and open-relay checks with how to open the port', async () => {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, IP, resolve));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const report = await runDoctor(world.options({ smtpPort: port }));
    for (const id of ['certificate', 'open-relay']) {
      const check = result(report, id);
      assert.equal(check.status, 'fail');
      assert.match(check.detail, new RegExp(`^127\\.0\\.0\\.7:${port}: .*ECONNREFUSED$`));
      assert.match(check.fix ?? '', new RegExp(`make sure the relay listens on port ${port}`));
    }
    assert.doesNotMatch(result(report, 'open-relay').detail, /after STARTTLS/);
  });

  test('outbound port 25 refused fails; with a smarthost configured it only warns', async () => {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const config = world.configWithDkim(world.relay.relay.config);
    const blocked = { ...config, doctor: { ...config.doctor, outboundProbe: `127.0.0.1:${port}` } };
    const report = await runDoctor(world.options({ config: blocked }));
    assert.equal(result(report, 'outbound-25').status, 'fail');
    assert.match(result(report, 'outbound-25').detail, /cannot connect to 127\.0\.0\.1:\d+: connecting to 127\.0\.0\.1:\d+ failed: ECONNREFUSED/);

    const viaSmarthost = { ...blocked, delivery: { ...blocked.delivery, smarthost: { host: 'smtp.provider.test', port: 587, tls: 'required', verifyCertificate: true } } } as RelayConfig;
    const warned = await runDoctor(world.options({ config: viaSmarthost }));
    assert.equal(result(warned, 'outbound-25').status, 'warn');
    assert.match(result(warned, 'outbound-25').detail, /delivery goes through the smarthost smtp\.provider\.test:587/);
  });

  test('outbound port 25 that times out fails and explains AWS\'s block and the request form', async () => {
    // a listener whose accept queue is full (python3: listen(0), never accept): the
    // kernel drops further SYNs, so a connection times out as it does behind a
    // provider's port-25 block
    const listener = spawn('python3', ['-c', 'import socket,sys\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\nsys.stdin.read()'], { stdio: ['pipe', 'pipe', 'inherit'] });
    const filler: net.Socket[] = [];
    try {
      const port = Number(String(await once(listener.stdout!, 'data')).trim());
      const first = net.connect(port, '127.0.0.1');
      filler.push(first);
      await once(first, 'connect');
      const config = world.configWithDkim(world.relay.relay.config);
      const report = await runDoctor(world.options({ config: { ...config, doctor: { ...config.doctor, outboundProbe: `127.0.0.1:${port}` } }, timeoutMs: 1000 }));
      const outbound = result(report, 'outbound-25');
      assert.equal(outbound.status, 'fail');
      assert.match(outbound.detail, /outbound connections to port 25 time out: connecting to 127\.0\.0\.1:\d+ timed out after 1000 ms/);
      assert.match(outbound.detail, /AWS blocks outbound port 25 on every EC2 instance/);
      assert.match(outbound.fix ?? '', /https:\/\/console\.aws\.amazon\.com\/support\/contacts#\/rdns-limits/);
      assert.match(outbound.fix ?? '', /delivery\.smarthost/);
    } finally {
      for (const socket of filler) socket.destroy();
      listener.kill();
    }
  });

  test('the CLI exits 1 with a JSON report when a check fails, and 0 with a checklist when all pass', async () => {
    const configFile = join(world.dir, 'doctor-config.yaml');
    writeFileSync(configFile, stringify(world.relay.relay.config));
    const args = [
      '--import',
      'tsx',
      'server/main.ts',
      'doctor',
      DOMAIN,
      '--config',
      configFile,
      '--ip',
      IP,
      '--dns-server',
      world.dns.servers[0]!,
      '--smtp-port',
      String(world.relay.ports[0]),
      '--connect-to',
      world.policyConnectTo,
      '--timeout',
      '3000',
    ];
    const runWith = (base: string[], extra: string[]) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        execFile(process.execPath, [...base, ...extra], { cwd: PROJECT_ROOT, env: { ...process.env, NODE_EXTRA_CA_CERTS: join(world.dir, 'ca.pem') } }, (error, stdout, stderr) => {
          resolve({ code: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout, stderr });
        });
      });
    const run = (extra: string[]) => runWith(args, extra);

    // the config file has no dkim section, so the DKIM check fails
    const failing = await run(['--json']);
    assert.equal(failing.code, 1, failing.stderr);
    assert.notEqual(failing.stdout, "", failing.stderr);
    const report = JSON.parse(failing.stdout) as DoctorReport;
    assert.equal(report.ok, false);
    assert.equal(report.domain, DOMAIN);
    assert.deepEqual(report.ips, [IP]);
    const statuses = Object.fromEntries(report.results.map((r) => [r.id, r.status]));
    assert.deepEqual(statuses, Object.fromEntries(CHECKS.map((c) => [c.id, c.id === 'dkim' ? 'fail' : 'pass'])));
    assert.match(result(report, 'dkim').detail, /no DKIM key configured/);

    const passing = await run(['--skip', 'dkim']);
    assert.equal(passing.code, 0, passing.stdout + passing.stderr);
    assert.match(passing.stdout, /^\[PASS\] MX points to this server \(mx\)$/m);
    assert.match(passing.stdout, /^13 checks: 13 passed, 0 warnings, 0 failed; skipped: dkim$/m);

    const badSkip = await run(['--skip', 'nonsense']);
    assert.equal(badSkip.code, 1);
    assert.match(badSkip.stderr, /unknown check nonsense to skip; the checks are mx, address, ptr/);

    // without --ip, the addresses the config names (as the infra writes a node's Elastic IP there)
    const { doctor } = world.relay.relay.config;
    writeFileSync(configFile, stringify({ ...world.relay.relay.config, doctor: { ...doctor, publicAddresses: [IP] } }));
    const withoutIp = args.filter((arg, i) => arg !== '--ip' && args[i - 1] !== '--ip');
    assert.equal(withoutIp.length, args.length - 2);
    const fromConfig = await runWith(withoutIp, ['--skip', 'dkim', '--json']);
    assert.equal(fromConfig.code, 0, fromConfig.stdout + fromConfig.stderr);
    const fromConfigReport = JSON.parse(fromConfig.stdout) as DoctorReport;
    assert.deepEqual(fromConfigReport.ips, [IP]);
    assert.match(result(fromConfigReport, 'ptr').detail, /127\.0\.0\.7 -> mail\.doctor\.test -> 127\.0\.0\.7/);
  });
});
