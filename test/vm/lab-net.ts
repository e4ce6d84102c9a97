/**
 * The test's own network: a network namespace holding qemu, joined to the host by
 * one veth pair. The host side (HOST_ADDRESS) carries the services the guest may
 * use (the DNS server, the destination Postfix); the namespace side (NS_ADDRESS) is
 * where qemu's user networking sends the guest's connections from, and where its
 * port forwards listen. The namespace has no other interface and no default route,
 * so the guest can reach the host's veth address and nothing else.
 *
 * qemu's `restrict=on` would drop the guest's UDP (DNS) entirely, and `guestfwd`
 * carries only TCP; the namespace gives the same isolation with real DNS over UDP.
 *
 * `ip netns exec` bind-mounts /etc/netns/<name>/resolv.conf over /etc/resolv.conf:
 * programs run there (qemu's DNS proxy, spfquery) ask the test's DNS server.
 * Needs root and iproute2.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';

export const HOST_ADDRESS = '10.213.0.1';
export const NS_ADDRESS = '10.213.0.2';
const PREFIX = 30;

export interface LabNet {
  readonly name: string;
  /** the command line that runs `file args` inside the namespace */
  exec(file: string, args: string[]): { file: string; args: string[] };
  destroy(): void;
}

function ip(args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

export function createLabNet(): LabNet {
  const tag = `orv${process.pid % 100000}`;
  const name = `ownrelay-${tag}`;
  const hostIf = `${tag}h`;
  const nsIf = `${tag}n`;
  destroyLabNet(name, hostIf);
  ip(['netns', 'add', name]);
  try {
    ip(['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf, 'netns', name]);
    ip(['addr', 'add', `${HOST_ADDRESS}/${PREFIX}`, 'dev', hostIf]);
    ip(['link', 'set', hostIf, 'up']);
    ip(['netns', 'exec', name, 'ip', 'addr', 'add', `${NS_ADDRESS}/${PREFIX}`, 'dev', nsIf]);
    ip(['netns', 'exec', name, 'ip', 'link', 'set', nsIf, 'up']);
    ip(['netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up']);
    mkdirSync(`/etc/netns/${name}`, { recursive: true });
    writeFileSync(`/etc/netns/${name}/resolv.conf`, `nameserver ${HOST_ADDRESS}\n`);
  } catch (err) {
    destroyLabNet(name, hostIf);
    throw err;
  }
  return {
    name,
    exec: (file, args) => ({ file: 'ip', args: ['netns', 'exec', name, file, ...args] }),
    destroy: () => destroyLabNet(name, hostIf),
  };
}

function destroyLabNet(name: string, hostIf: string): void {
  for (const args of [['link', 'del', hostIf], ['netns', 'del', name]]) {
    try {
      ip(args);
    } catch {
      // not there
    }
  }
  rmSync(`/etc/netns/${name}`, { recursive: true, force: true });
}
