/**
 * An in-process authoritative DNS server for tests, on 127.0.0.1 (UDP and TCP on
 * the same random port), serving a zone given as a plain object:
 *
 *   startDnsServer({
 *     'example.test': { MX: [{ exchange: 'mx.example.test', priority: 10 }], TXT: ['v=spf1 -all'] },
 *     'mx.example.test': { A: ['127.0.0.1'], AAAA: ['::1'] },
 *     'nullmx.test': { MX: [{ exchange: '.', priority: 0 }] },
 *   })
 *
 * Unknown names answer NXDOMAIN; known names without the asked type answer
 * NOERROR with no answers (Node reports ENODATA). A name with a CNAME answers
 * every other type with the CNAME followed by the target's records, when the
 * target is in the zone. TXT strings longer than 255 bytes are split into
 * several character-strings; a TXT value given as an array is sent as those
 * character-strings. Responses too large for UDP are truncated, and resolvers
 * retry over TCP.
 */
import dns2 from 'dns2';
import ipaddr from 'ipaddr.js';

export interface ZoneRecords {
  A?: string[];
  AAAA?: string[];
  MX?: { exchange: string; priority: number }[];
  TXT?: (string | string[])[];
  PTR?: string[];
  CNAME?: string;
}

export type Zone = Record<string, ZoneRecords>;

export interface DnsServerHandle {
  port: number;
  address: '127.0.0.1';
  /** for MxResolver / dns.Resolver.setServers */
  servers: string[];
  /** replaces the served zone */
  setZone(zone: Zone): void;
  /** number of queries answered so far */
  queries(): number;
  close(): Promise<void>;
}

const { Packet } = dns2;
const TTL_S = 60;
const ATTEMPTS = 20;

type Answer = Record<string, unknown> & { name: string; type: number; class: number; ttl: number };
/** the parts of dns2's request and response packets used here (its typings do not export them) */
type Request = { header: { id: number }; questions: { name: string; type: number }[] };
type Response = { header: { aa: number; rcode: number }; answers: Answer[] };
type Send = (response: Response) => void;

/** close() fails, naming what is still open, rather than hanging a test file */
const CLOSE_TIMEOUT_MS = 5_000;

export async function startDnsServer(initialZone: Zone): Promise<DnsServerHandle> {
  let zone = normalizeZone(initialZone);
  let answered = 0;
  const handle = (request: Request, send: Send): void => {
    answered++;
    send(answer(zone, request));
  };

  // UDP first on a random port, then TCP on the same number; retry if TCP's is taken
  for (let attempt = 1; ; attempt++) {
    const server = dns2.createServer({ udp: true, tcp: true, handle: handle as unknown as Parameters<typeof dns2.createServer>[0]['handle'] });
    const servers = (server as unknown as { servers: { udp: import('node:dgram').Socket; tcp: import('node:net').Server } }).servers;
    // dns2 re-emits its sockets' errors on the server object, where an event without
    // a listener throws: before the listeners below, so a taken TCP port would never
    // reach them and the start would wait forever. The errors of the start reject it
    // (below); later ones, of single requests, are only reported.
    let started = false;
    server.on('error', (err: Error) => {
      if (started) console.error(`test DNS server: ${err.message}`);
    });
    const tcpClients = new Set<import('node:net').Socket>();
    servers.tcp.on('connection', (socket: import('node:net').Socket) => {
      tcpClients.add(socket);
      socket.once('close', () => tcpClients.delete(socket));
    });
    try {
      const port = await new Promise<number>((resolve, reject) => {
        servers.udp.once('error', reject);
        servers.udp.bind(0, '127.0.0.1', () => resolve(servers.udp.address().port));
      });
      await new Promise<void>((resolve, reject) => {
        servers.tcp.once('error', reject);
        servers.tcp.listen(port, '127.0.0.1', () => resolve());
      });
      started = true;
      return {
        port,
        address: '127.0.0.1',
        servers: [`127.0.0.1:${port}`],
        setZone(next) {
          zone = normalizeZone(next);
        },
        queries: () => answered,
        close: async () => {
          // a TCP server closes only once its connections have: a resolver may keep
          // one open for as long as it lives (c-ares does), so end them here
          for (const socket of tcpClients) socket.destroy();
          let timer: NodeJS.Timeout | undefined;
          const stuck = new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`the test DNS server did not close within ${CLOSE_TIMEOUT_MS} ms; still active: ${process.getActiveResourcesInfo().join(', ')}`)), CLOSE_TIMEOUT_MS);
          });
          try {
            await Promise.race([server.close(), stuck]);
          } finally {
            clearTimeout(timer);
          }
        },
      };
    } catch (err) {
      servers.udp.close();
      if (servers.tcp.listening) servers.tcp.close();
      if (attempt >= ATTEMPTS) throw err;
    }
  }
}

