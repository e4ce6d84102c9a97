import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AddressGuard } from '../../server/delivery/address-guard';
import { NetworkList, rememberAnswers } from '../../server/config/cidr';

const guard = new AddressGuard([]);

function refusalOf(g: AddressGuard, ip: string): string {
  const verdict = g.check(ip);
  assert.equal(verdict.allowed, false, `${ip} should be refused`);
  return verdict.allowed ? '' : verdict.reason;
}

describe('AddressGuard', () => {
  it('allows public IPv4 and IPv6 unicast addresses', () => {
    for (const ip of ['8.8.8.8', '1.1.1.1', '185.12.64.1', '2a00:1450:4001:80b::201a', '2606:4700:4700::1111']) {
      assert.deepEqual(guard.check(ip), { allowed: true }, ip);
    }
  });

  it('refuses every special-purpose IPv4 range and names the kind of address', () => {
    const cases: [string, RegExp][] = [
      ['127.0.0.1', /loopback/],
      ['127.255.255.254', /loopback/],
      ['0.0.0.0', /unspecified/],
      ['0.1.2.3', /unspecified/],
      ['10.1.2.3', /private/],
      ['172.16.0.1', /private/],
      ['172.31.255.255', /private/],
      ['192.168.1.1', /private/],
      ['169.254.1.1', /link-local/],
      ['100.64.0.1', /carrier-grade NAT/],
      ['100.127.255.255', /carrier-grade NAT/],
      ['224.0.0.1', /multicast/],
      ['239.255.255.250', /multicast/],
      ['255.255.255.255', /broadcast/],
      ['240.0.0.1', /reserved/],
      ['192.0.2.10', /reserved/],
      ['198.51.100.7', /reserved/],
      ['203.0.113.9', /reserved/],
      ['198.18.0.1', /reserved/],
      ['192.0.0.8', /reserved/],
    ];
    for (const [ip, kind] of cases) {
      const reason = refusalOf(guard, ip);
      assert.match(reason, kind, ip);
      assert.match(reason, new RegExp(`^${ip.replace(/\./g, '\\.')} `), 'the reason names the address');
      assert.match(reason, /not allowed by delivery\.allowedDestinations/);
    }
  });

  it('does not refuse the public neighbours of private ranges', () => {
    for (const ip of ['172.15.255.255', '172.32.0.1', '100.63.255.255', '100.128.0.1', '11.0.0.1', '169.253.255.255']) {
      assert.deepEqual(guard.check(ip), { allowed: true }, ip);
    }
  });

  it('refuses special-purpose IPv6 ranges', () => {
    const cases: [string, RegExp][] = [
      ['::1', /loopback/],
      ['::', /unspecified/],
      ['fe80::1', /link-local/],
      ['fc00::1', /unique local/],
      ['fd12:3456::1', /unique local/],
      ['ff02::1', /multicast/],
      ['fec0::1', /site-local/],
      ['2001:db8::1', /reserved/],
      ['100::1', /discard/],
      ['2002:c000:0201::1', /6to4/],
      ['2001:0:4136:e378::1', /Teredo/],
      ['64:ff9b:1::a00:1', /NAT64/],
      ['4000::1', /unallocated/],
    ];
    for (const [ip, kind] of cases) assert.match(refusalOf(guard, ip), kind, ip);
  });

  it('refuses the cloud metadata addresses', () => {
    assert.match(refusalOf(guard, '169.254.169.254'), /cloud metadata/);
    assert.match(refusalOf(guard, 'fd00:ec2::254'), /cloud metadata/);
  });

  it('judges IPv6 forms that carry an IPv4 address as that IPv4 address', () => {
    assert.match(refusalOf(guard, '::ffff:127.0.0.1'), /loopback/);
    assert.match(refusalOf(guard, '::ffff:7f00:1'), /loopback/);
    assert.match(refusalOf(guard, '::ffff:10.0.0.1'), /private/);
    assert.match(refusalOf(guard, '::ffff:169.254.169.254'), /cloud metadata/);
    assert.match(refusalOf(guard, '::ffff:0:192.168.0.1'), /private/);
    assert.match(refusalOf(guard, '::127.0.0.1'), /loopback/);
    assert.match(refusalOf(guard, '64:ff9b::10.0.0.1'), /private/);
    assert.deepEqual(guard.check('::ffff:8.8.8.8'), { allowed: true });
    assert.deepEqual(guard.check('64:ff9b::8.8.8.8'), { allowed: true });
  });

  it('refuses text that is not an IP address', () => {
    assert.match(refusalOf(guard, 'mx.example.org'), /not an IP address/);
    assert.match(refusalOf(guard, ''), /not an IP address/);
    assert.match(refusalOf(guard, '999.1.1.1'), /not an IP address/);
  });

  it('allows addresses inside delivery.allowedDestinations, in either notation', () => {
    const lab = new AddressGuard(['127.0.0.0/8', '::1', '10.20.0.0/16', 'fd00:1::/64']);
    for (const ip of ['127.0.0.1', '127.1.2.3', '::ffff:127.0.0.1', '::1', '10.20.5.5', 'fd00:1::25']) {
      assert.deepEqual(lab.check(ip), { allowed: true }, ip);
    }
    assert.match(refusalOf(lab, '10.21.0.1'), /private/);
    assert.match(refusalOf(lab, '192.168.0.1'), /private/);
    assert.match(refusalOf(lab, 'fd00:2::25'), /unique local/);
  });

  it('allows an IPv4-mapped allowed range for plain IPv4 addresses', () => {
    const lab = new AddressGuard(['::ffff:10.0.0.0/104']);
    assert.deepEqual(lab.check('10.1.1.1'), { allowed: true });
    assert.match(refusalOf(lab, '192.168.1.1'), /private/);
  });

  it('keeps the metadata service closed when a whole link-local range is allowed', () => {
    const lab = new AddressGuard(['169.254.0.0/16', 'fd00::/8']);
    assert.deepEqual(lab.check('169.254.10.10'), { allowed: true });
    assert.match(refusalOf(lab, '169.254.169.254'), /cloud metadata/);
    assert.match(refusalOf(lab, 'fd00:ec2::254'), /cloud metadata/);
  });

  it('allows a metadata address listed on its own', () => {
    const lab = new AddressGuard(['169.254.169.254/32', 'fd00:ec2::254']);
    assert.deepEqual(lab.check('169.254.169.254'), { allowed: true });
    assert.deepEqual(lab.check('fd00:ec2::254'), { allowed: true });
  });

  it('answers an address seen before the same way, from memory', () => {
    const lab = new AddressGuard(['127.0.0.0/8']);
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(lab.check('127.0.0.1'), { allowed: true });
      assert.match(refusalOf(lab, '10.0.0.1'), /private/);
      assert.match(refusalOf(lab, 'not-an-ip'), /not an IP address/);
    }
    // a remembered verdict cannot be changed by one caller for the next
    assert.ok(Object.isFrozen(lab.check('10.0.0.1')));
  });
});

