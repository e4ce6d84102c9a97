/**
 * The Pulumi program as a function: reads and validates the stack config, builds
 * the customer's mail server, and returns the stack outputs. `index.ts` exports
 * what it returns; tests call it once per scenario under Pulumi's mocks.
 *
 * A bad stack config throws `StackConfigError` here, before any resource exists,
 * so `pulumi preview` fails with every problem listed as `ownrelay:<key>: ...`.
 */
import * as pulumi from '@pulumi/pulumi';
import { CustomerMailServer } from './components/customer';
import type { DnsRecord } from './render/dns-records';
import { readStackSettings } from './stack-config';

export interface StackOutputs {
  hostnames: string[];
  publicIps: pulumi.Output<string[]>;
  ipv6Addresses: pulumi.Output<(string | undefined)[]>;
  dnsRecords: pulumi.Output<DnsRecord[]>;
  zoneSnippet: pulumi.Output<string>;
  sshCommands: pulumi.Output<string[]>;
  manualSteps: pulumi.Output<string[]>;
  mtaStsPolicy: string | undefined;
  server: CustomerMailServer;
}

export function createProgram(): StackOutputs {
  const settings = readStackSettings();
  const server = new CustomerMailServer(pulumi.getStack(), { settings });
  return {
    hostnames: server.hostnames,
    publicIps: server.publicIps,
    ipv6Addresses: server.ipv6Addresses,
    dnsRecords: server.records,
    zoneSnippet: server.zoneSnippet,
    sshCommands: server.sshCommands,
    manualSteps: server.manualSteps,
    mtaStsPolicy: server.mtaStsPolicy,
    server,
  };
}
