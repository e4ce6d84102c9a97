import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DomainSchema, RelayConfigSchema, type DomainConfig } from '../../server/config/schema';
import { assertSafePathComponent, expandAliases, hasExpandingAliases, isRoleMailbox, resolveLocalMailbox } from '../../server/delivery/local-mailboxes';
import type { RecipientState } from '../../server/queue/envelope';

function domain(extra: Partial<Record<'mailboxes' | 'aliases', unknown>> = {}): DomainConfig {
  return DomainSchema.parse({ name: 'example.org', delivery: 'maildir', ...extra });
}

/** Where a local part leads ("a,b" for an alias list), or undefined when refused. */
function mailboxOf(d: DomainConfig, localPart: string): string | undefined {
  const r = resolveLocalMailbox(d, localPart);
  return 'reason' in r ? undefined : [...r.mailboxes, ...r.forwards].join(',');
}

describe('resolveLocalMailbox', () => {
  test('local parts compare case-insensitively and the mailbox name is lower-case', () => {
    const d = domain({ mailboxes: ['alice'] });
    assert.deepEqual(resolveLocalMailbox(d, 'ALICE'), { mailboxes: ['alice'], forwards: [] });
    assert.equal(mailboxOf(domain({ mailboxes: ['Bob'] }), 'bOb'), 'bob');
    assert.equal(mailboxOf(domain(), 'Carol.Smith'), 'carol.smith');
  });

  test('a +detail suffix is dropped before the lookup', () => {
    const d = domain({ mailboxes: ['alice'] });
    assert.equal(mailboxOf(d, 'alice+newsletters'), 'alice');
    assert.equal(mailboxOf(d, 'Alice+'), 'alice');
    assert.equal(mailboxOf(d, 'alice+a+b'), 'alice');
    assert.equal(mailboxOf(domain(), 'dave+x'), 'dave');
  });

  test('a local part that is only a +detail is refused', () => {
    assert.ok('reason' in resolveLocalMailbox(domain(), '+tag'));
  });

  test('aliases map to a mailbox of the same domain and are applied only once', () => {
    const d = domain({ mailboxes: ['alice', 'bob'], aliases: { Root: 'Alice', sales: 'bob' } });
    assert.equal(mailboxOf(d, 'root'), 'alice');
    assert.equal(mailboxOf(d, 'ROOT+cron'), 'alice');
    assert.equal(mailboxOf(d, 'sales'), 'bob');
    // info -> sales is not followed on to bob: info's mail goes to the mailbox called sales
    assert.equal(mailboxOf(domain({ aliases: { sales: 'bob', info: 'sales' } }), 'info'), 'sales');
  });

  test('an alias list leads to each of its mailboxes, once each, in the order given', () => {
    const d = domain({ mailboxes: ['alice', 'bob', 'carol'], aliases: { team: ['Bob', 'alice', 'bob'], solo: ['carol'] } });
    assert.deepEqual(resolveLocalMailbox(d, 'Team+standup'), { mailboxes: ['bob', 'alice'], forwards: [] });
    assert.deepEqual(resolveLocalMailbox(d, 'solo'), { mailboxes: ['carol'], forwards: [] });
  });

  test('an alias may forward to addresses elsewhere, alone or beside mailboxes; the domain is lower-cased, the local part kept', () => {
    const d = domain({ mailboxes: ['alice'], aliases: { abuse: 'Ops+Abuse@Example.NET', team: ['alice', 'lead@partner.example'] } });
    assert.deepEqual(resolveLocalMailbox(d, 'abuse'), { mailboxes: [], forwards: ['Ops+Abuse@example.net'] });
    assert.deepEqual(resolveLocalMailbox(d, 'team'), { mailboxes: ['alice'], forwards: ['lead@partner.example'] });
  });

  test('postmaster and abuse are accepted even when not listed and map to themselves', () => {
    const d = domain({ mailboxes: ['alice'] });
    assert.equal(mailboxOf(d, 'postmaster'), 'postmaster');
    assert.equal(mailboxOf(d, 'PostMaster'), 'postmaster');
    assert.equal(mailboxOf(d, 'abuse'), 'abuse');
  });

  test('an aliased postmaster goes to the alias target', () => {
    const d = domain({ mailboxes: ['alice'], aliases: { postmaster: 'alice' } });
    assert.equal(mailboxOf(d, 'postmaster'), 'alice');
  });

  test('an alias to postmaster is accepted without postmaster being listed', () => {
    const d = domain({ mailboxes: ['alice'], aliases: { root: 'postmaster' } });
    assert.equal(mailboxOf(d, 'root'), 'postmaster');
  });

  test('with a mailbox list, unlisted local parts are refused with a reason', () => {
    const d = domain({ mailboxes: ['alice'] });
    const r = resolveLocalMailbox(d, 'mallory');
    assert.ok('reason' in r);
    assert.match(r.reason, /mallory/);
  });

  test('without a mailbox list, any plain local part is accepted', () => {
    const d = domain();
    for (const lp of ['a', 'john.doe', 'x_y-z', '9lives', 'a'.repeat(64)]) {
      assert.equal(mailboxOf(d, lp), lp, lp);
    }
  });

  test('local parts that are not plain names are refused', () => {
    const d = domain();
    const bad = ['', '"john doe"', '"x"', 'a%b', 'a!b', 'a@b', 'a/b', '../etc', '..', '.', '.hidden', 'a..b', 'trailing.',
      'tab\there', 'nul\0x', 'cr\rx', 'a'.repeat(65), '-dash', 'sp ace', 'back\\slash', 'ünï'];
    for (const lp of bad) {
      const r = resolveLocalMailbox(d, lp);
      assert.ok('reason' in r, `accepted ${JSON.stringify(lp)}`);
    }
  });

  test('a refusal reason never echoes control characters from the input', () => {
    const r = resolveLocalMailbox(domain(), 'x\r\n250 ok');
    assert.ok('reason' in r);
    assert.doesNotMatch(r.reason, /[\x00-\x1f]/);
  });

  test('an alias whose target is not a plain mailbox name is refused (a config the schema would have refused)', () => {
    const unchecked = { name: 'example.org', delivery: 'maildir', aliases: { evil: '../../etc', other: 'bob@', at: '@elsewhere.test', dot: '..', list: ['alice', '../x'] } } as unknown as DomainConfig;
    for (const lp of ['evil', 'other', 'at', 'dot', 'list']) assert.ok('reason' in resolveLocalMailbox(unchecked, lp), lp);
  });
});

