/**
 * Builds dist/ownrelay.js: the relay and its dependencies in one file that runs
 * with plain `node` and nothing beside it. This file is what is shipped to servers.
 *
 * The file starts with a `#!/usr/bin/env -S <environment> node <flags>` line, so
 * running it as a program (`./ownrelay.js run ...`, as the service does) applies
 * the production runtime settings of server/runtime-flags.ts.
 */
import { build } from 'esbuild';
import { chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { bundleShebang } from './runtime-flags';

const root = join(__dirname, '..');

async function main(): Promise<void> {
  await build({
    entryPoints: [join(root, 'server', 'main.ts')],
    outfile: join(root, 'dist', 'ownrelay.js'),
    bundle: true,
    platform: 'node',
    target: 'node20',
    // smaller source in memory; identifiers stay readable in stack traces
    minifyWhitespace: true,
    minifySyntax: true,
    banner: { js: bundleShebang() },
    logLevel: 'warning',
  });
  await chmod(join(root, 'dist', 'ownrelay.js'), 0o755);
}

main().catch(() => process.exit(1));
