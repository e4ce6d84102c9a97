/**
 * Watches the configured certificate and key files (tls.certFile, tls.keyFile) and
 * hands a renewed pair to the certificate store, so a certificate renewed by
 * another tool (certbot, an operator copying files) is used without a restart.
 *
 * Contract: the files are polled (stat follows symlinks, so a symlink switched
 * to a new version counts as a change); a change is applied only when both files
 * read and the key belongs to the certificate. A half-written renewal (new
 * certificate, old key) is logged and retried at the next poll, and until then
 * the previous pair stays in use.
 */
import { readFile, stat } from 'node:fs/promises';
import type { Logger } from '../log/logger';
import type { CertificateStore } from './certificate-store';

export interface CertificateFiles {
  certFile: string;
  keyFile: string;
}

export class CertificateFileWatcher {
  private timer?: NodeJS.Timeout;
  private lastStamp = '';
  /** the failure logged last, so a persisting problem is logged once, not every poll */
  private lastProblem = '';
  private polling?: Promise<void>;

  constructor(
    private readonly files: CertificateFiles,
    private readonly store: CertificateStore,
    private readonly intervalMs: number,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    this.lastStamp = await this.stamp().catch(() => '');
    this.timer = setInterval(() => void this.poll(), this.intervalMs);
    this.timer.unref();
  }

  stop(): Promise<void> {
    clearInterval(this.timer);
    return this.polling ?? Promise.resolve();
  }

  /** Checks the files once (also what the timer does). */
  poll(): Promise<void> {
    this.polling ??= this.check().finally(() => (this.polling = undefined));
    return this.polling;
  }

  private async check(): Promise<void> {
    let stamp: string;
    try {
      stamp = await this.stamp();
    } catch (err) {
      return this.problem(`cannot read the certificate files: ${(err as Error).message}`);
    }
    if (stamp === this.lastStamp) return;
    try {
      const [cert, key] = await Promise.all([readFile(this.files.certFile), readFile(this.files.keyFile)]);
      this.store.replace({ cert, key, source: 'configured' });
      this.lastStamp = stamp;
      this.lastProblem = '';
    } catch (err) {
      this.problem(`${this.files.certFile} / ${this.files.keyFile} changed but cannot be used yet (the previous certificate stays): ${(err as Error).message}`);
    }
  }

  private problem(message: string): void {
    if (message === this.lastProblem) return;
    this.lastProblem = message;
    this.logger.warn({ event: 'tls-reload-failed', certFile: this.files.certFile, keyFile: this.files.keyFile }, message);
  }

  private async stamp(): Promise<string> {
    const [c, k] = await Promise.all([stat(this.files.certFile), stat(this.files.keyFile)]);
    return [c.ino, c.size, c.mtimeMs, k.ino, k.size, k.mtimeMs].join(':');
  }
}