describe('aliases in the config', () => {
  function issues(extra: Record<string, unknown>): string[] {
    const parsed = DomainSchema.safeParse({ name: 'example.org', delivery: 'maildir', ...extra });
    return parsed.success ? [] : parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  }

  test('a target that is neither a plain mailbox name nor an address is refused with its key path', () => {
    assert.deepEqual(issues({ aliases: { other: 'bob@', dots: 'a..b' } }), [
      'aliases.other: expected a mailbox of this domain or an address such as ops@example.net, not "bob@"',
      'aliases.dots: expected a mailbox of this domain (letters, digits, . _ -) or an address such as ops@example.net, not "a..b"',
    ]);
    assert.match(issues({ aliases: { team: ['alice', '../etc'] } }).join('\n'), /^aliases\.team\.1: expected a mailbox of this domain/);
    assert.match(issues({ aliases: { team: ['alice', 'x@localhost'] } }).join('\n'), /^aliases\.team\.1: expected a mailbox of this domain or an address/);
    assert.match(issues({ aliases: { team: [] } }).join('\n'), /aliases\.team: a list of at least one mailbox/);
    assert.deepEqual(issues({ aliases: { abuse: 'ops+abuse@example.net', team: ['alice', 'Lead@Partner.example'] } }), []);
  });

  test('with a mailbox list, every target must be listed, or be postmaster or abuse', () => {
    assert.deepEqual(issues({ mailboxes: ['alice'], aliases: { team: ['alice', 'bob'], root: 'Postmaster', info: 'ALICE' } }), ['aliases.team.1: bob is not in mailboxes (nor postmaster or abuse)']);
  });

  test('lists and forwards are for maildir domains; a forward domain may alias one name', () => {
    const forward = { delivery: 'forward', forwardTo: { host: 'mail.internal.test' }, mailboxes: ['alice', 'bob'] };
    assert.deepEqual(issues({ ...forward, aliases: { team: ['alice', 'bob'], abuse: 'ops@example.net' } }), [
      "aliases.team: a list of mailboxes applies only to delivery: maildir (a forward domain's next hop expands its own lists)",
      "aliases.abuse: forwarding to an address applies only to delivery: maildir (a forward domain's next hop does its own aliases)",
    ]);
    assert.deepEqual(issues({ ...forward, aliases: { root: 'alice', one: ['bob'] } }), []);
  });
});

