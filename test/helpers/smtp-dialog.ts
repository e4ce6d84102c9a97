/**
 * A raw SMTP client for tests that must send what real clients would not
 * (over-long lines, bare LF, commands before the greeting). It reads complete
 * replies (multi-line aware) and can upgrade to TLS with STARTTLS.
 */
import net from 'node:net';
import tls from 'node:tls';

export interface Reply {
  code: number;
  text: string;
}

export class SmtpDialog {
  private buffer = '';
  private readonly replies: Reply[] = [];
  private waiting?: () => void;
  closed = false;

  private constructor(private socket: net.Socket | tls.TLSSocket) {
    this.attach(socket);
  }

  static connect(port: number, options: { implicitTls?: boolean; host?: string; localAddress?: string } = {}): Promise<SmtpDialog> {
    const host = options.host ?? '127.0.0.1';
    const local = options.localAddress ? { localAddress: options.localAddress } : {};
    return new Promise((resolve, reject) => {
      const socket = options.implicitTls
        ? tls.connect({ port, host, rejectUnauthorized: false, ...local }, () => resolve(new SmtpDialog(socket)))
        : net.connect({ port, host, ...local }, () => resolve(new SmtpDialog(socket)));
      socket.once('error', reject);
    });
  }

  private attach(socket: net.Socket | tls.TLSSocket): void {
    socket.setEncoding('utf8');
    socket.on('data', (data: string) => {
      this.buffer += data;
      let match: RegExpExecArray | null;
      // a reply ends with a line "NNN text" (space after the code)
      while ((match = /^(?:\d{3}-[^\n]*\n)*(\d{3})(?: [^\n]*)?\r?\n/.exec(this.buffer))) {
        this.replies.push({ code: Number(match[1]), text: match[0].trim() });
        this.buffer = this.buffer.slice(match[0].length);
      }
      this.waiting?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiting?.();
    });
    socket.on('error', () => undefined);
  }

  /** Waits for the next reply; rejects when the connection closes first. */
  async read(timeoutMs = 5000): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    while (this.replies.length === 0) {
      if (this.closed) throw new Error('connection closed');
      if (Date.now() > deadline) throw new Error('timed out waiting for a reply');
      await new Promise<void>((resolve) => {
        this.waiting = resolve;
        setTimeout(resolve, 50);
      });
    }
    return this.replies.shift()!;
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  async command(line: string, timeoutMs?: number): Promise<Reply> {
    this.write(`${line}\r\n`);
    return this.read(timeoutMs);
  }

  async startTls(): Promise<void> {
    const reply = await this.command('STARTTLS');
    if (reply.code !== 220) throw new Error(`STARTTLS refused: ${reply.text}`);
    const plain = this.socket;
    plain.removeAllListeners('data');
    this.socket = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const secure = tls.connect({ socket: plain, rejectUnauthorized: false }, () => resolve(secure));
      secure.once('error', reject);
    });
    this.attach(this.socket);
  }

  /** Whether the server has closed the connection (waits briefly for the close). */
  async waitClosed(timeoutMs = 3000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return this.closed;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Sends one message in a session of its own (EHLO, MAIL, RCPT, DATA) and returns its queue id; fails unless each step is accepted. */
export async function sendMessage(port: number, message: { from: string; to: string; subject: string }): Promise<string> {
  const dialog = await SmtpDialog.connect(port);
  try {
    await dialog.read();
    await dialog.command('EHLO client.test');
    for (const [command, code] of [[`MAIL FROM:<${message.from}>`, 250], [`RCPT TO:<${message.to}>`, 250], ['DATA', 354]] as const) {
      const reply = await dialog.command(command);
      if (reply.code !== code) throw new Error(`${command}: ${reply.code} ${reply.text}`);
    }
    dialog.write(`Subject: ${message.subject}\r\n\r\nhello\r\n.\r\n`);
    const reply = await dialog.read();
    const id = /queued as ([0-9A-Z]+)/.exec(reply.text)?.[1];
    if (reply.code !== 250 || id === undefined) throw new Error(`end of data: ${reply.code} ${reply.text}`);
    return id;
  } finally {
    dialog.close();
  }
}
