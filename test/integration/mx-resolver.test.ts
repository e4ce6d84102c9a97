import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { Resolver } from 'node:dns/promises';
import { after, before, describe, it } from 'node:test';
import { MxResolver } from '../../server/delivery/mx-resolver';
import { type DnsServerHandle, type Zone, startDnsServer } from '../helpers/dns-server';

/** the zone every test starts from */
const ZONE: Zone = {
  'example.test': {
    MX: [
      { exchange: 'backup.example.test', priority: 20 },
      { exchange: 'mx.example.test', priority: 10 },
    ],
    TXT: ['v=spf1 -all'],
  },
  'mx.example.test': { A: ['127.0.0.1'], AAAA: ['::1'] },
  'backup.example.test': { A: ['127.0.0.2'] },
  'v6only.example.test': { AAAA: ['2001:db8::25'] },
  'equal.test': {
    MX: ['a', 'b', 'c', 'd'].map((label) => ({ exchange: `${label}.equal.test`, priority: 10 })).concat([{ exchange: 'last.equal.test', priority: 50 }]),
  },
  'nullmx.test': { MX: [{ exchange: '.', priority: 0 }] },
  'mixed-nullmx.test': { MX: [{ exchange: '.', priority: 0 }, { exchange: 'mx.example.test', priority: 10 }] },
  'implicit.test': { A: ['127.0.0.3'], TXT: ['no mx here'] },
  'nothing.test': { TXT: ['neither mx nor address'] },
  'alias.test': { CNAME: 'mx.example.test' },
};

