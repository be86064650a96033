import fs from 'node:fs';
import { Command, CommanderError } from 'commander';
import { UserError, oneLine } from '../util/errors.ts';
import { commands } from './commands.ts';

/** The package's version (package.json sits two folders up from both src/cli/ and dist/cli/). */
function packageVersion(): string {
  return JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version;
}

/** The command `args` (the arguments after the program name) run: `emosllm help NAME` asks for NAME's help. */
function commandName(args: string[]): string | undefined {
  const words = args.filter((a) => !a.startsWith('-'));
  return words[0] === 'help' ? words[1] : words[0];
}

/**
 * Builds the `emosllm` program for `argv`: every command is listed, and only the one `argv` runs has its
 * module imported and its options defined.
 */
export async function buildProgram(argv: string[]): Promise<Command> {
  const program = new Command('emosllm')
    .description('LLM-based speech emotion recognition: train, evaluate, predict, serve, export')
    .version(packageVersion())
    .exitOverride()
    .showHelpAfterError(false);
  const wanted = commandName(argv.slice(2));
  for (const c of commands) {
    const cmd = program.command(c.name).description(c.description);
    if (c.name === wanted) (await c.define())(cmd);
  }
  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    const program = await buildProgram(argv);
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander already printed its message (or help/version): keep its exit code.
      process.exitCode = err.exitCode;
      return;
    }
    if (process.env.EMOSLLM_DEBUG) console.error(err);
    const prefix = err instanceof UserError ? 'error' : 'internal error';
    console.error(`emosllm: ${prefix}: ${oneLine(err)}`);
    process.exitCode = 1;
  }
}
