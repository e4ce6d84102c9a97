/**
 * Runs the `ownrelay` command as a child process from the TypeScript sources, the
 * way an administrator runs it on the server, and collects its exit code and output.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { PROJECT_ROOT } from './relay-process';

const TSX_LOADER = pathToFileURL(require.resolve('tsx', { paths: [PROJECT_ROOT] })).href;

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `ownrelay ARGS`; `cwd` is its working directory (default: the project root), where relative config paths resolve. */
export function runCli(args: string[], options: { input?: string; timeoutMs?: number; cwd?: string; closeStdoutAfterBytes?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', TSX_LOADER, join(PROJECT_ROOT, 'server', 'main.ts'), ...args], { cwd: options.cwd ?? PROJECT_ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      // a reader that stops early, as `| head` does
      if (options.closeStdoutAfterBytes !== undefined && stdout.length >= options.closeStdoutAfterBytes) child.stdout.destroy();
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`ownrelay ${args.join(' ')} did not finish within ${options.timeoutMs ?? 60_000} ms; stdout: ${stdout}; stderr: ${stderr}`));
    }, options.timeoutMs ?? 60_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(options.input ?? '');
  });
}

/** Runs the command and parses its --json output; fails with the output when it exits non-zero. */
export async function runCliJson<T>(args: string[]): Promise<T> {
  const result = await runCli([...args, '--json']);
  if (result.code !== 0) throw new Error(`ownrelay ${args.join(' ')} exited ${String(result.code)}: ${result.stderr}${result.stdout}`);
  return JSON.parse(result.stdout) as T;
}
