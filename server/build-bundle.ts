/**
 * Builds dist/ownrelay.js: the relay and its dependencies in one file that runs
 * with plain `node` and nothing beside it. This file is what is shipped to servers.
 *
 * The file starts with a `#!/usr/bin/env -S node <flags>` line, so running it as a
 * program (`./ownrelay.js run ...`, as the service does) applies RELAY_NODE_FLAGS.
 */
import { build } from 'esbuild';
import { join } from 'node:path';
import { RELAY_NODE_FLAGS } from './runtime-flags';

const root = join(__dirname, '..');

build({
  entryPoints: [join(root, 'server', 'main.ts')],
  outfile: join(root, 'dist', 'ownrelay.js'),
  bundle: true,
  platform: 'node',
  target: 'node20',
  // smaller source in memory; identifiers stay readable in stack traces
  minifyWhitespace: true,
  minifySyntax: true,
  banner: { js: `#!/usr/bin/env -S node ${RELAY_NODE_FLAGS.join(' ')}` },
  logLevel: 'warning',
}).then(
  async () => {
    const { chmod } = await import('node:fs/promises');
    await chmod(join(root, 'dist', 'ownrelay.js'), 0o755);
  },
  () => process.exit(1),
);
