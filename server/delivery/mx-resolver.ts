/**
 * Where mail for a domain goes: MX lookup with the RFC 5321 section 5.1 rules.
 *
 * Contract: `resolveDomain` never throws. It answers
 * - `hosts`: the exchanges to try, lowest preference first (equal preferences in
 *   random order, to spread load as RFC 5321 asks); a domain without MX records
 *   has an implicit MX, the domain itself, if it has an A or AAAA record;
 * - `permanent`: mail can never be delivered (null MX per RFC 7505, the domain
 *   does not exist, or it has no MX and no address records);
 * - `temporary`: DNS did not give an answer now (SERVFAIL, timeouts, refused).
 *
 * `resolveHost` returns the A then the AAAA addresses of a host ([] when it has
 * none or does not exist) and throws for any other DNS failure. An IP literal is
 * returned as is, and a domain literal ("[192.0.2.1]", "[IPv6:2001:db8::1]")
 * is planned as that single address.
 *
 * `resolveTxt` answers the TXT records of a name ([] when there are none) and
 * throws for a DNS failure.
 */
import { Resolver } from 'node:dns/promises';
import net from 'node:net';

export interface MxHost {
  name: string;
  preference: number;
}

export type MxPlan =
  | { kind: 'hosts'; hosts: MxHost[] }
  | { kind: 'permanent'; reason: string }
  | { kind: 'temporary'; reason: string };

/** c-ares codes that mean "the name or the record does not exist", answers rather than failures */
const NO_DATA = new Set(['ENODATA', 'ENOTFOUND']);

const DEFAULT_TIMEOUT_MS = 10_000;
/** tries per query; c-ares doubles the wait on each retry, so budget / 3 per try fits the budget */
const TRIES = 2;

/**
 * A resolver asking `servers` ("ip", "ip:port" or "[ipv6]:port"; empty: the
 * system's) whose queries end, retry included, within about `budgetMs`.
 */
export function boundedResolver(servers: readonly string[], budgetMs: number): Resolver {
  const resolver = new Resolver({ timeout: Math.max(Math.ceil(budgetMs / 3), 50), tries: TRIES });
  if (servers.length > 0) resolver.setServers([...servers]);
  return resolver;
}

export class MxResolver {
  private readonly resolver: Resolver;
  private readonly timeoutMs: number;

  /**
   * @param servers resolvers as "ip", "ip:port" or "[ipv6]:port"; empty uses the system resolver
   * @param timeoutMs budget for one lookup, retries included
   */
  constructor(servers: readonly string[], timeoutMs?: number) {
    this.timeoutMs = timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.resolver = boundedResolver(servers, this.timeoutMs);
  }

  async resolveDomain(domain: string): Promise<MxPlan> {
    const name = domain.replace(/\.$/, '');
    const literal = domainLiteral(name);
    if (literal !== undefined) {
      return net.isIP(literal) ? { kind: 'hosts', hosts: [{ name: literal, preference: 0 }] } : { kind: 'permanent', reason: `${domain} is not a valid address literal` };
    }

    let records: { exchange: string; priority: number }[];
    try {
      records = await this.withTimeout(this.resolver.resolveMx(name), `MX ${name}`);
    } catch (err) {
      const code = errorCode(err);
      if (code === 'ENOTFOUND') return { kind: 'permanent', reason: `domain ${name} does not exist (NXDOMAIN)` };
      if (code !== 'ENODATA') return { kind: 'temporary', reason: `MX lookup for ${name} failed: ${describe(err)}` };
      records = [];
    }

    // RFC 7505: a null MX is a single record with the root as exchange; one mixed in
    // with real exchanges is a mistake, and the real exchanges are used
    const exchanges = records.filter((record) => record.exchange !== '' && record.exchange !== '.');
    if (records.length > 0 && exchanges.length === 0) {
      return { kind: 'permanent', reason: `domain ${name} does not accept mail (null MX)` };
    }
    if (exchanges.length > 0) {
      const hosts = shuffle(exchanges.map((record) => ({ name: record.exchange.replace(/\.$/, ''), preference: record.priority })));
      hosts.sort((a, b) => a.preference - b.preference); // stable, so equal preferences stay shuffled
      return { kind: 'hosts', hosts };
    }

    // no MX records: the domain is its own implicit MX, if it has an address at all
    try {
      const addresses = await this.resolveHost(name);
      if (addresses.length === 0) return { kind: 'permanent', reason: `domain ${name} has no MX and no A or AAAA records` };
      return { kind: 'hosts', hosts: [{ name, preference: 0 }] };
    } catch (err) {
      return { kind: 'temporary', reason: `address lookup for ${name} failed: ${describe(err)}` };
    }
  }

  async resolveHost(host: string): Promise<string[]> {
    const name = host.replace(/\.$/, '');
    if (net.isIP(name)) return [name];
    const [v4, v6] = await Promise.allSettled([
      this.withTimeout(this.resolver.resolve4(name), `A ${name}`),
      this.withTimeout(this.resolver.resolve6(name), `AAAA ${name}`),
    ]);
    const addresses = [...fulfilled(v4), ...fulfilled(v6)];
    // one family failing while the other answered still leaves somewhere to deliver to
    if (addresses.length > 0) return addresses;
    for (const result of [v4, v6]) {
      if (result.status === 'rejected' && !NO_DATA.has(errorCode(result.reason) ?? '')) throw result.reason;
    }
    return [];
  }

  /** TXT records of a name as their character-strings; [] when it has none or does not exist; throws for other DNS failures. */
  async resolveTxt(name: string): Promise<string[][]> {
    try {
      return await this.withTimeout(this.resolver.resolveTxt(name.replace(/\.$/, '')), `TXT ${name}`);
    } catch (err) {
      if (NO_DATA.has(errorCode(err) ?? '')) return [];
      throw err;
    }
  }

  /** Bounds a lookup by timeoutMs; c-ares keeps its own per-try timer, this caps the total. */
  private withTimeout<T>(lookup: Promise<T>, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const err = new Error(`${what}: no answer within ${this.timeoutMs} ms`) as NodeJS.ErrnoException;
        err.code = 'ETIMEOUT';
        reject(err);
      }, this.timeoutMs);
      timer.unref();
    });
    return Promise.race([lookup, timeout]).finally(() => clearTimeout(timer));
  }
}

/** "[192.0.2.1]" -> "192.0.2.1", "[IPv6:2001:db8::1]" -> "2001:db8::1", anything else -> undefined */
function domainLiteral(domain: string): string | undefined {
  const match = /^\[(?:ipv6:)?(.*)\]$/i.exec(domain);
  return match ? (match[1] ?? '') : undefined;
}

function fulfilled(result: PromiseSettledResult<string[]>): string[] {
  return result.status === 'fulfilled' ? result.value : [];
}

function errorCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}

function describe(err: unknown): string {
  const code = errorCode(err);
  const message = err instanceof Error ? err.message : String(err);
  return code && !message.includes(code) ? `${code} (${message})` : message;
}

function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j] as T, items[i] as T];
  }
  return items;
}
