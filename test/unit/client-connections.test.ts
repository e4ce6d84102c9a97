import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClientConnections } from '../../server/listener/client-connections';

test('an address is admitted up to the limit, and again once a connection is released', () => {
  const clients = new ClientConnections();
  assert.equal(clients.admit('a', '192.0.2.1', 2), true);
  assert.equal(clients.admit('b', '192.0.2.1', 2), true);
  assert.equal(clients.admit('c', '192.0.2.1', 2), false);
  assert.equal(clients.count('192.0.2.1'), 2, 'a refused session is not counted');
  assert.equal(clients.admit('d', '192.0.2.2', 2), true, 'each address has its own count');
  clients.release('c'); // never counted: changes nothing
  assert.equal(clients.count('192.0.2.1'), 2);
  clients.release('a');
  clients.release('a'); // twice: counted once
  assert.equal(clients.count('192.0.2.1'), 1);
  assert.equal(clients.admit('e', '192.0.2.1', 2), true);
});

test('an IPv4 address seen through an IPv6 socket counts as the same client, IPv6 case does not matter', () => {
  const clients = new ClientConnections();
  assert.equal(clients.admit('a', '::ffff:192.0.2.1', 1), true);
  assert.equal(clients.admit('b', '192.0.2.1', 1), false);
  assert.equal(clients.admit('c', '2001:DB8::1', 1), true);
  assert.equal(clients.admit('d', '2001:db8::1', 1), false);
  clients.release('a');
  clients.release('c');
  assert.equal(clients.count('192.0.2.1'), 0);
  assert.equal(clients.count('2001:db8::1'), 0);
});
