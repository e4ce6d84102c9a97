/**
 * Entry point of the Pulumi program (`Pulumi.yaml`: `main: infra/`): one customer
 * per stack. What is exported here is what `pulumi stack output` shows.
 */
import { createProgram } from './program';

const program = createProgram();

/** The host name of every node (node 0 first); each is its IP's PTR. */
export const hostnames = program.hostnames;
/** The Elastic IP of every node, in the order of `hostnames`. */
export const publicIps = program.publicIps;
export const ipv6Addresses = program.ipv6Addresses;
/** The DNS records as data, and as BIND zone-file lines for a DNS host elsewhere. */
export const dnsRecords = program.dnsRecords;
export const zoneSnippet = program.zoneSnippet;
export const sshCommands = program.sshCommands;
/** What `pulumi up` cannot do (manual DNS, the port-25 request), with the values filled in. */
export const manualSteps = program.manualSteps;
/** The MTA-STS policy text to serve at https://mta-sts.<domain>/.well-known/mta-sts.txt. */
export const mtaStsPolicy = program.mtaStsPolicy;
