/**
 * Local delivery into Maildirs: <mailRoot>/<domain>/<mailbox>/{tmp,new,cur}.
 *
 * Follows the Maildir convention (https://cr.yp.to/proto/maildir.html): the
 * message is written under a unique name in tmp/, fsynced, hard-linked into new/
 * (a link never replaces an existing file), the new/ directory is fsynced, and
 * the tmp/ name is removed. A mail reader therefore sees either the complete
 * message in new/ or nothing, and once deliverToMaildir resolves the message
 * survives a power loss.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsConstants, promises as fs } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { DomainConfig } from '../config/schema';
import type { Logger } from '../log/logger';
import { domainOf, localPartOf } from '../queue/envelope';
import { isOutOfSpace } from '../queue/spool-space';
import { assertSafePathComponent, resolveLocalMailbox } from './local-mailboxes';
import type { OutboundMessage, RecipientResult, Transport } from './types';

const DIR_MODE = 0o700;
const FILE_MODE = 0o600;

export interface MaildirDelivery {
  mailRoot: string;
  domain: string;
  mailbox: string;
  /** envelope sender, '' for the null sender */
  sender: string;
  /** this host's name, part of the unique file name */
  hostname: string;
  /** the message with CRLF line endings */
  message: Readable;
}

let deliveryCounter = 0;

/**
 * A name unique across processes and hosts sharing the Maildir: seconds, then
 * microseconds, pid, a per-process counter and random bits (guarding against a
 * reused pid within the same second), then the host name with '/' and ':'
 * escaped as the convention asks.
 */
function uniqueName(hostname: string, nowMs: number): string {
  deliveryCounter = (deliveryCounter + 1) % Number.MAX_SAFE_INTEGER;
  const seconds = Math.floor(nowMs / 1000);
  const micros = (nowMs % 1000) * 1000;
  const host = hostname.replace(/\//g, '\\057').replace(/:/g, '\\072');
  return `${seconds}.M${micros}P${process.pid}_${deliveryCounter}R${randomBytes(4).toString('hex')}.${host}`;
}

/** Strips what could end or break the header line: CR, LF and other control characters. */
function sanitizeHeaderValue(value: string): string {
  return value.replace(/[\x00-\x1f\x7f]/g, '');
}

/**
 * Converts CRLF to LF chunk by chunk. A CR at the end of a chunk is held back
 * until the next chunk shows whether an LF follows; a CR not followed by LF is kept.
 */
export class CrlfToLf {
  private pendingCr = false;

  push(chunk: Buffer): Buffer {
    const out = Buffer.allocUnsafe(chunk.length + 1);
    let n = 0;
    let i = 0;
    if (this.pendingCr) {
      this.pendingCr = false;
      if (chunk.length === 0) {
        this.pendingCr = true;
        return Buffer.alloc(0);
      }
      if (chunk[0] !== 0x0a) out[n++] = 0x0d;
    }
    for (; i < chunk.length; i++) {
      const byte = chunk[i]!;
      if (byte === 0x0d) {
        if (i + 1 === chunk.length) {
          this.pendingCr = true;
          continue;
        }
        if (chunk[i + 1] === 0x0a) continue;
      }
      out[n++] = byte;
    }
    return out.subarray(0, n);
  }

  end(): Buffer {
    const rest = this.pendingCr ? Buffer.from([0x0d]) : Buffer.alloc(0);
    this.pendingCr = false;
    return rest;
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, fsConstants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Creates the Maildir if needed. A new directory entry is durable only once its
 * parent directory is fsynced, so every parent of a created directory is.
 */
async function ensureMaildir(maildir: string): Promise<void> {
  const firstCreated = await fs.mkdir(maildir, { recursive: true, mode: DIR_MODE });
  let createdSub = false;
  for (const sub of ['tmp', 'new', 'cur']) {
    await fs.mkdir(path.join(maildir, sub), { mode: DIR_MODE }).then(
      () => (createdSub = true),
      (err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      },
    );
  }
  if (createdSub) await fsyncDir(maildir);
  if (firstCreated !== undefined) {
    const top = path.dirname(firstCreated);
    for (let dir = path.dirname(maildir); ; dir = path.dirname(dir)) {
      await fsyncDir(dir);
      if (dir === top || dir === path.dirname(dir)) break;
    }
  }
}

/** Writes all of `data`: a write to a regular file may in principle be short. */
async function writeAll(handle: fs.FileHandle, data: Buffer): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    const { bytesWritten } = await handle.write(data, offset, data.length - offset);
    if (bytesWritten <= 0) throw new Error('write made no progress');
    offset += bytesWritten;
  }
}

async function removeQuietly(file: string): Promise<void> {
  await fs.unlink(file).catch(() => undefined);
}

/**
 * Delivers one copy of `message` and resolves with the path of the file in new/.
 * Prepends `Return-Path: <sender>` as a local delivery agent does and stores the
 * message with LF line endings. On any error no file is left in new/ or tmp/, the
 * message stream is destroyed, and the error is thrown.
 */
export async function deliverToMaildir(d: MaildirDelivery): Promise<string> {
  const domain = d.domain.toLowerCase();
  assertSafePathComponent(domain, 'domain');
  assertSafePathComponent(d.mailbox, 'mailbox');
  const maildir = path.join(d.mailRoot, domain, d.mailbox);
  const name = uniqueName(d.hostname, Date.now());
  const tmpPath = path.join(maildir, 'tmp', name);
  const newPath = path.join(maildir, 'new', name);
  let linked = false;

  try {
    await ensureMaildir(maildir);
    const handle = await fs.open(tmpPath, 'wx', FILE_MODE);
    try {
      await writeAll(handle, Buffer.from(`Return-Path: <${sanitizeHeaderValue(d.sender)}>\n`));
      const converter = new CrlfToLf();
      for await (const chunk of d.message) {
        const out = converter.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string));
        if (out.length > 0) await writeAll(handle, out);
      }
      const rest = converter.end();
      if (rest.length > 0) await writeAll(handle, rest);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.link(tmpPath, newPath);
    linked = true;
    await fsyncDir(path.join(maildir, 'new'));
    await removeQuietly(tmpPath);
    return newPath;
  } catch (err) {
    d.message.destroy();
    if (linked) await removeQuietly(newPath);
    await removeQuietly(tmpPath);
    throw err;
  }
}