describe('NetworkList', () => {
  it('matches addresses and ranges, IPv4-mapped clients included, again and again', () => {
    const list = new NetworkList(['127.0.0.0/8', '2001:db8::/32', '192.0.2.7']);
    for (let i = 0; i < 3; i++) {
      assert.equal(list.contains('127.0.0.1'), true);
      assert.equal(list.contains('::ffff:127.0.0.1'), true);
      assert.equal(list.contains('2001:db8::25'), true);
      assert.equal(list.contains('192.0.2.7'), true);
      assert.equal(list.contains('192.0.2.8'), false);
      assert.equal(list.contains('::1'), false);
      assert.equal(list.contains('bogus'), false);
    }
  });
});

describe('rememberAnswers', () => {
  it('asks once per address and keeps at most its limit, forgetting the oldest first', () => {
    const asked: string[] = [];
    const lengthOf = rememberAnswers((text) => {
      asked.push(text);
      return text.length;
    }, 2);
    assert.equal(lengthOf('a'), 1);
    assert.equal(lengthOf('bb'), 2);
    assert.equal(lengthOf('a'), 1);
    assert.deepEqual(asked, ['a', 'bb']);
    // a third address pushes out the oldest ('a'), which is then asked again
    assert.equal(lengthOf('ccc'), 3);
    assert.equal(lengthOf('bb'), 2);
    assert.equal(lengthOf('a'), 1);
    assert.deepEqual(asked, ['a', 'bb', 'ccc', 'a']);
  });

  it('remembers false answers too', () => {
    let calls = 0;
    const never = rememberAnswers(() => {
      calls++;
      return false;
    });
    never('x');
    never('x');
    assert.equal(calls, 1);
  });
});
