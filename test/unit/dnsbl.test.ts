/**
 * The DNS blocklist checker's rules, with a resolver whose answers each test
 * sets: query names, reading answers, failures, config order, the cache and the
 * reason text. The checker against a real DNS server is in
 * test/integration/dnsbl.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CACHE_MS, UNSURE_CACHE_MS, DnsblChecker, blocklistQueryName, classifyBlocklistAnswer, type DnsblResolver } from '../../server/inbound/dnsbl';
import { createLogger } from '../../server/log/logger';
import { Writable } from 'node:stream';

/** A resolver answering from `a` and `txt` (a name missing from `a` is NXDOMAIN; an Error value is thrown). */
function resolverOf(a: Record<string, string[] | Error>, txt: Record<string, string[][]> = {}) {
  const asked: string[] = [];
  const resolver: DnsblResolver = {
    async resolve4(name) {
      asked.push(name);
      const answer = a[name];
      if (answer instanceof Error) throw answer;
      if (!answer) throw Object.assign(new Error(`queryA ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
      return answer;
    },
    async resolveTxt(name) {
      const answer = txt[name];
      if (!answer) throw Object.assign(new Error(`queryTxt ENODATA ${name}`), { code: 'ENODATA' });
      return answer;
    },
  };
  return { resolver, asked };
}

function capturingLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: createLogger('info', sink), lines };
}

test('query names: reversed octets for IPv4, 32 reversed nibbles for IPv6, IPv4-mapped IPv6 as IPv4', () => {
  assert.equal(blocklistQueryName('192.0.2.7', 'bl.test'), '7.2.0.192.bl.test');
  assert.equal(blocklistQueryName('::ffff:192.0.2.7', 'bl.test'), '7.2.0.192.bl.test');
  assert.equal(blocklistQueryName('2001:db8::1', 'bl.test'), '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test');
});

test('answers: 127/8 lists, error codes and foreign answers cannot tell, codes narrow a zone', () => {
  assert.deepEqual(classifyBlocklistAnswer([]), { kind: 'clean' });
  assert.deepEqual(classifyBlocklistAnswer(['127.0.0.2', '127.0.0.10']), { kind: 'listed', codes: ['127.0.0.2', '127.0.0.10'] });
  assert.equal(classifyBlocklistAnswer(['127.255.255.254']).kind, 'unknown');
  assert.match((classifyBlocklistAnswer(['127.255.255.255']) as { reason: string }).reason, /too many queries/);
  assert.match((classifyBlocklistAnswer(['198.51.100.1']) as { reason: string }).reason, /not a blocklist code/);
  assert.deepEqual(classifyBlocklistAnswer(['127.0.0.4'], ['127.0.0.2']), { kind: 'clean' });
  assert.deepEqual(classifyBlocklistAnswer(['127.0.0.4', '127.0.0.2'], ['127.0.0.2']), { kind: 'listed', codes: ['127.0.0.2'] });
});

test('the first listing zone in config order names the refusal, with its reason as one safe line', async () => {
  const { resolver } = resolverOf(
    { '7.2.0.192.first.test': ['127.0.0.3'], '7.2.0.192.second.test': ['127.0.0.2'] },
    { '7.2.0.192.first.test': [['see https://first.test/', '?ip=192.0.2.7\r\n250 fake'], ['x'.repeat(300)]] },
  );
  const checker = new DnsblChecker([{ zone: 'clean.test' }, { zone: 'first.test' }, { zone: 'second.test' }], resolver, capturingLogger().logger);
  const verdict = await checker.check('192.0.2.7');
  assert.equal(verdict.listed, true);
  if (!verdict.listed) return;
  assert.equal(verdict.zone, 'first.test');
  assert.equal(verdict.address, '192.0.2.7');
  assert.deepEqual(verdict.codes, ['127.0.0.3']);
  // no CR or LF can reach the SMTP reply, and the text is cut short
  assert.ok(verdict.text!.startsWith('see https://first.test/?ip=192.0.2.7 250 fake x'));
  assert.equal(verdict.text!.length, 200);
});

test('an IPv4 client on a dual-stack listener is named as the IPv4 address it is', async () => {
  const { resolver } = resolverOf({ '7.2.0.192.bl.test': ['127.0.0.2'] });
  const verdict = await new DnsblChecker([{ zone: 'bl.test' }], resolver, capturingLogger().logger).check('::ffff:192.0.2.7');
  assert.deepEqual(verdict, { listed: true, address: '192.0.2.7', zone: 'bl.test', codes: ['127.0.0.2'] });
});

test('a list that cannot be asked lets the client through, and the log says which and why', async () => {
  const { resolver } = resolverOf({ '7.2.0.192.down.test': Object.assign(new Error('queryA ETIMEOUT'), { code: 'ETIMEOUT' }) });
  const { logger, lines } = capturingLogger();
  const checker = new DnsblChecker([{ zone: 'down.test' }], resolver, logger);
  assert.deepEqual(await checker.check('192.0.2.7'), { listed: false });
  const warning = lines.find((l) => l.event === 'dnsbl-error');
  assert.equal(warning?.zone, 'down.test');
  assert.match(String(warning?.reason), /7\.2\.0\.192\.down\.test failed: ETIMEOUT/);
});

test('verdicts are kept for a while per address, and connections at once share one lookup', async () => {
  const { resolver, asked } = resolverOf({ '7.2.0.192.bl.test': ['127.0.0.2'] });
  let now = 1_000_000;
  const answers: string[] = [];
  const checker = new DnsblChecker([{ zone: 'bl.test' }], resolver, capturingLogger().logger, { now: () => now, onAnswer: (zone, answer) => answers.push(`${zone}:${answer}`) });
  const [a, b] = await Promise.all([checker.check('192.0.2.7'), checker.check('192.0.2.7')]);
  assert.equal(a.listed && b.listed, true);
  assert.equal(asked.length, 1);
  now += CACHE_MS - 1;
  await checker.check('192.0.2.7');
  assert.equal(asked.length, 1);
  now += 1;
  await checker.check('192.0.2.7');
  assert.equal(asked.length, 2);
  // another address is asked about on its own
  assert.deepEqual(await checker.check('192.0.2.8'), { listed: false });
  assert.equal(asked.length, 3);
  // each lookup's answer is heard once; those from memory are not
  assert.deepEqual(answers, ['bl.test:listed', 'bl.test:listed', 'bl.test:clean']);
});

test('a "not listed" that a list could not vouch for is kept only briefly; a listing found meanwhile still counts', async () => {
  let now = 1_000_000;
  const a: Record<string, string[] | Error> = { '7.2.0.192.down.test': Object.assign(new Error('queryA ETIMEOUT'), { code: 'ETIMEOUT' }) };
  const { resolver, asked } = resolverOf(a);
  const checker = new DnsblChecker([{ zone: 'up.test' }, { zone: 'down.test' }], resolver, capturingLogger().logger, { now: () => now });
  assert.deepEqual(await checker.check('192.0.2.7'), { listed: false });
  assert.equal(asked.length, 2);
  now += UNSURE_CACHE_MS - 1;
  await checker.check('192.0.2.7');
  assert.equal(asked.length, 2, 'kept while the list may still be down');
  // the list is back and lists the client: it is refused once the short verdict runs out
  a['7.2.0.192.down.test'] = ['127.0.0.2'];
  now += 1;
  const verdict = await checker.check('192.0.2.7');
  assert.equal(asked.length, 4);
  assert.equal(verdict.listed && verdict.zone, 'down.test');
  // a listing is kept the full time even when another list failed
  a['7.2.0.192.up.test'] = Object.assign(new Error('queryA ESERVFAIL'), { code: 'ESERVFAIL' });
  now += CACHE_MS - 1;
  assert.equal((await checker.check('192.0.2.7')).listed, true);
  assert.equal(asked.length, 4);
});

test('text that is not an IP address is never looked up', async () => {
  const { resolver, asked } = resolverOf({});
  const checker = new DnsblChecker([{ zone: 'bl.test' }], resolver, capturingLogger().logger);
  assert.deepEqual(await checker.check('not-an-address'), { listed: false });
  assert.equal(asked.length, 0);
});
