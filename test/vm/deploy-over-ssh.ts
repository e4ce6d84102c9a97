/**
 * The deploy Pulumi runs (infra/components/deploy.ts), run over OpenSSH instead
 * of Pulumi's command provider: the same rendered script, release version,
 * staging directory name and remote commands (infra/render/deploy-script.ts),
 * the files (bundle, config, DKIM keys, script) copied over SFTP into the staging
 * directory, the host key pinned by the VM's ssh options.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dkimKeysHash, releaseVersion, remoteDeployCommands, renderDeployScript, sha256Hex, stagingDirName } from '../../infra/render/deploy-script';
import type { CommandResult } from '../helpers/postfix';
import type { QemuVm } from './qemu-vm';

export interface DeployResult extends CommandResult {
  version: string;
}

export interface DkimKeyFile {
  fileName: string;
  privateKeyPem: string;
}

export async function deployOverSsh(vm: QemuVm, bundlePath: string, configYaml: string, scratchDir: string, dkimKeys: readonly DkimKeyFile[] = []): Promise<DeployResult> {
  const bundle = readFileSync(bundlePath);
  const script = renderDeployScript();
  const version = releaseVersion(bundle);
  const staging = stagingDirName(version, sha256Hex(configYaml), dkimKeysHash(dkimKeys), sha256Hex(script));
  const commands = remoteDeployCommands(staging, version);
  const local = mkdtempSync(join(scratchDir, 'deploy-'));
  try {
    writeFileSync(join(local, 'ownrelay.js'), bundle, { mode: 0o755 });
    writeFileSync(join(local, 'ownrelay.yaml'), configYaml, { mode: 0o600 });
    writeFileSync(join(local, 'ownrelay-deploy'), script, { mode: 0o600 });
    await vm.sshOk(commands.prepare);
    await vm.copyTo(['ownrelay.js', 'ownrelay.yaml', 'ownrelay-deploy'].map((name) => join(local, name)), staging);
    if (dkimKeys.length > 0) {
      for (const key of dkimKeys) writeFileSync(join(local, key.fileName), key.privateKeyPem, { mode: 0o600 });
      await vm.copyTo(dkimKeys.map((key) => join(local, key.fileName)), `${staging}/dkim`);
    }
    const result = await vm.ssh(commands.run, { timeoutMs: 300_000 });
    return { ...result, version };
  } finally {
    rmSync(local, { recursive: true, force: true });
  }
}