/** An I/O error as shown to senders: the errno text without file paths. */
function describeIoError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (typeof e?.code === 'string') {
    const text = typeof e.message === 'string' ? e.message.split(',')[0] ?? e.code : e.code;
    return text.startsWith(e.code) ? text : `${e.code}: ${text}`;
  }
  return err instanceof Error ? err.message.replace(/[\r\n]+/g, ' ') : String(err);
}

export interface MaildirTransportOptions {
  mailRoot: string;
  hostname: string;
  /** the configured domains; those with `delivery: maildir` are delivered, others answered `deferred` */
  domains: readonly DomainConfig[];
  logger: Logger;
}

/**
 * The transport for `delivery: maildir` domains. Recipients aliasing to the same
 * mailbox get one copy between them. Unknown mailboxes fail (5.1.1); local I/O
 * errors defer (4.3.0), since a full disk or a permission problem is fixable.
 *
 * A recipient whose alias is a list or forwards elsewhere was split into its
 * targets when it was queued and before this attempt (expandAliases). One whose
 * alias changed during the attempt is written to each member's mailbox and
 * counts as delivered only when all were written (if one fails, the retry writes
 * the others again); if it now forwards elsewhere too, it is deferred, and the
 * next attempt sends it where its alias says.
 */
export class MaildirTransport implements Transport {
  private readonly domains: Map<string, DomainConfig>;

  constructor(private readonly opts: MaildirTransportOptions) {
    // A forward domain passed in with the rest of the config is not ours to store.
    this.domains = new Map(opts.domains.filter((d) => d.delivery === 'maildir').map((d) => [d.name.toLowerCase(), d]));
  }

  async deliver(message: OutboundMessage): Promise<RecipientResult[]> {
    const results = new Map<string, RecipientResult>();
    const groups = new Map<string, { domain: string; mailbox: string; addresses: string[] }>();

    for (const address of message.recipients) {
      const domainName = domainOf(address);
      const domain = this.domains.get(domainName);
      if (!domain) {
        // A routing mistake or a config change since queueing; retrying is the safe answer.
        results.set(address, { address, outcome: 'deferred', reply: `451 4.3.5 ${domainName || 'address'} is not a local Maildir domain` });
        continue;
      }
      const resolved = resolveLocalMailbox(domain, localPartOf(address));
      if ('reason' in resolved) {
        results.set(address, { address, outcome: 'failed', reply: `550 5.1.1 ${resolved.reason}` });
        continue;
      }
      if (resolved.forwards.length > 0) {
        results.set(address, { address, outcome: 'deferred', reply: '451 4.3.0 its alias changed while it was queued: it is sent on at the next attempt' });
        continue;
      }
      for (const mailbox of resolved.mailboxes) {
        const key = `${domainName}/${mailbox}`;
        const group = groups.get(key) ?? { domain: domainName, mailbox, addresses: [] };
        group.addresses.push(address);
        groups.set(key, group);
      }
    }

    for (const group of groups.values()) {
      const log = this.opts.logger.child({ queueId: message.queueId, mailbox: `${group.mailbox}@${group.domain}` });
      let result: Omit<RecipientResult, 'address'>;
      try {
        const file = await deliverToMaildir({
          mailRoot: this.opts.mailRoot,
          domain: group.domain,
          mailbox: group.mailbox,
          sender: message.from,
          hostname: this.opts.hostname,
          message: message.open(),
        });
        log.debug({ file }, 'stored in maildir');
        result = { outcome: 'delivered', reply: `250 2.0.0 delivered to mailbox ${group.mailbox}`, successAction: 'delivered' };
      } catch (err) {
        log.warn({ err }, 'maildir delivery failed');
        // a full mail disk (RFC 3463: mail system full) is retried like any local failure
        const status = isOutOfSpace(err) ? '452 4.3.1' : '451 4.3.0';
        result = { outcome: 'deferred', reply: `${status} local delivery failed: ${describeIoError(err)}` };
      }
      for (const address of group.addresses) {
        // a recipient written to several mailboxes keeps the first failure among them
        if (results.get(address)?.outcome !== 'deferred') results.set(address, { address, ...result });
      }
    }

    // One result per recipient, in the order given (a duplicate address shares its result).
    return message.recipients.map((address) => results.get(address)!);
  }

  async close(): Promise<void> {}
}