describe('MxResolver', () => {
  let dns: DnsServerHandle;
  let resolver: MxResolver;

  before(async () => {
    dns = await startDnsServer(ZONE);
    resolver = new MxResolver(dns.servers, 2000);
  });

  after(async () => {
    await dns.close();
  });

  it('serves every record type the way Node reads it (test helper check)', async () => {
    const node = new Resolver({ timeout: 1000, tries: 1 });
    node.setServers(dns.servers);
    assert.deepEqual(await node.resolveMx('nullmx.test'), [{ exchange: '', priority: 0 }]);
    assert.deepEqual(await node.resolveTxt('example.test'), [['v=spf1 -all']]);
    assert.deepEqual(await node.resolve6('mx.example.test'), ['::1']);
    assert.deepEqual(await node.resolve4('alias.test'), ['127.0.0.1']);
    await assert.rejects(node.resolve4('nowhere.test'), { code: 'ENOTFOUND' });
    await assert.rejects(node.resolveMx('mx.example.test'), { code: 'ENODATA' });
    dns.setZone({ 'long.test': { TXT: ['x'.repeat(600)] }, '9.2.0.192.in-addr.arpa': { PTR: ['mx.example.test'] } });
    try {
      const [strings] = await node.resolveTxt('long.test');
      assert.deepEqual(strings?.map((s) => s.length), [255, 255, 90], 'long TXT arrives as 255-byte character-strings');
      assert.deepEqual(await node.resolvePtr('9.2.0.192.in-addr.arpa'), ['mx.example.test']);
    } finally {
      dns.setZone(ZONE);
    }
  });

  it('orders MX hosts by preference', async () => {
    const plan = await resolver.resolveDomain('example.test');
    assert.deepEqual(plan, {
      kind: 'hosts',
      hosts: [
        { name: 'mx.example.test', preference: 10 },
        { name: 'backup.example.test', preference: 20 },
      ],
    });
  });

  it('shuffles hosts of equal preference but keeps them ahead of higher preferences', async () => {
    const firsts = new Set<string>();
    for (let i = 0; i < 40; i++) {
      const plan = await resolver.resolveDomain('equal.test');
      assert.equal(plan.kind, 'hosts');
      if (plan.kind !== 'hosts') return;
      assert.equal(plan.hosts.length, 5);
      assert.deepEqual(plan.hosts.at(-1), { name: 'last.equal.test', preference: 50 });
      assert.deepEqual(plan.hosts.slice(0, 4).map((h) => h.name).sort(), ['a.equal.test', 'b.equal.test', 'c.equal.test', 'd.equal.test']);
      firsts.add(plan.hosts[0]?.name ?? '');
    }
    assert.ok(firsts.size > 1, `the first host should vary, always got ${[...firsts].join()}`);
  });

  it('answers a null MX as a permanent failure', async () => {
    assert.deepEqual(await resolver.resolveDomain('nullmx.test'), { kind: 'permanent', reason: 'domain nullmx.test does not accept mail (null MX)' });
  });

  it('ignores a null MX mixed in with real exchanges', async () => {
    assert.deepEqual(await resolver.resolveDomain('mixed-nullmx.test'), { kind: 'hosts', hosts: [{ name: 'mx.example.test', preference: 10 }] });
  });

  it('answers a domain that does not exist as a permanent failure', async () => {
    const plan = await resolver.resolveDomain('nowhere.test');
    assert.equal(plan.kind, 'permanent');
    assert.match(plan.kind === 'permanent' ? plan.reason : '', /nowhere\.test does not exist \(NXDOMAIN\)/);
  });

  it('uses the domain itself as implicit MX when it has an address but no MX records', async () => {
    assert.deepEqual(await resolver.resolveDomain('implicit.test'), { kind: 'hosts', hosts: [{ name: 'implicit.test', preference: 0 }] });
  });

  it('fails permanently for a domain with neither MX nor address records', async () => {
    const plan = await resolver.resolveDomain('nothing.test');
    assert.equal(plan.kind, 'permanent');
    assert.match(plan.kind === 'permanent' ? plan.reason : '', /no MX and no A or AAAA records/);
  });

  it('plans an address literal as that address', async () => {
    assert.deepEqual(await resolver.resolveDomain('[192.0.2.7]'), { kind: 'hosts', hosts: [{ name: '192.0.2.7', preference: 0 }] });
    assert.deepEqual(await resolver.resolveDomain('[IPv6:2001:db8::7]'), { kind: 'hosts', hosts: [{ name: '2001:db8::7', preference: 0 }] });
  });

  it('returns IPv4 addresses before IPv6 addresses', async () => {
    assert.deepEqual(await resolver.resolveHost('mx.example.test'), ['127.0.0.1', '::1']);
    assert.deepEqual(await resolver.resolveHost('v6only.example.test'), ['2001:db8::25']);
    assert.deepEqual(await resolver.resolveHost('alias.test'), ['127.0.0.1', '::1']);
  });

  it('returns no addresses for a host without address records or without a name', async () => {
    assert.deepEqual(await resolver.resolveHost('example.test'), []);
    assert.deepEqual(await resolver.resolveHost('nowhere.test'), []);
  });

  it('returns an IP literal host unchanged without asking DNS', async () => {
    const before = dns.queries();
    assert.deepEqual(await resolver.resolveHost('192.0.2.1'), ['192.0.2.1']);
    assert.equal(dns.queries(), before);
  });

  describe('with a DNS server that fails', () => {
    let broken: dgram.Socket;
    let brokenResolver: MxResolver;
    let silentResolver: MxResolver;
    let silent: dgram.Socket;

    before(async () => {
      // answers every query with SERVFAIL
      broken = dgram.createSocket('udp4');
      broken.on('message', (query, peer) => {
        const reply = Buffer.from(query);
        reply[2] = 0x80 | (query[2] ?? 0); // QR
        reply[3] = 0x02; // RCODE SERVFAIL
        broken.send(reply, peer.port, peer.address);
      });
      await new Promise<void>((resolve) => broken.bind(0, '127.0.0.1', resolve));
      brokenResolver = new MxResolver([`127.0.0.1:${broken.address().port}`], 1000);
      // never answers
      silent = dgram.createSocket('udp4');
      await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
      silentResolver = new MxResolver([`127.0.0.1:${silent.address().port}`], 300);
    });

    after(() => {
      broken.close();
      silent.close();
    });

    it('answers SERVFAIL as a temporary failure', async () => {
      const plan = await brokenResolver.resolveDomain('example.test');
      assert.equal(plan.kind, 'temporary');
      assert.match(plan.kind === 'temporary' ? plan.reason : '', /MX lookup for example\.test failed: .*ESERVFAIL/);
    });

    it('answers a DNS timeout as a temporary failure within the time budget', async () => {
      const started = Date.now();
      const plan = await silentResolver.resolveDomain('example.test');
      assert.equal(plan.kind, 'temporary');
      assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
    });

    it('throws from resolveHost when DNS fails rather than answering no addresses', async () => {
      await assert.rejects(brokenResolver.resolveHost('mx.example.test'), { code: 'ESERVFAIL' });
    });
  });
});
