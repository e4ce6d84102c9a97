/**
 * A stand-in for Amazon Route 53's REST API on 127.0.0.1 (AWS itself cannot be
 * reached from tests): enough of ChangeResourceRecordSets, GetChange and
 * ListHostedZonesByName for the real AWS SDK client to work against it. Changes
 * are recorded as the SDK sent them and handed to `onChange`, which a test uses
 * to serve the records from its DNS server. Changes are INSYNC at the second
 * GetChange, so the client's waiter is exercised.
 *
 * Point the SDK at it with AWS_ENDPOINT_URL_ROUTE_53 (see `environment`).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordChange {
  zoneId: string;
  action: string;
  name: string;
  type: string;
  ttl: number;
  values: string[];
}

export interface Route53Api {
  port: number;
  /** environment for the SDK: endpoint and dummy credentials */
  environment: Record<string, string>;
  changes: RecordChange[];
  /** GetChange calls answered so far */
  changePolls(): number;
  close(): Promise<void>;
}

const NS = 'https://route53.amazonaws.com/doc/2013-04-01/';

export async function startRoute53Api(zones: Record<string, string>, onChange: (change: RecordChange) => void): Promise<Route53Api> {
  const changes: RecordChange[] = [];
  const polls = new Map<string, number>();
  let polled = 0;
  const server = createServer((req, res) => void handle(req, res));

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url ?? '/', 'http://localhost');
    const xml = (status: number, text: string) => {
      res.writeHead(status, { 'content-type': 'text/xml' });
      res.end(`<?xml version="1.0" encoding="UTF-8"?>\n${text}`);
    };
    const rrset = /^\/2013-04-01\/hostedzone\/([^/]+)\/rrset\/?$/.exec(url.pathname);
    if (req.method === 'POST' && rrset) {
      const zoneId = rrset[1]!;
      for (const block of body.match(/<Change>[^]*?<\/Change>/g) ?? []) {
        const change: RecordChange = {
          zoneId,
          action: tag(block, 'Action'),
          name: tag(block, 'Name'),
          type: tag(block, 'Type'),
          ttl: Number(tag(block, 'TTL')),
          values: [...block.matchAll(/<Value>([^<]*)<\/Value>/g)].map((m) => unescapeXml(m[1]!)),
        };
        changes.push(change);
        onChange(change);
      }
      const id = `C${changes.length}`;
      polls.set(id, 0);
      return xml(200, `<ChangeResourceRecordSetsResponse xmlns="${NS}"><ChangeInfo><Id>/change/${id}</Id><Status>PENDING</Status><SubmittedAt>${new Date().toISOString()}</SubmittedAt></ChangeInfo></ChangeResourceRecordSetsResponse>`);
    }
    const change = /^\/2013-04-01\/change\/([^/]+)$/.exec(url.pathname);
    if (req.method === 'GET' && change) {
      polled++;
      const seen = (polls.get(change[1]!) ?? 0) + 1;
      polls.set(change[1]!, seen);
      const status = seen >= 2 ? 'INSYNC' : 'PENDING';
      return xml(200, `<GetChangeResponse xmlns="${NS}"><ChangeInfo><Id>/change/${change[1]}</Id><Status>${status}</Status><SubmittedAt>${new Date().toISOString()}</SubmittedAt></ChangeInfo></GetChangeResponse>`);
    }
    if (req.method === 'GET' && url.pathname === '/2013-04-01/hostedzonesbyname') {
      const wanted = (url.searchParams.get('dnsname') ?? '').toLowerCase();
      const names = Object.keys(zones).sort();
      const name = names.find((n) => n >= wanted);
      const zone = name === undefined ? '' : `<HostedZone><Id>/hostedzone/${zones[name]}</Id><Name>${name}</Name><CallerReference>test</CallerReference><Config><PrivateZone>false</PrivateZone></Config><ResourceRecordSetCount>2</ResourceRecordSetCount></HostedZone>`;
      return xml(200, `<ListHostedZonesByNameResponse xmlns="${NS}"><HostedZones>${zone}</HostedZones><DNSName>${wanted}</DNSName><IsTruncated>false</IsTruncated><MaxItems>1</MaxItems></ListHostedZonesByNameResponse>`);
    }
    xml(400, `<ErrorResponse xmlns="${NS}"><Error><Type>Sender</Type><Code>InvalidInput</Code><Message>not handled here: ${req.method} ${url.pathname}</Message></Error><RequestId>test</RequestId></ErrorResponse>`);
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    environment: { AWS_ENDPOINT_URL_ROUTE_53: `http://127.0.0.1:${port}`, AWS_ACCESS_KEY_ID: 'AKIDTEST', AWS_SECRET_ACCESS_KEY: 'test-secret', AWS_REGION: 'us-east-1' },
    changes,
    changePolls: () => polled,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

function tag(xml: string, name: string): string {
  return unescapeXml(new RegExp(`<${name}>([^<]*)</${name}>`).exec(xml)?.[1] ?? '');
}

function unescapeXml(text: string): string {
  return text.replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
}
