import { Command, CommanderError } from 'commander';
import { UserError, oneLine } from '../util/errors.ts';
import { commands } from './commands.ts';

/** Builds the `emosllm` program; each command lives in its own module and registers itself. */
export function buildProgram(): Command {
  const program = new Command('emosllm')
    .description('LLM-based speech emotion recognition: train, evaluate, predict, serve, export')
    .version('0.1.0')
    .exitOverride()
    .showHelpAfterError(false);
  for (const register of commands) register(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
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
