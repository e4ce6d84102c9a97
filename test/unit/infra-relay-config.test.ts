/**
 * The relay config the infra ships: public mail ports, the customer's domains in
 * Maildirs, the spool on its own volume, stack overrides merged on top, and the
 * whole text validated by the relay's own loader before it leaves the machine.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, parseConfig } from '../../server/config/load';
import { deepMerge, renderRelayConfig } from '../../infra/render/relay-config';

const base = { hostname: 'mail.acme.org', domains: ['acme.org', 'acme-shop.net'], dkimSelector: 'ownrelay1', relay: {} };

test('the relay listens on 25 for MX and on 587 (STARTTLS) and 465 (implicit TLS) for submission', () => {
  const { config } = renderRelayConfig(base);
  assert.deepEqual(
    config.listeners.map((l) => [l.role, l.address, l.port, l.tls]),
    [
      ['mx', '0.0.0.0', 25, 'starttls'],
      ['submission', '0.0.0.0', 587, 'starttls'],
      ['submission', '0.0.0.0', 465, 'implicit'],
    ],
  );
  assert.deepEqual(renderRelayConfig({ ...base, listenIpv6: true }).config.listeners.map((l) => l.address), ['::', '::', '::']);
});

test('every stack domain is delivered to Maildirs with postmaster and abuse, and the host name is the stack\'s', () => {
  const { config } = renderRelayConfig(base);
  assert.equal(config.hostname, 'mail.acme.org');
  assert.deepEqual(
    config.domains.map((d) => [d.name, d.delivery, d.mailboxes]),
    [
      ['acme.org', 'maildir', ['postmaster', 'abuse']],
      ['acme-shop.net', 'maildir', ['postmaster', 'abuse']],
    ],
  );
});

test('the spool lives on the spool volume and the rest under /var/lib/ownrelay', () => {
  const { config } = renderRelayConfig(base);
  assert.deepEqual({ ...config.paths }, { spool: '/var/spool/ownrelay', mail: '/var/lib/ownrelay/mail', state: '/var/lib/ownrelay/state' });
});

test('stack overrides merge into objects and replace arrays', () => {
  const { config } = renderRelayConfig({
    ...base,
    relay: {
      limits: { maxRecipients: 50 },
      domains: [{ name: 'acme.org', mailboxes: ['alice'] }],
      delivery: { smarthost: { host: 'smtp.provider.net', port: 587, tls: 'required' } },
    },
  });
  assert.equal(config.limits.maxRecipients, 50);
  assert.equal(config.limits.maxMessageBytes, 25 * 1024 * 1024, 'untouched siblings keep their defaults');
  assert.deepEqual(config.domains.map((d) => [d.name, d.mailboxes]), [['acme.org', ['alice']]]);
  assert.equal(config.delivery.smarthost?.host, 'smtp.provider.net');
  assert.equal(config.paths.spool, '/var/spool/ownrelay', 'the base paths survive an override elsewhere');
});

test('merging never modifies its inputs', () => {
  const left = { a: { b: 1, c: [1, 2] } };
  const right = { a: { c: [3] } };
  assert.deepEqual(deepMerge(left, right), { a: { b: 1, c: [3] } });
  assert.deepEqual(left, { a: { b: 1, c: [1, 2] } });
});

test("a bad relay setting fails with the relay's own message", () => {
  const direct = (() => {
    try {
      parseConfig('listeners:\n  - role: mx\n    port: 25\nlimits:\n  bareLineEndings: sometimes\n', 'direct');
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      return err.problems[0]?.replace(/^line \d+: /, '');
    }
    assert.fail('the relay accepted the setting');
  })();
  assert.throws(
    () => renderRelayConfig({ ...base, relay: { limits: { bareLineEndings: 'sometimes' } } }),
    (err: unknown) => err instanceof ConfigError && err.problems.length === 1 && err.problems[0]?.replace(/^line \d+: /, '') === direct,
  );
  assert.equal(direct, 'limits.bareLineEndings: expected one of "reject", "normalize"');
});

test('the shipped text is exactly what was validated and says how to change it', () => {
  const { yaml, config } = renderRelayConfig({ ...base, relay: { log: { level: 'warn' } } });
  assert.match(yaml, /^# .*rendered by the infra program/);
  assert.match(yaml, /ownrelay:relay/);
  assert.deepEqual(parseConfig(yaml, 'again'), config);
  assert.equal(config.log.level, 'warn');
});
