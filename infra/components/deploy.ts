/**
 * RelayDeploy: ships the relay bundle and its config to one host over SSH and runs
 * the deploy step (infra/render/deploy-script.ts) there.
 *
 * - The host's SSH key is pinned (`hostKey`): a host that answers with another key
 *   gets nothing.
 * - The version is the content hash of the bundle; the staging directory is named
 *   after bundle, config and script together, and the remote command runs again
 *   exactly when one of them changes (`triggers`).
 * - The config reaches the server only through this step and is treated as a secret.
 */
import { readFileSync } from 'node:fs';
import * as pulumi from '@pulumi/pulumi';
import * as command from '@pulumi/command';
import { releaseVersion, remoteDeployCommands, renderDeployScript, sha256Hex, stagingDirName } from '../render/deploy-script';

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
    // relative to the admin user's home directory (SFTP and commands start there), not a shared /tmp
    const staging = configHash.apply((hash) => stagingDirName(this.version, hash, sha256Hex(script)));
    const connection: command.types.input.remote.ConnectionArgs = {
      host: args.host,
      user: args.user,
      privateKey: pulumi.secret(args.privateKey),
      hostKey: args.hostPublicKey,
    };
    const triggers = [this.version, configHash, sha256Hex(script)];
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
