/**
 * The relay's end of the admin socket (see protocol.ts). The socket file is
 * created with mode 0660, so the relay's user and group may administer and
 * nobody else. A socket file left by a relay that died is replaced; one that
 * answers belongs to a running relay, and starting a second one is refused.
 */
import net from 'node:net';
import { chmod, mkdir, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from '../log/logger';
import { MAX_REQUEST_BYTES, isAdminOp, type AdminOp, type AdminRequest, type AdminResponse } from './protocol';

export type AdminHandler = (args: Record<string, unknown>, by: string) => Promise<unknown>;

export const ADMIN_SOCKET_MODE = 0o660;

export class AdminServer {
  private constructor(
    private readonly server: net.Server,
    readonly path: string,
    private readonly connections: Set<net.Socket>,
  ) {}

  static async start(path: string, handlers: Record<AdminOp, AdminHandler>, logger: Logger): Promise<AdminServer> {
    await mkdir(dirname(path), { recursive: true, mode: 0o750 });
    await removeStaleSocket(path);
    const connections = new Set<net.Socket>();
    const server = net.createServer((socket) => {
      connections.add(socket);
      socket.on('close', () => connections.delete(socket));
      serve(socket, handlers, logger);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    await chmod(path, ADMIN_SOCKET_MODE);
    logger.info({ event: 'admin-listening', socket: path }, `admin socket ${path}`);
    return new AdminServer(server, path, connections);
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const socket of this.connections) socket.destroy();
    });
    await unlink(this.path).catch(() => undefined);
  }
}

function serve(socket: net.Socket, handlers: Record<AdminOp, AdminHandler>, logger: Logger): void {
  let buffered = '';
  let queue = Promise.resolve();
  socket.setEncoding('utf8');
  socket.on('error', () => undefined);
  socket.on('data', (data: string) => {
    buffered += data;
    if (buffered.length > MAX_REQUEST_BYTES) {
      socket.end(`${JSON.stringify({ ok: false, error: 'request too long' })}\n`);
      return;
    }
    let newline: number;
    while ((newline = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      if (!line.trim()) continue;
      // answers go out in request order
      queue = queue.then(async () => {
        const response = await answer(line, handlers, logger);
        if (!socket.destroyed) socket.write(`${JSON.stringify(response)}\n`);
      });
    }
  });
}

async function answer(line: string, handlers: Record<AdminOp, AdminHandler>, logger: Logger): Promise<AdminResponse> {
  let request: AdminRequest;
  try {
    request = JSON.parse(line) as AdminRequest;
  } catch {
    return { ok: false, error: 'the request is not JSON' };
  }
  if (!request || typeof request !== 'object' || !isAdminOp(request.op)) return { ok: false, error: `unknown operation ${JSON.stringify((request as { op?: unknown } | null)?.op)}` };
  const args = request.args && typeof request.args === 'object' ? request.args : {};
  const by = `admin socket${typeof request.user === 'string' ? ` (user ${request.user.slice(0, 64)})` : ''}`;
  try {
    return { ok: true, result: await handlers[request.op](args, by) };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    logger.warn({ event: 'admin-error', op: request.op, err: message }, `admin ${request.op} failed: ${message}`);
    return { ok: false, error: message };
  }
}

/** Refuses to go on when a relay answers on `path` (two relays on one spool would deliver twice). */
export async function assertNoRunningRelay(path: string): Promise<void> {
  if (await answers(path)) throw new Error(`another relay is already running with the admin socket ${path}`);
}

async function removeStaleSocket(path: string): Promise<void> {
  await assertNoRunningRelay(path);
  await unlink(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}

function answers(path: string): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}
