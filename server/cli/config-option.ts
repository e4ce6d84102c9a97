/**
 * `--config` is both a global option (the administration commands) and an option
 * of `run`, `doctor` and `tls-report`; commander may parse it as either. This
 * returns the file the user gave, wherever it was parsed.
 */
import type { Command } from 'commander';

export function givenConfigPath(options: { config?: string }, command: Command): string | undefined {
  return options.config ?? command.optsWithGlobals<{ config?: string }>().config;
}
