import type { Command } from 'commander';
import { registerDemo } from './demo.ts';

/** Every CLI command, in the order `emosllm --help` lists them. Add new commands here. */
export const commands: Array<(program: Command) => void> = [registerDemo];
