/**
 * The MTA-STS policies of destination domains, fetched when needed and cached
 * in memory and on disk (one JSON file per domain), so a restart keeps them.
 *
 * Contract: `policyFor(domain)` never throws. It answers the policy that applies
 * now, or `undefined` when none does (RFC 8461 5.1):
 * - the `_mta-sts` TXT record is looked up at most every `txtRecheckMs` per
 *   domain; an id different from the cached policy's fetches the policy again;
 * - a cached policy stays in force until its max_age runs out, even when the
 *   TXT record disappears, DNS fails or a new fetch fails (an attacker who can
 *   strip the record must not switch the policy off);
 * - a domain with a TXT record but no fetchable policy and nothing cached has no
 *   policy; the failure is reported to `onFetchFailure` (TLS-RPT) and the fetch
 *   is not tried again for `fetchRetryMs`;
 * - a cached policy past half its max_age is fetched again in the background.
 * Concurrent calls for one domain share one lookup. Memory holds at most
 * MAX_DOMAINS_IN_MEMORY domains; forgotten ones are read from disk again.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../log/logger';
import { PolicyFetchError, type PolicyFetcher } from './mta-sts-fetch';
import { asciiName, parsePolicyText, policyIdOf, type StsPolicy } from './mta-sts-policy';

export interface CachedPolicy {
  /** policy domain, lower-case A-labels */
  domain: string;
  id: string;
  policy: StsPolicy;
  fetchedAtMs: number;
  expiresAtMs: number;
}

export interface MtaStsPoliciesOptions {
  /** TXT strings of a name; [] when it has none or does not exist; throws for a DNS failure */
  lookupTxt(name: string): Promise<string[][]>;
  fetch: PolicyFetcher;
  cacheDir: string;
  logger: Logger;
  /** how long a TXT answer is trusted (default 5 minutes) */
  txtRecheckMs?: number;
  /** after a failed fetch, wait this long before fetching that domain's policy again (default 5 minutes) */
  fetchRetryMs?: number;
  /** a domain publishes MTA-STS but its policy could not be fetched */
  onFetchFailure?(domain: string, error: PolicyFetchError): void;
  now?(): number;
}

interface DomainState {
  txtCheckedAtMs?: number;
  /** the id of the last TXT answer; undefined for no (valid) record or a failed lookup */
  txtId?: string;
  failedId?: string;
  failedAtMs?: number;
  refreshing?: boolean;
}

const DEFAULT_TXT_RECHECK_MS = 5 * 60_000;
const DEFAULT_FETCH_RETRY_MS = 5 * 60_000;
const FILE_VERSION = 1;
/** domains remembered in memory; the oldest are forgotten beyond this (policies stay on disk) */
const MAX_DOMAINS_IN_MEMORY = 10_000;

export class MtaStsPolicies {
  private readonly memory = new Map<string, CachedPolicy | null>();
  private readonly state = new Map<string, DomainState>();
  private readonly inFlight = new Map<string, Promise<CachedPolicy | undefined>>();
  private readonly now: () => number;

  constructor(private readonly opts: MtaStsPoliciesOptions) {
    this.now = opts.now ?? Date.now;
  }

  policyFor(domain: string): Promise<CachedPolicy | undefined> {
    const name = asciiName(domain);
    if (name === '') return Promise.resolve(undefined);
    const running = this.inFlight.get(name);
    if (running) return running;
    this.forgetOldest();
    const lookup = this.resolve(name)
      .catch((err: unknown) => {
        this.opts.logger.error({ event: 'mta-sts-error', domain: name, err: String(err) }, `MTA-STS lookup for ${name} failed unexpectedly`);
        return undefined;
      })
      .finally(() => this.inFlight.delete(name));
    this.inFlight.set(name, lookup);
    return lookup;
  }

  private async resolve(domain: string): Promise<CachedPolicy | undefined> {
    const now = this.now();
    const cached = await this.cached(domain);
    const valid = cached && cached.expiresAtMs > now ? cached : undefined;
    const state = this.stateOf(domain);
    const fresh = state.txtCheckedAtMs !== undefined && now - state.txtCheckedAtMs < (this.opts.txtRecheckMs ?? DEFAULT_TXT_RECHECK_MS);
    if (!fresh) {
      state.txtCheckedAtMs = now;
      try {
        state.txtId = policyIdOf(await this.opts.lookupTxt(`_mta-sts.${domain}`));
      } catch (err) {
        state.txtId = undefined;
        this.opts.logger.debug({ domain, err: String(err) }, 'MTA-STS TXT lookup failed; using the cached policy if there is one');
      }
    }
    const id = state.txtId;
    if (id === undefined) return valid;
    const recentlyFailed = state.failedId === id && state.failedAtMs !== undefined && now - state.failedAtMs < (this.opts.fetchRetryMs ?? DEFAULT_FETCH_RETRY_MS);
    if (valid && valid.id === id) {
      const halfLife = (valid.expiresAtMs - valid.fetchedAtMs) / 2;
      if (now - valid.fetchedAtMs > halfLife && !recentlyFailed) this.refreshInBackground(domain, id);
      return valid;
    }
    if (recentlyFailed) return valid;
    return (await this.fetch(domain, id)) ?? valid;
  }