describe('forwards to this server\'s own domains', () => {
  function issues(domains: unknown[]): string[] {
    const parsed = RelayConfigSchema.safeParse({ listeners: [{ role: 'mx', port: 25 }], domains });
    return parsed.success ? [] : parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  }

  test('name a mailbox there: an address of the same domain, or an alias elsewhere that expands again, is refused', () => {
    const brand2 = { name: 'brand2.example', aliases: { sales: ['alice', 'bob'], info: 'carol', out: 'ops@example.net' } };
    assert.deepEqual(
      issues([{ name: 'example.org', aliases: { self: 'Alice@Example.org', list: ['x', 'sales@brand2.example'], fwd: 'out@brand2.example', fine: 'info@brand2.example', mbox: 'alice@brand2.example' } }, brand2]),
      [
        'domains.0.aliases.self: name the mailbox (Alice), not an address of this domain',
        'domains.0.aliases.list.1: sales@brand2.example is an alias of this server that lists or forwards again: name its mailboxes or addresses here',
        'domains.0.aliases.fwd: out@brand2.example is an alias of this server that lists or forwards again: name its mailboxes or addresses here',
      ],
    );
  });
});

describe('expandAliases', () => {
  const domains = [
    domain({ mailboxes: ['alice', 'bob', 'carol'], aliases: { team: ['alice', 'bob'], root: 'carol', solo: ['carol'] } }),
    DomainSchema.parse({ name: 'fwd.example', delivery: 'forward', forwardTo: { host: 'mail.internal.test' } }),
  ];
  const pending = (address: string, extra: Partial<RecipientState> = {}): RecipientState => ({ address, status: 'pending', ...extra });

  test('is needed only while a maildir domain has a list of two or more, or a forward', () => {
    assert.equal(hasExpandingAliases(domains), true);
    assert.equal(hasExpandingAliases([domain({ aliases: { root: 'alice', solo: ['carol'] } })]), false);
    assert.equal(hasExpandingAliases([domain({ aliases: { abuse: 'ops@example.net' } })]), true);
    assert.equal(hasExpandingAliases([domain({ aliases: { solo: ['ops@example.net'] } })]), true);
  });

  test('a forward becomes a recipient elsewhere, beside the members of a list, each naming the alias as ORCPT', () => {
    const withForwards = [domain({ mailboxes: ['alice'], aliases: { abuse: 'Ops@Example.NET', team: ['alice', 'lead@partner.example'] } })];
    const out = expandAliases(withForwards, [pending('abuse@example.org'), pending('team@example.org', { notify: ['FAILURE'] })]);
    assert.deepEqual(out, [
      pending('Ops@example.net', { orcpt: 'rfc822;abuse@example.org' }),
      pending('alice@example.org', { notify: ['FAILURE'], orcpt: 'rfc822;team@example.org' }),
      pending('lead@partner.example', { notify: ['FAILURE'], orcpt: 'rfc822;team@example.org' }),
    ]);
    // applying it again (before a later attempt) changes nothing
    assert.deepEqual(expandAliases(withForwards, out), out);
  });

  test('a list becomes one recipient per member, which keeps NOTIFY and names the list as ORCPT', () => {
    const out = expandAliases(domains, [pending('Team+x@Example.ORG', { notify: ['SUCCESS', 'FAILURE'] })]);
    assert.deepEqual(out, [
      pending('alice@example.org', { notify: ['SUCCESS', 'FAILURE'], orcpt: 'rfc822;Team+x@Example.ORG' }),
      pending('bob@example.org', { notify: ['SUCCESS', 'FAILURE'], orcpt: 'rfc822;Team+x@Example.ORG' }),
    ]);
  });

  test('a list given with a non-ASCII domain (an IDN as the client wrote it) is named as a utf-8 ORCPT', () => {
    const idn = [domain({ aliases: { team: ['alice', 'bob'] } })].map((d) => ({ ...d, name: 'xn--bcher-kva.example' }));
    const out = expandAliases(idn, [pending('team@bücher.example')]);
    assert.deepEqual(out.map((r) => [r.address, r.orcpt]), [
      ['alice@xn--bcher-kva.example', 'utf-8;team@bücher.example'],
      ['bob@xn--bcher-kva.example', 'utf-8;team@bücher.example'],
    ]);
  });

  test("a recipient's own ORCPT is kept for its members", () => {
    const [first] = expandAliases(domains, [pending('team@example.org', { orcpt: 'rfc822;team@old.example' })]);
    assert.equal(first!.orcpt, 'rfc822;team@old.example');
  });

  test('other recipients pass unchanged, in order, and no address is listed twice', () => {
    const given = [pending('root@example.org'), pending('solo@example.org'), pending('alice@example.org'), pending('team@example.org'), pending('x@fwd.example'), pending('someone@elsewhere.test'), pending('nobody@example.org')];
    const out = expandAliases(domains, given);
    assert.deepEqual(
      out.map((r) => r.address),
      ['root@example.org', 'solo@example.org', 'alice@example.org', 'bob@example.org', 'x@fwd.example', 'someone@elsewhere.test', 'nobody@example.org'],
    );
    assert.equal(out[2], given[2], 'alice given herself keeps her own state');
  });

  test('a recipient that is no longer pending is left as it is', () => {
    const done = pending('team@example.org', { status: 'delivered' });
    assert.deepEqual(expandAliases(domains, [done]), [done]);
  });
});

describe('assertSafePathComponent', () => {
  test('throws for names that are not a single ordinary path component', () => {
    for (const name of ['', '.', '..', 'a/b', '/', 'a\0b', 'a\\b']) {
      assert.throws(() => assertSafePathComponent(name, 'mailbox'), /unsafe mailbox/, JSON.stringify(name));
    }
  });

  test('accepts ordinary names, including ones with inner dots', () => {
    assert.doesNotThrow(() => assertSafePathComponent('john.doe', 'mailbox'));
    assert.doesNotThrow(() => assertSafePathComponent('...x', 'mailbox'));
  });
});

describe('isRoleMailbox', () => {
  test('postmaster and abuse, in any case and with any +detail, are role mailboxes; others are not', () => {
    for (const address of ['postmaster@example.org', 'Abuse+x@example.org', 'POSTMASTER', 'abuse@sub.example.org']) assert.equal(isRoleMailbox(address), true, address);
    for (const address of ['alice@example.org', 'postmasters@example.org', 'x-abuse@example.org', 'postmaster.x@example.org']) assert.equal(isRoleMailbox(address), false, address);
  });
});
