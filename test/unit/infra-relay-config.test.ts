/**
 * The relay config the infra ships: public mail ports, the customer's domains in
 * Maildirs, the spool on its own volume, stack overrides merged on top, and the
 * whole text validated by the relay's own loader before it leaves the machine.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, parseConfig } from '../../server/config/load';
import { deepMerge, dkimKeyFileName, dkimKeyPath, renderRelayConfig } from '../../infra/render/relay-config';
import { HOST_PACKAGES } from '../../infra/render/user-data';

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

test('the relay resolves through the host\'s own unbound first, then AWS\'s resolver; the stack may choose others', () => {
  assert.deepEqual([...renderRelayConfig(base).config.dns.servers], ['127.0.0.1', '169.254.169.253']);
  assert.ok(HOST_PACKAGES.includes('unbound'), 'the host runs the resolver the config names');
  assert.deepEqual([...renderRelayConfig({ ...base, relay: { dns: { servers: ['10.0.0.2'] } } }).config.dns.servers], ['10.0.0.2']);
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

test('the deployed config signs with one DKIM key per domain, in the files the deploy installs; the first-boot config names none', () => {
  const { config } = renderRelayConfig(base);
  assert.deepEqual(config.dkim.keys.map((k) => ({ ...k })), [
    { domain: 'acme.org', selector: 'ownrelay1', privateKeyFile: '/etc/ownrelay/dkim/acme.org.ownrelay1.pem' },
    { domain: 'acme-shop.net', selector: 'ownrelay1', privateKeyFile: '/etc/ownrelay/dkim/acme-shop.net.ownrelay1.pem' },
  ]);
  assert.equal(dkimKeyPath('acme.org', 'ownrelay1'), config.dkim.keys[0]?.privateKeyFile);
  const { dkimSelector: _omitted, ...firstBoot } = base;
  const rendered = renderRelayConfig(firstBoot);
  assert.deepEqual(rendered.config.dkim.keys, []);
  assert.doesNotMatch(rendered.yaml, /dkim|privateKeyFile/);
  assert.throws(() => dkimKeyFileName('acme.org', '../x'), /not a safe file name/);
});

test('HTTP-01 certificates and the MTA-STS policy are rendered only when asked for, with the published values', () => {
  assert.doesNotMatch(renderRelayConfig(base).yaml, /^tls:/m);
  const { config } = renderRelayConfig({
    ...base,
    acme: { email: 'hostmaster@acme.org', directoryUrl: 'https://acme-staging-v02.api.letsencrypt.org/directory' },
    mtaStsPolicy: { mode: 'enforce', maxAgeSeconds: 86400, mx: ['mail.acme.org', 'mail2.acme.org'] },
  });
  assert.equal(config.tls.acme?.email, 'hostmaster@acme.org');
  assert.equal(config.tls.acme?.challenge, 'http-01');
  assert.equal(config.tls.acme?.directoryUrl, 'https://acme-staging-v02.api.letsencrypt.org/directory');
  assert.deepEqual({ ...config.tls.mtaStsPolicy }, { address: '0.0.0.0', port: 443, mode: 'enforce', maxAgeSeconds: 86400, mx: ['mail.acme.org', 'mail2.acme.org'] });
  // the default CA is Let's Encrypt production
  assert.equal(renderRelayConfig({ ...base, acme: { email: 'hostmaster@acme.org' } }).config.tls.acme?.directoryUrl, 'https://acme-v02.api.letsencrypt.org/directory');
  // the relay's schema judges the result: acme and a certificate file exclude each other
  assert.throws(
    () => renderRelayConfig({ ...base, acme: { email: 'hostmaster@acme.org' }, relay: { tls: { certFile: '/etc/c.pem', keyFile: '/etc/k.pem' } } }),
    (err: unknown) => err instanceof ConfigError && /acme and certFile\/keyFile exclude each other/.test(err.problems.join('\n')),
  );
});
