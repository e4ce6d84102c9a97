/**
 * The DNS identity policies: every node is in MX and SPF, the DKIM record carries
 * the public half of the key, TXT strings fit DNS's 255-byte limit, and the MTA-STS
 * id follows the policy text. Pure functions, no Pulumi.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import {
  dkimPublicKeyBase64,
  nodeHostnames,
  renderDnsRecords,
  renderMtaStsPolicy,
  renderZoneSnippet,
  splitTxt,
  type DnsIdentityInput,
  type DnsRecord,
} from '../../infra/render/dns-records';

const keys = generateKeyPairSync('rsa', { modulusLength: 2048 });
const publicKeyPem = keys.publicKey.export({ type: 'spki', format: 'pem' }).toString();

function input(overrides: Partial<DnsIdentityInput> = {}): DnsIdentityInput {
  const [first = '', second = '', third = ''] = nodeHostnames('mail.acme.org', 3);
  return {
    domains: ['acme.org', 'acme-shop.net'],
    hostname: 'mail.acme.org',
    nodes: [
      { hostname: first, ipv4: '203.0.113.7', ipv6: '2001:db8::7' },
      { hostname: second, ipv4: '203.0.113.8' },
      { hostname: third, ipv4: '198.51.100.9', ipv6: '2001:db8:1::9' },
    ],
    dkim: { selector: 'ownrelay1', publicKeyPem },
    dmarc: { policy: 'quarantine', rua: 'mailto:dmarc@acme.org' },
    mtaSts: { mode: 'testing', maxAgeSeconds: 604800 },
    ...overrides,
  };
}

function find(records: DnsRecord[], name: string, type: DnsRecord['type']): DnsRecord {
  const record = records.find((r) => r.name === name && r.type === type);
  assert.ok(record, `no ${type} record at ${name}`);
  return record;
}

function tagsOf(txt: string): Map<string, string> {
  return new Map(txt.split(';').map((part) => part.trim()).filter(Boolean).map((part) => [part.slice(0, part.indexOf('=')), part.slice(part.indexOf('=') + 1)]));
}

test('node 0 is the configured host name and further nodes are numbered mail2, mail3', () => {
  assert.deepEqual(nodeHostnames('mail.acme.org', 3), ['mail.acme.org', 'mail2.acme.org', 'mail3.acme.org']);
  assert.deepEqual(nodeHostnames('mx1.acme.org', 2), ['mx1.acme.org', 'mx1-2.acme.org']);
});

test('every node has an A record (and AAAA when it has IPv6) at its own host name', () => {
  const records = renderDnsRecords(input());
  assert.deepEqual(find(records, 'mail.acme.org', 'A').values, ['203.0.113.7']);
  assert.deepEqual(find(records, 'mail.acme.org', 'AAAA').values, ['2001:db8::7']);
  assert.deepEqual(find(records, 'mail2.acme.org', 'A').values, ['203.0.113.8']);
  assert.equal(records.some((r) => r.name === 'mail2.acme.org' && r.type === 'AAAA'), false);
  assert.deepEqual(find(records, 'mail3.acme.org', 'AAAA').values, ['2001:db8:1::9']);
});

test('every domain has an MX to every node, all at the same preference', () => {
  const records = renderDnsRecords(input());
  for (const domain of ['acme.org', 'acme-shop.net']) {
    assert.deepEqual(find(records, domain, 'MX').values, ['10 mail.acme.org', '10 mail2.acme.org', '10 mail3.acme.org']);
  }
});

test("the SPF record lists every node's IP and ends in -all", () => {
  const records = renderDnsRecords(input());
  for (const domain of ['acme.org', 'acme-shop.net']) {
    const spf = find(records, domain, 'TXT').values.filter((v) => v.startsWith('v=spf1 '));
    assert.equal(spf.length, 1, 'exactly one SPF record');
    const terms = (spf[0] ?? '').split(' ');
    for (const ip of ['ip4:203.0.113.7', 'ip4:203.0.113.8', 'ip4:198.51.100.9', 'ip6:2001:db8::7', 'ip6:2001:db8:1::9']) assert.ok(terms.includes(ip), `${domain} SPF has ${ip}`);
    assert.equal(terms.at(-1), '-all');
  }
});

test('the DKIM record carries the public half of the key', () => {
  const records = renderDnsRecords(input());
  const txt = find(records, 'ownrelay1._domainkey.acme.org', 'TXT').values[0] ?? '';
  const tags = tagsOf(txt);
  assert.equal(tags.get('v'), 'DKIM1');
  assert.equal(tags.get('k'), 'rsa');
  const published = createPublicKey({ key: Buffer.from(tags.get('p') ?? '', 'base64'), format: 'der', type: 'spki' });
  assert.ok(published.equals(keys.publicKey), 'p= decodes to the generated public key');
  const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
  assert.equal(published.equals(other), false);
  assert.equal(dkimPublicKeyBase64(publicKeyPem), tags.get('p'));
});

test('during a key rotation, the retired selectors stay published with their own keys', () => {
  const retiredPem = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
  const records = renderDnsRecords(input({ dkim: { selector: 'ownrelay2', publicKeyPem }, retiredDkim: [{ selector: 'ownrelay1', publicKeyPem: retiredPem }] }));
  const p = (selector: string) => tagsOf(find(records, `${selector}._domainkey.acme.org`, 'TXT').values[0] ?? '').get('p');
  assert.equal(p('ownrelay2'), dkimPublicKeyBase64(publicKeyPem));
  assert.equal(p('ownrelay1'), dkimPublicKeyBase64(retiredPem));
  assert.notEqual(p('ownrelay1'), p('ownrelay2'));
  assert.throws(() => renderDnsRecords(input({ retiredDkim: [{ selector: 'ownrelay1', publicKeyPem: retiredPem }] })), /a DKIM selector is given twice/);
});

test('a DKIM key that is not RSA is refused', () => {
  const ed = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }).toString();
  assert.throws(() => dkimPublicKeyBase64(ed), /expected an RSA key/);
});

test('DMARC, MTA-STS and TLS-RPT records are published for every domain', () => {
  const records = renderDnsRecords(input({ tlsRptRua: undefined }));
  for (const domain of ['acme.org', 'acme-shop.net']) {
    const dmarc = tagsOf(find(records, `_dmarc.${domain}`, 'TXT').values[0] ?? '');
    assert.equal(dmarc.get('v'), 'DMARC1');
    assert.equal(dmarc.get('p'), 'quarantine');
    assert.equal(dmarc.get('rua'), 'mailto:dmarc@acme.org');
    assert.match(find(records, `_mta-sts.${domain}`, 'TXT').values[0] ?? '', /^v=STSv1; id=[A-Za-z0-9]{1,32}$/);
    assert.deepEqual(find(records, `_smtp._tls.${domain}`, 'TXT').values, [`v=TLSRPTv1; rua=mailto:postmaster@${domain}`]);
    // node 0 serves the policy (its HTTP-01 certificate covers the name), so the name points there only
    assert.deepEqual(find(records, `mta-sts.${domain}`, 'A').values, ['203.0.113.7']);
    assert.deepEqual(find(records, `mta-sts.${domain}`, 'AAAA').values, ['2001:db8::7']);
  }
});

test('there is at most one record per name and type', () => {
  const records = renderDnsRecords(input({ domains: ['acme.org', 'ACME.org'] }));
  const keys = records.map((r) => `${r.name} ${r.type}`);
  assert.equal(new Set(keys).size, keys.length);
});

test('the MTA-STS policy is RFC 8461 text with CRLF lines naming every MX host', () => {
  const policy = renderMtaStsPolicy({ mode: 'enforce', maxAgeSeconds: 86400, mxHosts: ['mail.acme.org', 'mail2.acme.org'] });
  assert.equal(policy.text, 'version: STSv1\r\nmode: enforce\r\nmx: mail.acme.org\r\nmx: mail2.acme.org\r\nmax_age: 86400\r\n');
});

test('the MTA-STS id changes when the policy changes and only then', () => {
  const base = { mode: 'testing' as const, maxAgeSeconds: 604800, mxHosts: ['mail.acme.org'] };
  const id = renderMtaStsPolicy(base).id;
  assert.match(id, /^[A-Za-z0-9]{1,32}$/);
  assert.equal(renderMtaStsPolicy({ ...base }).id, id, 'same policy, same id');
  assert.notEqual(renderMtaStsPolicy({ ...base, mode: 'enforce' }).id, id);
  assert.notEqual(renderMtaStsPolicy({ ...base, maxAgeSeconds: 86400 }).id, id);
  assert.notEqual(renderMtaStsPolicy({ ...base, mxHosts: ['mail.acme.org', 'mail2.acme.org'] }).id, id);
  // changes elsewhere in DNS (a new IP, another DMARC policy) leave the policy and its id alone
  const a = renderDnsRecords(input());
  const b = renderDnsRecords(input({ dmarc: { policy: 'reject' }, nodes: input().nodes.map((n, i) => ({ ...n, ipv4: `192.0.2.${i + 1}` })) }));
  assert.deepEqual(find(a, '_mta-sts.acme.org', 'TXT').values, find(b, '_mta-sts.acme.org', 'TXT').values);
});

test('no TXT character-string exceeds 255 bytes and splitting loses nothing', () => {
  const long = 'v=DKIM1; k=rsa; p=' + 'A'.repeat(700);
  const parts = splitTxt(long);
  assert.ok(parts.length >= 3);
  for (const part of parts) assert.ok(Buffer.byteLength(part) <= 255);
  assert.equal(parts.join(''), long);
  // an RSA-2048 DKIM record is about 410 bytes: it must come out as two strings
  const snippet = renderZoneSnippet(renderDnsRecords(input()));
  assert.match(snippet, /_domainkey\.acme\.org\.\t\d+\tIN\tTXT\t"v=DKIM1[^"]*" "[^"]+"\n/);
  for (const match of snippet.matchAll(/"((?:[^"\\]|\\.)*)"/g)) {
    const unescaped = (match[1] ?? '').replace(/\\(\d{3}|.)/g, (_, e: string) => (e.length === 3 ? String.fromCharCode(Number(e)) : e));
    assert.ok(unescaped.length <= 255, `a ${unescaped.length}-byte string in the zone snippet`);
  }
});

test('splitting never cuts a multi-byte UTF-8 character', () => {
  const text = 'x' + 'é'.repeat(200) + '€'.repeat(100);
  const parts = splitTxt(text);
  for (const part of parts) {
    assert.ok(Buffer.byteLength(part) <= 255);
    assert.equal(Buffer.from(part, 'utf8').toString('utf8'), part, 'each part is whole UTF-8');
    assert.ok(!part.includes('\ufffd'));
  }
  assert.equal(parts.join(''), text);
  assert.deepEqual(splitTxt(''), ['']);
});

test('the zone snippet uses absolute names, trailing dots on MX targets and escaped quoted TXT', () => {
  const snippet = renderZoneSnippet([
    { name: 'acme.org', type: 'MX', ttl: 3600, values: ['10 mail.acme.org'] },
    { name: 'acme.org', type: 'TXT', ttl: 300, values: ['say "hi" \\ bye'] },
    { name: 'mail.acme.org', type: 'A', ttl: 3600, values: ['203.0.113.7'] },
  ]);
  assert.deepEqual(snippet.trimEnd().split('\n'), [
    'acme.org.\t3600\tIN\tMX\t10 mail.acme.org.',
    'acme.org.\t300\tIN\tTXT\t"say \\"hi\\" \\\\ bye"',
    'mail.acme.org.\t3600\tIN\tA\t203.0.113.7',
  ]);
});

test('a node without a valid IPv4 address is refused', () => {
  assert.throws(() => renderDnsRecords(input({ nodes: [{ hostname: 'mail.acme.org', ipv4: '2001:db8::1' }] })), /not an IPv4 address/);
  assert.throws(() => renderDnsRecords(input({ nodes: [] })), /at least one node/);
});

test('without an MTA-STS policy to serve, neither _mta-sts nor mta-sts.<domain> is published; the rest is', () => {
  const { mtaSts: _served, ...withoutPolicy } = input();
  const records = renderDnsRecords(withoutPolicy);
  assert.deepEqual(records.filter((r) => r.name.startsWith('_mta-sts.') || r.name.startsWith('mta-sts.')), []);
  for (const domain of ['acme.org', 'acme-shop.net']) {
    find(records, domain, 'MX');
    find(records, `_smtp._tls.${domain}`, 'TXT');
    find(records, `ownrelay1._domainkey.${domain}`, 'TXT');
  }
  const withPolicy = renderDnsRecords(input());
  assert.deepEqual(find(withPolicy, 'mta-sts.acme.org', 'A').values, ['203.0.113.7']);
});
