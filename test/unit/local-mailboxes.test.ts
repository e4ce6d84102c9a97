import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DomainSchema, type DomainConfig } from '../../server/config/schema';
import { assertSafePathComponent, isRoleMailbox, resolveLocalMailbox } from '../../server/delivery/local-mailboxes';

function domain(extra: Partial<Record<'mailboxes' | 'aliases', unknown>> = {}): DomainConfig {
  return DomainSchema.parse({ name: 'example.org', delivery: 'maildir', ...extra });
}

function mailboxOf(d: DomainConfig, localPart: string): string | undefined {
  const r = resolveLocalMailbox(d, localPart);
  return 'mailbox' in r ? r.mailbox : undefined;
}

describe('resolveLocalMailbox', () => {
  test('local parts compare case-insensitively and the mailbox name is lower-case', () => {
    const d = domain({ mailboxes: ['alice'] });
    assert.deepEqual(resolveLocalMailbox(d, 'ALICE'), { mailbox: 'alice' });
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
    const d = domain({ mailboxes: ['alice', 'bob'], aliases: { Root: 'Alice', sales: 'bob', info: 'sales' } });
    assert.equal(mailboxOf(d, 'root'), 'alice');
    assert.equal(mailboxOf(d, 'ROOT+cron'), 'alice');
    assert.equal(mailboxOf(d, 'sales'), 'bob');
    // info -> sales is not followed on to bob, and sales is no mailbox
    assert.ok('reason' in resolveLocalMailbox(d, 'info'));
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

  test('an alias whose target is not a plain mailbox name is refused', () => {
    const d = domain({ aliases: { evil: '../../etc', other: 'bob@elsewhere.test', dot: '..' } });
    for (const lp of ['evil', 'other', 'dot']) assert.ok('reason' in resolveLocalMailbox(d, lp), lp);
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
