/**
 * Runs Debian's Pebble (/usr/bin/pebble, Let's Encrypt's ACME test server) on
 * loopback for a test: its HTTPS certificate comes from a throw-away CA made here
 * with the openssl command line (Debian's package ships none), it resolves names
 * through the given DNS server, and it validates HTTP-01 challenges on `httpPort`
 * for real (PEBBLE_VA_ALWAYS_VALID=0, without the random waits). Issued
 * certificates live `certificateValiditySeconds` (Pebble's default: 5 years).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import https from 'node:https';
import { join } from 'node:path';
import { freePort } from './ports';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface PebbleHandle {
  directoryUrl: string;
  /** PEM of the CA that signed Pebble's own HTTPS certificate (give it to the ACME client) */
  httpsCaFile: string;
  /** Pebble's issuing root and intermediate (random per run), from its management API */
  root(): Promise<string>;
  intermediate(): Promise<string>;
  /** everything Pebble printed, for failure messages */
  output(): string;
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (for a peer whose port must be known before it starts). */
export async function startPebble(options: { dir: string; httpPort: number; dnsServer: string; certificateValiditySeconds?: number }): Promise<PebbleHandle> {
  const { dir } = options;
  const file = (name: string) => join(dir, name);
  // a CA and a certificate for 127.0.0.1/localhost, signed by it
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', file('https-ca.key'), '-out', file('https-ca.pem'), '-days', '2', '-subj', '/CN=pebble test HTTPS CA']);
  await run('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', file('https.key'), '-out', file('https.pem'), '-days', '2', '-subj', '/CN=localhost',
    '-CA', file('https-ca.pem'), '-CAkey', file('https-ca.key'), '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-addext', 'basicConstraints=critical,CA:FALSE',
  ]);
  const [acmePort, managementPort, tlsPort] = [await freePort(), await freePort(), await freePort()];
  await writeFile(
    file('pebble-config.json'),
    JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${acmePort}`,
        managementListenAddress: `127.0.0.1:${managementPort}`,
        certificate: file('https.pem'),
        privateKey: file('https.key'),
        httpPort: options.httpPort,
        tlsPort,
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
        ...(options.certificateValiditySeconds === undefined ? {} : { certificateValidityPeriod: options.certificateValiditySeconds }),
      },
    }),
  );
  let output = '';
  const child: ChildProcess = spawn('/usr/bin/pebble', ['-config', file('pebble-config.json'), '-dnsserver', options.dnsServer, '-strict=false'], {
    env: { ...process.env, PEBBLE_VA_NOSLEEP: '1', PEBBLE_VA_ALWAYS_VALID: '0', PEBBLE_WFE_NONCEREJECT: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ca = await readFile(file('https-ca.pem'));
  const get = (url: string) =>
    new Promise<string>((resolve, reject) => {
      https
        .get(url, { ca }, (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`${url}: HTTP ${res.statusCode}`))));
        })
        .on('error', reject);
    });
  const directoryUrl = `https://127.0.0.1:${acmePort}/dir`;
  const handle: PebbleHandle = {
    directoryUrl,
    httpsCaFile: file('https-ca.pem'),
    root: () => get(`https://127.0.0.1:${managementPort}/roots/0`),
    intermediate: () => get(`https://127.0.0.1:${managementPort}/intermediates/0`),
    output: () => output,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
  for (let attempt = 0; ; attempt++) {
    try {
      await get(directoryUrl);
      await get(`https://127.0.0.1:${managementPort}/roots/0`);
      return handle;
    } catch (err) {
      if (child.exitCode !== null || attempt > 100) {
        await handle.stop();
        throw new Error(`pebble did not start: ${(err as Error).message}\n${output}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
