/**
 * Inbound authentication on the MX role: SPF, DKIM, DMARC and ARC evaluated by
 * mailauth, through the relay's resolver (dns.servers).
 *
 * Contract: `inspect` reads the client's message (as it will be queued, without
 * our own trace header) to its end and resolves to what the data stage does with
 * it: the Received-SPF and Authentication-Results fields to put in front of the
 * message, and, when the sender's domain publishes DMARC p=reject, the message
 * fails DMARC and every recipient's domain honours such policies, a 550 5.7.1
 * refusal. It never rejects on a lookup error (temperror): the message is
 * accepted and marked. An unexpected error in the checks accepts the message
 * with a temperror mark rather than losing or refusing it.
 */
import type { Readable } from 'node:stream';
import type { authenticate as Authenticate } from 'mailauth';
import type { RelayConfig } from '../config/schema';
import { boundedResolver } from '../delivery/mx-resolver';
import { domainOf } from '../queue/envelope';
import { SmtpError } from '../stages/smtp-error';

export interface InspectedMessage {
  /** header fields to put in front of the message, each ending in CRLF */
  headers: string;
  /** a short Authentication-Results field with the results only (when `headers` does not fit) */
  compactHeaders: string;
  /** set when the message must be refused */
  refusal?: SmtpError;
  /** a one-line summary for the logs, e.g. "spf=pass dkim=pass dmarc=pass" */
  summary: string;
}

export interface MessageFacts {
  clientAddress: string;
  helo: string;
  /** MAIL FROM ('' for the null sender) */
  sender: string;
  recipients: readonly string[];
}

type Resolve = (name: string, rrtype: string) => Promise<unknown>;

/** one SPF, DKIM or DMARC lookup, retry included (as before: two tries of 3 s, the second waiting 6 s) */
const LOOKUP_BUDGET_MS = 9_000;

export class InboundAuthenticator {
  private readonly resolve: Resolve;

  constructor(private readonly config: RelayConfig) {
    const resolver = boundedResolver(config.dns.servers, LOOKUP_BUDGET_MS);
    this.resolve = (name, rrtype) => resolver.resolve(name, rrtype as 'TXT');
  }

  async inspect(message: Readable, facts: MessageFacts): Promise<InspectedMessage> {
    const mta = this.config.hostname;
    let result: Awaited<ReturnType<typeof Authenticate>>;
    try {
      result = await loadAuthenticate()(message, {
        ip: facts.clientAddress,
        helo: facts.helo,
        sender: facts.sender,
        mta,
        resolver: this.resolve as never,
        disableBimi: true,
      });
    } catch (err) {
      message.resume();
      const reason = err instanceof Error ? err.message : String(err);
      const header = `Authentication-Results: ${mta}; none (checks failed: ${oneLine(reason)})\r\n`;
      return { headers: header, compactHeaders: header, summary: `error: ${reason}` };
    }
    const dmarc = result.dmarc as DmarcResult | false | undefined;
    const summary = [
      `spf=${result.spf ? result.spf.status.result : 'none'}`,
      `dkim=${(result.dkim?.results ?? []).map((r) => r.status.result).join(',') || 'none'}`,
      `dmarc=${dmarc ? dmarc.status.result : 'none'}`,
      ...(result.arc ? [`arc=${result.arc.status.result}`] : []),
    ].join(' ');
    const headers = `${result.headers.trimEnd()}\r\n`;
    const compactHeaders = `Authentication-Results: ${mta}; ${summary.split(' ').join('; ')}\r\n`;
    if (dmarc && dmarc.status.result === 'fail' && dmarc.policy === 'reject' && this.honoursReject(facts.recipients)) {
      return {
        headers,
        compactHeaders,
        summary,
        refusal: new SmtpError(550, '5.7.1', `Message refused: ${dmarc.domain} publishes DMARC p=reject and this message fails it`, `dmarc fail, p=reject (${summary})`),
      };
    }
    return { headers, compactHeaders, summary };
  }

  /** Refuse only when every recipient's domain wants DMARC p=reject failures refused. */
  private honoursReject(recipients: readonly string[]): boolean {
    const fallback = this.config.inbound.dmarcRejectPolicy;
    return recipients.every((address) => {
      const domain = this.config.domains.find((d) => d.name.toLowerCase() === domainOf(address));
      return (domain?.dmarcRejectPolicy ?? fallback) === 'refuse';
    });
  }
}

interface DmarcResult {
  status: { result: string };
  domain: string;
  policy?: string;
}

function oneLine(text: string): string {
  return text.replace(/[\r\n()]+/g, ' ').slice(0, 200);
}

let authenticateFunction: typeof Authenticate | undefined;

/** mailauth, loaded at the first message checked (tens of MiB a relay without inbound mail never needs). */
function loadAuthenticate(): typeof Authenticate {
  authenticateFunction ??= (require('mailauth') as { authenticate: typeof Authenticate }).authenticate;
  return authenticateFunction;
}