function normalizeZone(zone: Zone): Map<string, ZoneRecords> {
  return new Map(Object.entries(zone).map(([name, records]) => [canonical(name), records]));
}

function canonical(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

function answer(zone: Map<string, ZoneRecords>, request: Request): Response {
  const response = Packet.createResponseFromRequest(request as unknown as Parameters<typeof Packet.createResponseFromRequest>[0]) as unknown as Response;
  response.header.aa = 1;
  const question = request.questions[0];
  if (!question) return response;

  const name = canonical(question.name);
  let records = zone.get(name);
  if (!records) {
    response.header.rcode = 3; // NXDOMAIN
    return response;
  }
  let owner = question.name;
  // follow CNAMEs inside the zone (bounded, a loop in test data must not hang)
  for (let hops = 0; records?.CNAME !== undefined && question.type !== Packet.TYPE.CNAME && hops < 8; hops++) {
    response.answers.push(base(owner, Packet.TYPE.CNAME, { domain: records.CNAME }));
    owner = records.CNAME;
    records = zone.get(canonical(owner));
  }
  if (records) response.answers.push(...recordsOfType(owner, records, question.type));
  return response;
}

function recordsOfType(owner: string, records: ZoneRecords, type: number): Answer[] {
  switch (type) {
    case Packet.TYPE.A:
      return (records.A ?? []).map((address) => base(owner, type, { address }));
    case Packet.TYPE.AAAA:
      // dns2's encoder wants all eight groups written out
      return (records.AAAA ?? []).map((address) => base(owner, type, { address: ipaddr.IPv6.parse(address).toNormalizedString() }));
    case Packet.TYPE.MX:
      // '.' is the root: dns2 encodes it as the empty name, which Node reports as exchange ''
      return (records.MX ?? []).map(({ exchange, priority }) => base(owner, type, { exchange, priority }));
    case Packet.TYPE.TXT:
      return (records.TXT ?? []).map((text) => base(owner, type, { data: characterStrings(text) }));
    case Packet.TYPE.PTR:
      return (records.PTR ?? []).map((domain) => base(owner, type, { domain }));
    case Packet.TYPE.CNAME:
      return records.CNAME === undefined ? [] : [base(owner, type, { domain: records.CNAME })];
    default:
      return [];
  }
}

/** A TXT value as <character-string>s of at most 255 bytes each (RFC 1035 3.3.14). */
function characterStrings(text: string | string[]): Buffer[] {
  const parts = Array.isArray(text) ? text : [text];
  return parts.flatMap((part) => {
    const bytes = Buffer.from(part, 'utf8');
    const chunks: Buffer[] = [];
    for (let offset = 0; offset < bytes.length; offset += 255) chunks.push(bytes.subarray(offset, offset + 255));
    return chunks.length > 0 ? chunks : [Buffer.alloc(0)];
  });
}

function base(name: string, type: number, data: Record<string, unknown>): Answer {
  return { name, type, class: Packet.CLASS.IN, ttl: TTL_S, ...data };
}
