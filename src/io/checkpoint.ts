/**
 * A Hugging Face checkpoint in whichever format it ships: safetensors (single or sharded) or torch `.bin`
 * (single, sharded, or a PEFT `adapter_model.bin`). Safetensors wins when a folder has both, as in
 * transformers. Both readers give the same view: names, per-tensor dtype/shape and, when the bytes can be read
 * in place, their file and offset.
 */
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../util/errors.ts';
import { type SafeTypedArray, SafetensorsCheckpoint } from './safetensors.ts';
import { TORCH_INDEX_FILE, TorchCheckpoint, type TorchTensorInfo } from './torch.ts';

/** A stored tensor; `file`/`offset` are present when its bytes sit row-major in the file (always for safetensors). */
export type CheckpointTensorInfo = TorchTensorInfo;

export interface TensorCheckpoint {
  readonly source: string;
  files(): string[];
  names(): string[];
  has(name: string): boolean;
  info(name: string): CheckpointTensorInfo;
  infos(): CheckpointTensorInfo[];
  read(name: string): SafeTypedArray;
  readF32(name: string): Float32Array;
  readF64(name: string): Float64Array;
  readI64(name: string): BigInt64Array;
  close(): void;
}

const SAFETENSORS_FILES = ['model.safetensors', 'model.safetensors.index.json', 'adapter_model.safetensors'];
const TORCH_FILES = ['pytorch_model.bin', TORCH_INDEX_FILE, 'adapter_model.bin'];

let convertHintShown = false;

/** Tells once per process that a `.bin` checkpoint loads faster after `emosllm convert`. */
function convertHint(source: string): void {
  if (convertHintShown) return;
  convertHintShown = true;
  process.stderr.write(`note: ${source} is a torch .bin checkpoint; \`emosllm convert DIR --out DIR\` writes safetensors, which load in place and faster\n`);
}

/** True when the folder holds a checkpoint in a format we read. */
export function hasCheckpoint(dir: string): boolean {
  return [...SAFETENSORS_FILES, ...TORCH_FILES].some((f) => fs.existsSync(path.join(dir, f)));
}

/** Opens a checkpoint file (.safetensors, .bin, or either index) or a folder holding one. */
export function openCheckpoint(pathOrDir: string): TensorCheckpoint {
  let st: fs.Stats;
  try {
    st = fs.statSync(pathOrDir);
  } catch (e) {
    throw new UserError(`cannot open checkpoint: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, pathOrDir);
  }
  let target = pathOrDir;
  if (st.isDirectory()) {
    const found = [...SAFETENSORS_FILES, ...TORCH_FILES].map((f) => path.join(pathOrDir, f)).find((p) => fs.existsSync(p));
    if (!found) throw new UserError(`no checkpoint in this folder (looked for ${[...SAFETENSORS_FILES, ...TORCH_FILES].join(', ')})`, pathOrDir);
    target = found;
  }
  const base = path.basename(target);
  if (base.endsWith('.safetensors') || base.endsWith('.safetensors.index.json')) return SafetensorsCheckpoint.open(target);
  const ckpt = TorchCheckpoint.open(target);
  convertHint(st.isDirectory() ? pathOrDir : target);
  return ckpt;
}
