/**
 * Loading the relay config: YAML text -> validated, frozen RelayConfig.
 *
 * Contract: `loadConfigFile` and `parseConfig` either return a complete config or
 * throw a ConfigError whose message names the file, the line, the key path and
 * what was expected, one line per problem. They never return a partial config.
 */
import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument, isNode } from 'yaml';
import type { z } from 'zod';
import { DEFAULT_CONFIG_YAML } from './defaults';
import { RelayConfigSchema, type RelayConfig } from './schema';

export class ConfigError extends Error {
  constructor(
    readonly source: string,
    readonly problems: string[],
  ) {
    super(`invalid config ${source}:\n` + problems.map((p) => `  - ${p}`).join('\n'));
    this.name = 'ConfigError';
  }
}

/** Parses and validates YAML text; `source` names it in errors (a file path, or "<default>"). */
export function parseConfig(text: string, source: string): RelayConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      source,
      doc.errors.map((e) => {
        const at = lines.linePos(e.pos[0]);
        return `line ${at.line}: YAML syntax: ${e.message.split('\n')[0]}`;
      }),
    );
  }
  const result = RelayConfigSchema.safeParse(doc.toJS() ?? {});
  if (!result.success) {
    throw new ConfigError(
      source,
      result.error.issues.map((issue) => {
        const path = issue.path.map(String);
        const line = lineOf(doc, lines, path);
        return `${line ? `line ${line}: ` : ''}${path.length ? path.join('.') : '(top level)'}: ${describeIssue(issue)}`;
      }),
    );
  }
  return deepFreeze(result.data);
}

export function loadConfigFile(path: string): RelayConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(path, [`cannot read the file: ${(err as Error).message}`]);
  }
  return parseConfig(text, path);
}

export function defaultConfig(): RelayConfig {
  return parseConfig(DEFAULT_CONFIG_YAML, '<embedded default config>');
}

function describeIssue(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'invalid_type':
      return `expected ${issue.expected}${issue.message.includes('received') ? `, ${issue.message.slice(issue.message.indexOf('received'))}` : ''}`;
    case 'unrecognized_keys':
      return `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`;
    case 'invalid_value':
      return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'invalid_format':
      return `expected ${issue.message.replace(/^Invalid string: /, '')}`;
    case 'too_small':
      return `expected ${issue.origin === 'array' ? 'at least' : issue.inclusive ? 'at least' : 'more than'} ${String(issue.minimum)}${issue.origin === 'array' ? ' entries' : issue.origin === 'string' ? ' characters' : ''}`;
    case 'too_big':
      return `expected ${issue.inclusive ? 'at most' : 'less than'} ${String(issue.maximum)}${issue.origin === 'array' ? ' entries' : issue.origin === 'string' ? ' characters' : ''}`;
    case 'custom':
      return issue.message;
    default:
      return `expected ${issue.message.replace(/^Invalid input: /, '')}`;
  }
}

function lineOf(doc: ReturnType<typeof parseDocument>, lines: LineCounter, path: string[]): number | undefined {
  // walk up the path until a node exists (a missing key is reported at its parent)
  for (let depth = path.length; depth >= 0; depth--) {
    const keys = path.slice(0, depth).map((k) => (/^\d+$/.test(k) ? Number(k) : k));
    const node = depth === 0 ? doc.contents : doc.getIn(keys, true);
    if (isNode(node) && node.range) return lines.linePos(node.range[0]).line;
  }
  return undefined;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
