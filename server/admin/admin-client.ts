/**
 * The `ownrelay` command's end of the admin socket: one request, one response.
 * A missing socket or a refused connection is a RelayNotRunning error, so
 * read-only commands can fall back to reading the spool.
 */
import net from 'node:net';
import { userInfo } from 'node:os';
import type { AdminOp, AdminResponse } from './protocol';

export class RelayNotRunning extends Error {
  constructor(readonly socketPath: string, detail: string) {
    super(`the relay is not running (no answer on ${socketPath}: ${detail})`);
    this.name = 'RelayNotRunning';
  }
}

export class AdminRequestFailed extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AdminRequestFailed';
  }
}

export function adminRequest<T>(socketPath: string, op: AdminOp, args: Record<string, unknown> = {}, timeoutMs = 60_000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const socket = net.connect(socketPath);
    let buffered = '';
    let connected = false;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new AdminRequestFailed(`no answer from the relay within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    const finish = (fn: () => void) => {
      clearTimeout(timer);
      socket.destroy();
      fn();
    };
    socket.setEncoding('utf8');
    socket.once('connect', () => {
      connected = true;
      socket.write(`${JSON.stringify({ op, args, user: safeUser() })}\n`);
    });
    socket.on('data', (data: string) => {
      buffered += data;
      const newline = buffered.indexOf('\n');
      if (newline < 0) return;
      let response: AdminResponse;
      try {
        response = JSON.parse(buffered.slice(0, newline)) as AdminResponse;
      } catch {
        return finish(() => reject(new AdminRequestFailed('the relay sent an answer that is not JSON')));
      }
      finish(() => (response.ok ? resolve(response.result as T) : reject(new AdminRequestFailed(response.error))));
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      if (!connected && ['ENOENT', 'ECONNREFUSED', 'ENOTSOCK'].includes(err.code ?? '')) finish(() => reject(new RelayNotRunning(socketPath, err.code ?? err.message)));
      else if (!connected && err.code === 'EACCES') finish(() => reject(new AdminRequestFailed(`permission denied on ${socketPath}: run as the relay's user or a member of its group`)));
      else finish(() => reject(new AdminRequestFailed(`admin socket ${socketPath}: ${err.message}`)));
    });
    socket.once('close', () => finish(() => reject(new AdminRequestFailed('the relay closed the connection without answering'))));
  });
}

function safeUser(): string | undefined {
  try {
    return userInfo().username;
  } catch {
    return undefined;
  }
}