  /** Fetches and stores the policy; undefined (after reporting) when the fetch failed. */
  private async fetch(domain: string, id: string): Promise<CachedPolicy | undefined> {
    const state = this.stateOf(domain);
    let policy: StsPolicy;
    try {
      policy = await this.opts.fetch(domain);
    } catch (err) {
      const error = err instanceof PolicyFetchError ? err : new PolicyFetchError(String(err), 'sts-policy-fetch-error');
      state.failedId = id;
      state.failedAtMs = this.now();
      this.opts.logger.warn({ event: 'mta-sts-fetch-failed', domain, policyId: id, resultType: error.kind, reason: error.message }, `MTA-STS policy of ${domain} could not be fetched: ${error.message}`);
      this.opts.onFetchFailure?.(domain, error);
      return undefined;
    }
    const fetchedAtMs = this.now();
    const entry: CachedPolicy = { domain, id, policy, fetchedAtMs, expiresAtMs: fetchedAtMs + policy.maxAgeS * 1000 };
    this.memory.set(domain, entry);
    state.failedId = undefined;
    this.opts.logger.info(
      { event: 'mta-sts-policy', domain, policyId: id, mode: policy.mode, mx: policy.mx, maxAgeS: policy.maxAgeS },
      `MTA-STS policy of ${domain}: mode ${policy.mode}, mx ${policy.mx.join(' ')}`,
    );
    await this.save(entry);
    return entry;
  }

  private refreshInBackground(domain: string, id: string): void {
    const state = this.stateOf(domain);
    if (state.refreshing) return;
    state.refreshing = true;
    void this.fetch(domain, id).finally(() => (state.refreshing = false));
  }

  private forgetOldest(): void {
    for (const map of [this.memory, this.state]) {
      if (map.size < MAX_DOMAINS_IN_MEMORY) continue;
      let drop = map.size - MAX_DOMAINS_IN_MEMORY / 2;
      for (const key of map.keys()) {
        if (drop-- <= 0) break;
        map.delete(key);
      }
    }
  }

  private stateOf(domain: string): DomainState {
    let state = this.state.get(domain);
    if (!state) this.state.set(domain, (state = {}));
    return state;
  }

  /** The policy in memory, else the one on disk (read once per domain). */
  private async cached(domain: string): Promise<CachedPolicy | undefined> {
    const known = this.memory.get(domain);
    if (known !== undefined) return known ?? undefined;
    const loaded = await this.load(domain);
    if (!this.memory.has(domain)) this.memory.set(domain, loaded ?? null);
    return this.memory.get(domain) ?? undefined;
  }

  private fileOf(domain: string): string {
    return join(this.opts.cacheDir, `${domain}.json`);
  }

  private async load(domain: string): Promise<CachedPolicy | undefined> {
    let text: string;
    try {
      text = await readFile(this.fileOf(domain), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.opts.logger.warn({ event: 'mta-sts-cache-error', domain, err: String(err) }, 'cannot read the cached MTA-STS policy');
      return undefined;
    }
    try {
      return fromFile(JSON.parse(text) as unknown, domain);
    } catch (err) {
      this.opts.logger.warn({ event: 'mta-sts-cache-error', domain, err: String(err) }, `ignoring the unreadable cached MTA-STS policy ${this.fileOf(domain)}`);
      return undefined;
    }
  }

  private async save(entry: CachedPolicy): Promise<void> {
    const file = this.fileOf(entry.domain);
    const temporary = `${file}.${process.pid}.tmp`;
    try {
      await mkdir(this.opts.cacheDir, { recursive: true });
      await writeFile(temporary, `${JSON.stringify(toFile(entry), null, 2)}\n`);
      await rename(temporary, file);
    } catch (err) {
      this.opts.logger.warn({ event: 'mta-sts-cache-error', domain: entry.domain, err: String(err) }, 'cannot write the MTA-STS policy cache; the policy is kept in memory');
    }
  }
}

interface PolicyFile {
  version: number;
  domain: string;
  id: string;
  fetchedAt: string;
  expiresAt: string;
  policy: string[];
}

function toFile(entry: CachedPolicy): PolicyFile {
  return {
    version: FILE_VERSION,
    domain: entry.domain,
    id: entry.id,
    fetchedAt: new Date(entry.fetchedAtMs).toISOString(),
    expiresAt: new Date(entry.expiresAtMs).toISOString(),
    policy: entry.policy.text,
  };
}

/** Reads a cache file back; the policy text is parsed again, so a damaged file is refused rather than trusted. */
function fromFile(data: unknown, domain: string): CachedPolicy {
  const file = data as Partial<PolicyFile>;
  if (file.version !== FILE_VERSION || file.domain !== domain || typeof file.id !== 'string' || !Array.isArray(file.policy)) {
    throw new Error('not an MTA-STS cache file of this domain');
  }
  const fetchedAtMs = Date.parse(String(file.fetchedAt));
  const expiresAtMs = Date.parse(String(file.expiresAt));
  if (!Number.isFinite(fetchedAtMs) || !Number.isFinite(expiresAtMs)) throw new Error('bad dates');
  const policy = parsePolicyText(file.policy.map(String).join('\n'));
  return { domain, id: file.id, policy, fetchedAtMs, expiresAtMs };
}
