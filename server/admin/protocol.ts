/**
 * The admin socket's protocol: line-delimited JSON over a Unix socket.
 *
 *   request:  {"op":"queue.list","args":{...},"user":"alice"}\n
 *   response: {"ok":true,"result":...}\n   or   {"ok":false,"error":"..."}\n
 *
 * One response per request, in order; a client may send several requests on one
 * connection. `user` is who the client says it runs as, for the log only (the
 * socket's file mode is the access control).
 */
export const ADMIN_OPS = ['status', 'reload', 'queue.list', 'queue.show', 'queue.summary', 'queue.hold', 'queue.release', 'queue.retry', 'queue.delete', 'queue.flush'] as const;
export type AdminOp = (typeof ADMIN_OPS)[number];

export interface AdminRequest {
  op: AdminOp;
  args?: Record<string, unknown>;
  user?: string;
}

export type AdminResponse = { ok: true; result: unknown } | { ok: false; error: string };

/** longest request line accepted (a list of queue ids fits easily) */
export const MAX_REQUEST_BYTES = 1024 * 1024;

export function isAdminOp(op: unknown): op is AdminOp {
  return typeof op === 'string' && (ADMIN_OPS as readonly string[]).includes(op);
}
