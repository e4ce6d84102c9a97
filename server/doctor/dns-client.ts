/**
 * DNS as the doctor sees it: one resolver (the --dns-server, the config's
 * dns.servers, or the system's) whose answers are sorted into "records", "none"
 * (NXDOMAIN or no records of that type: an answer) and "error" (no answer: a
 * timeout, SERVFAIL, REFUSED). Answers are cached for the run, so checks that
 * share a lookup (the MX for the MX and MTA-STS checks) see the same records.
 *
 * Contract: the lookup methods never throw; `raw` throws Node's coded errors, for
 * libraries that want `dns.promises.resolve`'s behaviour.
 */
import { Resolver } from 'node:dns/promises';

export type Lookup<T> = { kind: 'records'; records: T[] } | { kind: 'none'; nxdomain: boolean } | { kind: 'error'; message: string };

export interface MxRecord {
  exchange: string;
  priority: number;
}

const NONE_CODES = new Set(['ENODATA', 'ENOTFOUND']);

export class DoctorDns {
  private readonly resolver: Resolver;
  private readonly cache = new Map<string, Promise<Lookup<unknown>>>();

  /** @param servers "ip", "ip:port" or "[ipv6]:port"; empty uses the system's resolvers */
  constructor(
    readonly servers: readonly string[],
    timeoutMs: number,
  ) {
    this.resolver = new Resolver({ timeout: Math.max(Math.ceil(timeoutMs / 2), 50), tries: 2 });
    if (servers.length > 0) this.resolver.setServers([...servers]);
  }

  /** the resolvers in use, for the report */
  describeServers(): string {
    return this.servers.length > 0 ? this.servers.join(', ') : `system (${this.resolver.getServers().join(', ')})`;
  }

  mx(name: string): Promise<Lookup<MxRecord>> {
    return this.cached('MX', name, async () => (await this.resolver.resolveMx(name)).map((r) => ({ exchange: normalizeName(r.exchange), priority: r.priority })));
  }

  a(name: string): Promise<Lookup<string>> {
    return this.cached('A', name, () => this.resolver.resolve4(name));
  }

  aaaa(name: string): Promise<Lookup<string>> {
    return this.cached('AAAA', name, () => this.resolver.resolve6(name));
  }

  /** A then AAAA; "error" only when neither answered */
  async addresses(name: string): Promise<Lookup<string>> {
    const [v4, v6] = await Promise.all([this.a(name), this.aaaa(name)]);
    const records = [...(v4.kind === 'records' ? v4.records : []), ...(v6.kind === 'records' ? v6.records : [])];
    if (records.length > 0) return { kind: 'records', records };
    if (v4.kind === 'error') return v4;
    if (v6.kind === 'error') return v6;
    return { kind: 'none', nxdomain: v4.kind === 'none' && v4.nxdomain };
  }

  /** TXT records, each one's character-strings joined (RFC 7208 3.3, RFC 6376 3.6.2.2) */
  txt(name: string): Promise<Lookup<string>> {
    return this.cached('TXT', name, async () => (await this.resolver.resolveTxt(name)).map((chunks) => chunks.join('')));
  }

  /** PTR names of an IP address */
  ptr(ip: string): Promise<Lookup<string>> {
    return this.cached('PTR', ip, async () => (await this.resolver.reverse(ip)).map(normalizeName));
  }

  /** `dns.promises.resolve`'s contract, through this resolver (for mailauth's SPF) */
  raw = (name: string, type: string): Promise<unknown> => this.resolver.resolve(name, type as 'A');

  private cached<T>(type: string, name: string, query: () => Promise<T[]>): Promise<Lookup<T>> {
    const key = `${type} ${normalizeName(name)}`;
    let pending = this.cache.get(key);
    if (!pending) {
      pending = query().then(
        (records): Lookup<T> => (records.length > 0 ? { kind: 'records', records } : { kind: 'none', nxdomain: false }),
        (err: unknown): Lookup<T> => {
          const code = (err as { code?: string }).code ?? '';
          if (NONE_CODES.has(code)) return { kind: 'none', nxdomain: code === 'ENOTFOUND' };
          return { kind: 'error', message: `${type} lookup of ${name} failed: ${code || String(err)}` };
        },
      );
      this.cache.set(key, pending);
    }
    return pending as Promise<Lookup<T>>;
  }
}

/** lower case, no trailing dot */
export function normalizeName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}
