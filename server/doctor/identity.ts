/**
 * The server's public addresses when none are given: the global unicast
 * addresses on this host's interfaces. Behind 1:1 NAT (an AWS Elastic IP) the
 * public address is not on any interface; callers then get none and must pass it.
 */
import { networkInterfaces } from 'node:os';
import ipaddr from 'ipaddr.js';

export function publicInterfaceAddresses(): string[] {
  const found: string[] = [];
  for (const addresses of Object.values(networkInterfaces())) {
    for (const address of addresses ?? []) {
      if (address.internal) continue;
      try {
        if (ipaddr.process(address.address).range() === 'unicast') found.push(address.address);
      } catch {
        // not an address ipaddr.js understands (a scoped link-local, say): not public anyway
      }
    }
  }
  return [...new Set(found)];
}
