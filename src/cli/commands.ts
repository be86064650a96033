import type { Command } from 'commander';
import { registerData } from './data.ts';
import { registerDemo } from './demo.ts';
import { registerParity } from './parity.ts';
import { registerTrain } from './train.ts';
import { registerCv, registerEval } from './eval.ts';
import { registerPredict } from './predict.ts';
import { registerExport } from './export.ts';
import { registerServe } from './serve.ts';

/** Every CLI command, in the order `emosllm --help` lists them. Add new commands here. */
export const commands: Array<(program: Command) => void> = [registerTrain, registerEval, registerCv, registerPredict, registerServe, registerExport, registerParity, registerData, registerDemo];
