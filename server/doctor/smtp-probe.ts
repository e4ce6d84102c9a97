/**
 * A minimal SMTP client for the doctor's own tests of the server: read replies,
 * send commands, upgrade with STARTTLS and hand back the peer's certificate. It
 * never sends DATA: nothing it does can make a message.
 *
 * Contract: every read settles within the timeout; a closed connection or a
 * timeout rejects with a message that says which command it was waiting for.
 */
import type net from 'node:net';
import tls from 'node:tls';

export interface SmtpReply {
  code: number;
  text: string;
}

export class SmtpProbe {
  private buffer = '';
  private lines: string[] = [];
  private waiter: (() => void) | undefined;
  private closed: Error | undefined;

  private constructor(
    private socket: net.Socket | tls.TLSSocket,
    private readonly timeoutMs: number,
  ) {
    this.attach(socket);
  }

  /** wraps a connected socket; implicit TLS is the caller's (pass a TLSSocket) */
  static async open(socket: net.Socket | tls.TLSSocket, timeoutMs: number): Promise<{ probe: SmtpProbe; greeting: SmtpReply }> {
    const probe = new SmtpProbe(socket, timeoutMs);
    const greeting = await probe.read('the greeting');
    return { probe, greeting };
  }

  async command(line: string): Promise<SmtpReply> {
    this.socket.write(`${line}\r\n`);
    return this.read(line);
  }

  /**
   * STARTTLS, then the TLS handshake without verification (the caller judges the
   * certificate: `authorized` and `authorizationError` say what Node's check found).
   */
  async startTls(servername: string, ca: string[] | undefined): Promise<tls.TLSSocket> {
    const reply = await this.command('STARTTLS');
    if (reply.code !== 220) throw new Error(`STARTTLS refused: ${reply.code} ${reply.text}`);
    const plain = this.socket;
    plain.removeAllListeners('data');
    const secure = await handshake(plain, servername, ca, this.timeoutMs);
    this.socket = secure;
    this.attach(secure);
    return secure;
  }

  /** TLS from the first byte (port 465), without verification (see startTls) */
  static async openImplicitTls(socket: net.Socket, servername: string, ca: string[] | undefined, timeoutMs: number): Promise<{ probe: SmtpProbe; greeting: SmtpReply; secure: tls.TLSSocket }> {
    const secure = await handshake(socket, servername, ca, timeoutMs);
    return { ...(await SmtpProbe.open(secure, timeoutMs)), secure };
  }

  close(): void {
    if (!this.closed && this.socket.writable) this.socket.end('QUIT\r\n');
    this.socket.destroy();
  }

  private attach(socket: net.Socket | tls.TLSSocket): void {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      let newline: number;
      while ((newline = this.buffer.indexOf('\n')) >= 0) {
        this.lines.push(this.buffer.slice(0, newline).replace(/\r$/, ''));
        this.buffer = this.buffer.slice(newline + 1);
      }
      this.waiter?.();
    });
    const end = (err?: Error) => {
      this.closed ??= err ?? new Error('the server closed the connection');
      this.waiter?.();
    };
    socket.once('end', () => end());
    socket.once('close', () => end());
    socket.once('error', end);
  }

  /** one reply, multi-line replies joined */
  private read(waitingFor: string): Promise<SmtpReply> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`no reply to ${waitingFor} within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      const check = () => {
        const last = this.lines.findIndex((line) => /^[0-9]{3}( |$)/.test(line));
        if (last >= 0) {
          const replyLines = this.lines.splice(0, last + 1);
          clearTimeout(timer);
          this.waiter = undefined;
          resolve({ code: Number(replyLines[last]!.slice(0, 3)), text: replyLines.map((line) => line.slice(4)).join(' / ') });
        } else if (this.closed) {
          clearTimeout(timer);
          this.waiter = undefined;
          reject(new Error(`connection closed while waiting for the reply to ${waitingFor}: ${this.closed.message}`));
        }
      };
      this.waiter = check;
      check();
    });
  }
}

function handshake(plain: net.Socket, servername: string, ca: string[] | undefined, timeoutMs: number): Promise<tls.TLSSocket> {
  return new Promise<tls.TLSSocket>((resolve, reject) => {
    const socket = tls.connect({ socket: plain, servername, ca, rejectUnauthorized: false });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`TLS handshake timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`TLS handshake failed: ${err.message}`));
    });
  });
}
