/**
 * `emosllm convert`: a torch `.bin` checkpoint folder rewritten as safetensors, so later runs read the weights
 * in place. Every tensor is kept as stored (name, dtype, shape), whatever the architecture; the other files
 * are copied. Large checkpoints are sharded the way transformers shards them (model-0000k-of-0000n.safetensors
 * + model.safetensors.index.json).
 */
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../util/errors.ts';
import { type StreamedTensor, writeSafetensorsStreaming } from './safetensors.ts';
import { TORCH_INDEX_FILE, TorchCheckpoint } from './torch.ts';

/** Shards hold at most this many bytes: conversion holds one shard in memory at a time. */
export const SHARD_BYTES = 2 * 1024 ** 3;

export interface ConvertResult {
  out: string;
  tensors: number;
  shards: string[];
}

const isTorchWeights = (f: string) => f === TORCH_INDEX_FILE || /^(pytorch_model|adapter_model)(-\d+-of-\d+)?\.bin$/.test(f);

/** Converts folder `src` into a new folder `out` (written beside it under a temporary name, then renamed). */
export function convertFolder(src: string, out: string, shardBytes = SHARD_BYTES): ConvertResult {
  if (!fs.existsSync(src) || !fs.statSync(src).isDirectory()) throw new UserError('not a folder', src);
  if (fs.existsSync(out)) throw new UserError('already exists: choose a new --out folder', out);
  const files = fs.readdirSync(src);
  if (files.some((f) => /^(model|adapter_model)(-\d+-of-\d+)?\.safetensors(\.index\.json)?$/.test(f)))
    throw new UserError('already holds safetensors weights: nothing to convert', src);
  if (!files.some(isTorchWeights)) throw new UserError(`no torch checkpoint here (pytorch_model.bin, ${TORCH_INDEX_FILE} or adapter_model.bin)`, src);
  const adapter = files.includes('adapter_model.bin');
  const ckpt = TorchCheckpoint.open(src);
  const tmp = fs.mkdtempSync(path.join(path.dirname(path.resolve(out)), `.${path.basename(out)}.tmp-`));
  try {
    // Group tensors into shards in name order (transformers keeps the state-dict order; any order loads).
    const groups: string[][] = [[]];
    let bytes = 0;
    for (const name of ckpt.names()) {
      const size = ckpt.info(name).byteLength;
      if (bytes + size > shardBytes && groups[groups.length - 1]!.length) (groups.push([]), (bytes = 0));
      groups[groups.length - 1]!.push(name);
      bytes += size;
    }
    const stem = adapter ? 'adapter_model' : 'model';
    const n = groups.length;
    const shardName = (i: number) => (n === 1 ? `${stem}.safetensors` : `${stem}-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`);
    const weightMap: Record<string, string> = {};
    let total = 0;
    groups.forEach((names, i) => {
      const tensors: StreamedTensor[] = names.map((name) => {
        const info = ckpt.info(name);
        total += info.byteLength;
        weightMap[name] = shardName(i);
        // read as it is written: one tensor in memory at a time, not the shard
        const chunks = () => {
          const d = ckpt.read(name);
          return [new Uint8Array(d.buffer, d.byteOffset, d.byteLength)];
        };
        return { name, dtype: info.dtype, shape: info.shape, chunks };
      });
      writeSafetensorsStreaming(path.join(tmp, shardName(i)), tensors, { format: 'pt' });
    });
    if (n > 1) fs.writeFileSync(path.join(tmp, `${stem}.safetensors.index.json`), `${JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2)}\n`);
    for (const f of files) {
      if (isTorchWeights(f)) continue;
      fs.cpSync(path.join(src, f), path.join(tmp, f), { recursive: true, dereference: true });
    }
    fs.renameSync(tmp, out);
    return { out, tensors: ckpt.names().length, shards: groups.map((_, i) => shardName(i)) };
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  } finally {
    ckpt.close();
  }
}
