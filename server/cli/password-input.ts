/**
 * Reading a new password for `ownrelay users add|passwd`: from standard input
 * when it is not a terminal (scripts: `printf '%s\n' "$PW" | ownrelay users add ...`),
 * else from a prompt that does not echo, asked twice. Never from the command line,
 * where other users could read it in the process list.
 */
import { createInterface } from 'node:readline';

const MIN_PASSWORD_CHARS = 12;

export async function readNewPassword(): Promise<string> {
  const password = process.stdin.isTTY ? await promptTwice() : await firstLineOfStdin();
  if (password.length < MIN_PASSWORD_CHARS) throw new Error(`the password must have at least ${MIN_PASSWORD_CHARS} characters`);
  return password;
}

async function firstLineOfStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  const line = text.split(/\r?\n/)[0] ?? '';
  if (!line) throw new Error('no password on standard input');
  return line;
}

async function promptTwice(): Promise<string> {
  const first = await promptHidden('New password: ');
  const second = await promptHidden('Repeat it: ');
  if (first !== second) throw new Error('the two passwords differ');
  return first;
}

function promptHidden(question: string): Promise<string> {
  return new Promise((resolve) => {
    const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
    const output = rl as unknown as { _writeToOutput: (text: string) => void };
    process.stderr.write(question);
    output._writeToOutput = () => undefined;
    rl.question('', (answer) => {
      rl.close();
      process.stderr.write('\n');
      resolve(answer);
    });
  });
}
