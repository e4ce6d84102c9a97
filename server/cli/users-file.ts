/**
 * Editing `users:` in the YAML config file in place: comments, key order and
 * formatting of everything else are kept (yaml's Document API). Only hashes are
 * ever written. The edited text must pass the relay's own schema before it
 * replaces the file, and it replaces it atomically (same directory, same mode),
 * so a failed edit leaves the file as it was.
 */
import { readFileSync } from 'node:fs';
import { rename, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { isMap, isSeq, parseDocument, YAMLSeq, type Document } from 'yaml';
import { ConfigError, parseConfig } from '../config/load';

export interface UserSummary {
  name: string;
  senders: string[];
}

export class UsersFile {
  private constructor(
    readonly path: string,
    private readonly doc: Document,
  ) {}

  static load(path: string): UsersFile {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new ConfigError(path, [`cannot read the file: ${(err as Error).message}`]);
    }
    // the file must be valid before it is edited, or the edit would be blamed for it
    parseConfig(text, path);
    return new UsersFile(path, parseDocument(text));
  }

  list(): UserSummary[] {
    return this.seq().items.map((item) => {
      const user = (isMap(item) ? item.toJSON() : {}) as { name?: string; senders?: string[] };
      return { name: String(user.name ?? ''), senders: user.senders ?? [] };
    });
  }

  has(name: string): boolean {
    return this.indexOf(name) >= 0;
  }

  add(name: string, passwordHash: string, senders: string[]): void {
    if (this.indexOf(name) >= 0) throw new Error(`user ${name} exists already; use \`ownrelay users passwd ${name}\` to change the password`);
    if (senders.length === 0) throw new Error('give at least one --sender (an address like app@example.org or a whole domain like @example.org)');
    const node = this.doc.createNode({ name, passwordHash, senders });
    const seq = this.seq(true);
    // `users: []` becomes a block list: one user per entry, as people write them
    if (seq.items.length === 0) seq.flow = false;
    seq.items.push(node);
  }

  setPassword(name: string, passwordHash: string): void {
    const item = this.seq().items[this.existing(name)];
    if (!isMap(item)) throw new Error(`user ${name} is not a mapping in ${this.path}`);
    item.set('passwordHash', passwordHash);
  }

  remove(name: string): void {
    this.seq().items.splice(this.existing(name), 1);
  }

  /** Validates the edited config with the relay's schema and replaces the file atomically. */
  async save(): Promise<void> {
    // lineWidth 0: a hash is never folded over two lines
    const text = this.doc.toString({ lineWidth: 0 });
    parseConfig(text, `${this.path} (after the edit)`);
    const { mode } = await stat(this.path);
    const tmp = join(dirname(this.path), `.${basename(this.path)}.${process.pid}.tmp`);
    await writeFile(tmp, text, { mode: mode & 0o777, flag: 'wx' });
    await rename(tmp, this.path);
  }

  private existing(name: string): number {
    const index = this.indexOf(name);
    if (index < 0) throw new Error(`no user ${name} in ${this.path}`);
    return index;
  }

  private indexOf(name: string): number {
    return this.list().findIndex((u) => u.name === name);
  }

  private seq(create = false): YAMLSeq {
    const users = this.doc.get('users', true);
    if (isSeq(users)) return users;
    if (users !== undefined && users !== null && !(typeof users === 'object' && 'value' in users && users.value === null)) {
      throw new Error(`users in ${this.path} is not a list`);
    }
    const seq = new YAMLSeq();
    if (create) this.doc.set('users', seq);
    return seq;
  }
}
