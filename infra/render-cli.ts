/**
 * Prints what a stack would put in DNS and on the server, without an AWS account:
 *
 *   npx tsx infra/render-cli.ts --config Pulumi.<stack>.yaml [--ip 203.0.113.7[,2001:db8::7]]... [--dkim-public-key key.pem]
 *
 * It uses the same functions as the Pulumi program: the stack file's `ownrelay:*`
 * keys go through `parseStackSettings` (strict about placeholders unless the
 * stack's name starts with test or dev), then the records are printed as a zone
 * snippet, followed by the relay config. One `--ip` per node; nodes without one
 * get documentation addresses (192.0.2.10, 192.0.2.11, ...). Without
 * `--dkim-public-key` a throwaway key stands in for the one Pulumi generates, and
 * the output says so. Secret (`secure:`) values cannot be decrypted here and are
 * shown as `<secret>`.
 */
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { parseArgs } from 'node:util';
import { parse } from 'yaml';
import { renderDnsRecords, nodeHostnames, renderZoneSnippet, renderMtaStsPolicy, type MailNode } from './render/dns-records';
import { RELAY_CONFIG_PATH, renderRelayConfig } from './render/relay-config';
import { StackConfigError, dnsIdentity, isRealDeployStack, relayConfigInput, parseStackSettings, rawSettingsFromStackFile } from './stack-config';

function main(argv: string[]): number {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string' },
      ip: { type: 'string', multiple: true },
      'dkim-public-key': { type: 'string' },
    },
  });
  if (values.config === undefined) {
    process.stderr.write('usage: render-cli --config Pulumi.<stack>.yaml [--ip ipv4[,ipv6]]... [--dkim-public-key file.pem]\n');
    return 2;
  }
  const file = parse(readFileSync(values.config, 'utf8')) as { config?: Record<string, unknown> } | null;
  const raw = rawSettingsFromStackFile(hideSecrets(file?.config ?? {}) as Record<string, unknown>);
  const stackName = basename(values.config).replace(/^Pulumi\./, '').replace(/\.ya?ml$/, '');
  let settings;
  try {
    settings = parseStackSettings(raw, { realDeploy: isRealDeployStack(stackName) });
  } catch (err) {
    if (!(err instanceof StackConfigError)) throw err;
    process.stderr.write(`${values.config}: ${err.message}\n`);
    return 1;
  }

  const notes: string[] = [];
  const ips = values.ip ?? [];
  const nodes: MailNode[] = nodeHostnames(settings.hostname, settings.nodes).map((hostname, i) => {
    const given = ips[i];
    if (given === undefined) {
      notes.push(`${hostname}: placeholder address 192.0.2.${10 + i}; the real one is a stack output after \`pulumi up\``);
      return { hostname, ipv4: `192.0.2.${10 + i}` };
    }
    const [ipv4 = '', ipv6] = given.split(',');
    return ipv6 === undefined ? { hostname, ipv4 } : { hostname, ipv4, ipv6 };
  });
  let publicKeyPem: string;
  if (values['dkim-public-key'] !== undefined) {
    publicKeyPem = readFileSync(values['dkim-public-key'], 'utf8');
  } else {
    publicKeyPem = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    notes.push('the DKIM key is a throwaway placeholder; the real one is the stack output of the key Pulumi generates');
  }

  const records = renderDnsRecords(dnsIdentity(settings, nodes, publicKeyPem));
  const policy = settings.mtaStsPublished ? renderMtaStsPolicy({ ...settings.mtaSts, mxHosts: nodes.map((n) => n.hostname) }) : undefined;

  const out: string[] = [];
  out.push(`; DNS records of stack ${stackName}`);
  for (const note of notes) out.push(`; NOTE: ${note}`);
  out.push(renderZoneSnippet(records));
  if (policy === undefined) {
    out.push('# MTA-STS is not published: it needs a certificate from an ACME CA (ownrelay:http01 with ownrelay:acmeEmail, or a relay.tls.acme override)', '');
  } else {
    out.push(`# MTA-STS policy, served at https://mta-sts.<domain>/.well-known/mta-sts.txt (id ${policy.id}):`);
    out.push(policy.text.trimEnd().replace(/\r\n/g, '\n').replace(/^/gm, '#   '), '');
  }
  // node 0's config; with its addresses when they were given, as `pulumi up` deploys it
  const first = nodes[0]!;
  const firstAddresses = ips[0] === undefined ? [] : [first.ipv4, ...(first.ipv6 ? [first.ipv6] : [])];
  out.push(`# ---- ${RELAY_CONFIG_PATH} (${first.hostname}) ----`);
  out.push(firstAddresses.length > 0 ? renderRelayConfig(relayConfigInput(settings, first.hostname, 'deployed', firstAddresses)).yaml : settings.relayYaml);
  process.stdout.write(out.join('\n'));
  return 0;
}

/** Replaces Pulumi's encrypted `{ secure: ... }` values, which only the Pulumi CLI can decrypt. */
function hideSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(hideSecrets);
  if (typeof value === 'object' && value !== null) {
    const entries = Object.entries(value);
    if (entries.length === 1 && entries[0]?.[0] === 'secure') return '<secret>';
    return Object.fromEntries(entries.map(([k, v]) => [k, hideSecrets(v)]));
  }
  return value;
}

if (require.main === module) process.exitCode = main(process.argv.slice(2));
