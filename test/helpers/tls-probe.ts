/**
 * TLS clients for certificate and profile tests:
 * - `SmtpTlsSession`: an SMTP session over implicit TLS or STARTTLS that stays
 *   open, reports the certificate it was given, and sends commands (for "a live
 *   session keeps working while new ones get the renewed certificate").
 * - `opensslProbe`: one `openssl s_client` handshake (Debian's OpenSSL, an
 *   independent TLS stack's command line) with the given options.
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import tls from 'node:tls';

export interface SessionOptions {
  port: number;
  mode: 'implicit' | 'starttls';
  /** trust these CA certificates and verify the chain and name (default: no verification) */
  ca?: string | Buffer | Array<string | Buffer>;
  servername?: string;
}

export class SmtpTlsSession {
  private buffer = '';
  private waiter?: () => void;

  private constructor(readonly socket: tls.TLSSocket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      this.waiter?.();
    });
    socket.on('error', () => undefined);
  }

  static async open(options: SessionOptions): Promise<SmtpTlsSession> {
    const tlsOptions = { servername: options.servername, ca: options.ca, rejectUnauthorized: options.ca !== undefined };
    if (options.mode === 'implicit') {
      const socket = await handshake(tls.connect({ ...tlsOptions, host: '127.0.0.1', port: options.port }));
      const session = new SmtpTlsSession(socket);
      await session.expect(220);
      await session.expectCommand('EHLO probe.test', 250);
      return session;
    }
    const plain = net.connect({ host: '127.0.0.1', port: options.port });
    await readPlainReply(plain, 220);
    plain.write('EHLO probe.test\r\n');
    await readPlainReply(plain, 250);
    plain.write('STARTTLS\r\n');
    await readPlainReply(plain, 220);
    const socket = await handshake(tls.connect({ ...tlsOptions, socket: plain }));
    const session = new SmtpTlsSession(socket);
    await session.expectCommand('EHLO probe.test', 250);
    return session;
  }

  get certificate(): tls.PeerCertificate {
    return this.socket.getPeerCertificate();
  }

  /** Sends a command and returns the complete reply (multi-line aware). */
  async command(line: string): Promise<{ code: number; text: string }> {
    this.socket.write(`${line}\r\n`);
    return this.read();
  }

  async expectCommand(line: string, code: number): Promise<string> {
    const reply = await this.command(line);
    if (reply.code !== code) throw new Error(`${line}: expected ${code}, got ${reply.text}`);
    return reply.text;
  }

  async expect(code: number): Promise<void> {
    const reply = await this.read();
    if (reply.code !== code) throw new Error(`expected ${code}, got ${reply.text}`);
  }

  close(): void {
    this.socket.destroy();
  }

  private async read(timeoutMs = 10_000): Promise<{ code: number; text: string }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const match = /^(?:\d{3}-[^\n]*\n)*(\d{3})(?: [^\n]*)?\r?\n/.exec(this.buffer);
      if (match) {
        this.buffer = this.buffer.slice(match[0].length);
        return { code: Number(match[1]), text: match[0].trim() };
      }
      if (this.socket.destroyed) throw new Error('connection closed');
      if (Date.now() > deadline) throw new Error('timed out waiting for a reply');
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
        setTimeout(resolve, 50);
      });
    }
  }
}

function handshake(socket: tls.TLSSocket): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    socket.once('secureConnect', () => resolve(socket));
    socket.once('error', reject);
  });
}

function readPlainReply(socket: net.Socket, code: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let buffer = '';
    const onData = (chunk: Buffer) => {
      buffer += chunk.toString('latin1');
      const match = /^(?:\d{3}-[^\n]*\n)*(\d{3})(?: [^\n]*)?\r?\n/.exec(buffer);
      if (!match) return;
      socket.off('data', onData);
      socket.off('error', reject);
      if (Number(match[1]) === code) resolve();
      else reject(new Error(`expected ${code}, got ${buffer.trim()}`));
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
}

export interface ProbeResult {
  /** the handshake completed */
  connected: boolean;
  protocol?: string;
  cipher?: string;
  /** e.g. "X25519, 253 bits" */
  tempKey?: string;
  output: string;
}

/**
 * One handshake with `openssl s_client -brief` (with `-starttls smtp` for a
 * STARTTLS port); `args` selects protocol versions, ciphers and groups.
 */
export function opensslProbe(port: number, mode: 'implicit' | 'starttls', args: string[]): Promise<ProbeResult> {
  const argv = ['s_client', '-connect', `127.0.0.1:${port}`, '-brief', ...(mode === 'starttls' ? ['-starttls', 'smtp'] : []), ...args];
  return new Promise((resolve, reject) => {
    const child = spawn('openssl', argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.on('error', reject);
    child.on('close', () => {
      clearTimeout(timer);
      const connected = /CONNECTION ESTABLISHED/.test(output);
      resolve({
        connected,
        protocol: /Protocol version: (\S+)/.exec(output)?.[1],
        cipher: /Ciphersuite: (\S+)/.exec(output)?.[1],
        tempKey: /Server Temp Key: ([^\n]+)/.exec(output)?.[1]?.trim(),
        output,
      });
    });
    // end of input: s_client closes the session after the handshake
    child.stdin.end();
  });
}
