import type { Command } from 'commander';
import { registerData } from './data.ts';
import { registerDemo } from './demo.ts';
import { registerParity } from './parity.ts';

/** Every CLI command, in the order `emosllm --help` lists them. Add new commands here. */
export const commands: Array<(program: Command) => void> = [registerParity, registerData, registerDemo];
