/**
 * RelayDeploy: ships the relay bundle, its config and the DKIM private keys to one
 * host over SSH and runs the deploy step (infra/render/deploy-script.ts) there.
 *
 * - The host's SSH key is pinned (`hostKey`): a host that answers with another key
 *   gets nothing.
 * - The version is the content hash of the bundle; the staging directory is named
 *   after bundle, config, keys and script together, and the remote command runs
 *   again exactly when one of them changes (`triggers`).
 * - The config and the keys reach the server only through this step (never the
 *   user-data) and are secrets; the keys are staged in a 0700 directory of the
 *   admin's home and installed 0640 root:ownrelay by the deploy step.
 */
import { readFileSync } from 'node:fs';
import * as pulumi from '@pulumi/pulumi';
import * as command from '@pulumi/command';
import { dkimKeysHash, releaseVersion, remoteDeployCommands, renderDeployScript, sha256Hex, stagingDirName } from '../render/deploy-script';

export { sha256Hex };

export interface RelayDeployArgs {
  /** the host's public address */
  host: pulumi.Input<string>;
  /** an admin user with sudo (created by the user-data) */
  user: pulumi.Input<string>;
  /** that user's SSH private key */
  privateKey: pulumi.Input<string>;
  /** the host's SSH public key, as in known_hosts without the name ("ssh-ed25519 AAAA...") */
  hostPublicKey: pulumi.Input<string>;
  /** path of the built bundle (dist/ownrelay.js) on the machine running Pulumi */
  bundlePath: string;
  /** the relay config file's text */
  configYaml: pulumi.Input<string>;
  /** DKIM private keys, installed as /etc/ownrelay/dkim/<fileName>; the names are known up front (one step each) */
  dkimKeys?: { fileName: string; privateKeyPem: pulumi.Input<string> }[];
}

export class RelayDeploy extends pulumi.ComponentResource {
  /** the release that was deployed: the first 16 hex digits of the bundle's SHA-256 */
  readonly version: string;
  readonly output: pulumi.Output<string>;

  constructor(name: string, args: RelayDeployArgs, opts?: pulumi.ComponentResourceOptions) {
    super('ownrelay:infra:RelayDeploy', name, {}, opts);
    const bundle = readFileSync(args.bundlePath);
    const script = renderDeployScript();
    this.version = releaseVersion(bundle);
    const configYaml = pulumi.secret(args.configYaml);
    // the hash tells nothing about the config, and keeps paths and triggers readable in previews
    const configHash = pulumi.unsecret(pulumi.output(configYaml).apply((text) => sha256Hex(text)));
    const keys = (args.dkimKeys ?? []).map((key) => {
      if (!/^[a-z0-9][a-z0-9.-]*\.pem$/.test(key.fileName)) throw new Error(`RelayDeploy: DKIM key file name ${JSON.stringify(key.fileName)} is not a plain *.pem name`);
      return { fileName: key.fileName, pem: pulumi.secret(key.privateKeyPem) };
    });
    const keysHash = pulumi.unsecret(pulumi.all(keys.map((key) => key.pem)).apply((pems) => dkimKeysHash(keys.map((key, i) => ({ fileName: key.fileName, privateKeyPem: pems[i] ?? '' })))));
    // relative to the admin user's home directory (SFTP and commands start there), not a shared /tmp
    const staging = pulumi.all([configHash, keysHash]).apply(([hash, keyHash]) => stagingDirName(this.version, hash, keyHash, sha256Hex(script)));
    const connection: command.types.input.remote.ConnectionArgs = {
      host: args.host,
      user: args.user,
      privateKey: pulumi.secret(args.privateKey),
      hostKey: args.hostPublicKey,
    };
    const triggers = [this.version, configHash, sha256Hex(script), keysHash];
    const prepare = new command.remote.Command(
      `${name}-staging`,
      { connection, create: staging.apply((dir) => remoteDeployCommands(dir, this.version).prepare), triggers },
      { parent: this },
    );
    const copies = [
      new command.remote.CopyToRemote(
        `${name}-bundle`,
        { connection, source: new pulumi.asset.FileAsset(args.bundlePath), remotePath: pulumi.interpolate`${staging}/ownrelay.js`, triggers },
        { parent: this, dependsOn: [prepare] },
      ),
      new command.remote.CopyToRemote(
        `${name}-config`,
        { connection, source: configYaml.apply((text) => new pulumi.asset.StringAsset(text)), remotePath: pulumi.interpolate`${staging}/ownrelay.yaml`, triggers },
        { parent: this, dependsOn: [prepare] },
      ),
      new command.remote.CopyToRemote(
        `${name}-script`,
        { connection, source: new pulumi.asset.StringAsset(script), remotePath: pulumi.interpolate`${staging}/ownrelay-deploy`, triggers },
        { parent: this, dependsOn: [prepare] },
      ),
      ...keys.map((key) => new command.remote.CopyToRemote(
        `${name}-dkim-${key.fileName.replace(/\.pem$/, '')}`,
        { connection, source: key.pem.apply((pem) => new pulumi.asset.StringAsset(pem)), remotePath: pulumi.interpolate`${staging}/dkim/${key.fileName}`, triggers },
        { parent: this, dependsOn: [prepare] },
      )),
    ];
    const run = new command.remote.Command(
      `${name}-run`,
      {
        connection,
        // the script also stays on the host, for the customer's own redeploys and rollbacks
        create: staging.apply((dir) => remoteDeployCommands(dir, this.version).run),
        triggers,
      },
      { parent: this, dependsOn: copies },
    );
    this.output = run.stdout;
    this.registerOutputs({ version: this.version, output: this.output });
  }
}
