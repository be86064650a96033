/**
 * Training checkpoints: everything needed to continue a run exactly as if it had never stopped.
 *
 *   <run>/checkpoints/step-00000120/
 *     params.safetensors      trainable parameters by name (mapper, LoRA or LLM)
 *     optimizer.safetensors   AdamW moments (m.<name>, v.<name>)
 *     state.json              step, epoch, position in the epoch, best validation UA, metrics history
 *     (+ whatever the caller writes: the trainer makes each checkpoint a model folder, emosllm.json, mapper,
 *      PEFT adapter..., so `emosllm eval --model <run>/checkpoints/step-...` works)
 *
 * A checkpoint folder is written under a temporary name and renamed into place, so a crash never leaves a
 * half-written checkpoint that --resume could pick up. Old checkpoints beyond keep-last-K are removed; the best
 * one (by validation UA) is kept as well.
 */
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { SafetensorsFile, writeSafetensors } from '../io/safetensors.ts';
import { UserError } from '../util/errors.ts';
import { writeFileAtomic } from '../util/fs.ts';

export interface TrainState {
  step: number;
  epoch: number;
  /**
   * optimiser steps of the current epoch already done. With (seed, epoch) this is the whole random state: the
   * epoch's order and every batch's crops and masks are drawn from RNGs derived from them (trainer.ts).
   */
  batchInEpoch: number;
  bestUa: number;
  bestStep: number;
  /** evaluations since the best one (early stopping) */
  badEvals: number;
  history: Array<Record<string, number>>;
  [k: string]: unknown;
}

export interface Checkpoint {
  dir: string;
  params: Record<string, Float32Array>;
  moments: { m: Record<string, Float32Array>; v: Record<string, Float32Array> };
  state: TrainState;
}

const stepDir = (root: string, step: number) => path.join(root, `step-${String(step).padStart(8, '0')}`);

function writeTensors(file: string, tensors: Record<string, Float32Array>, shapes: Record<string, number[]>) {
  writeSafetensors(
    file,
    Object.entries(tensors).map(([name, data]) => ({ name, dtype: 'F32' as const, shape: shapes[name.replace(/^[mv]\./, '')] ?? [data.length], data })),
  );
}

/** Writes a checkpoint for `state.step` atomically and prunes old ones. Returns its folder. */
export function saveCheckpoint(
  root: string,
  params: Record<string, Float32Array>,
  shapes: Record<string, number[]>,
  moments: { m: Record<string, Float32Array>; v: Record<string, Float32Array> },
  state: TrainState,
  keepLast: number,
  /** writes more files into the checkpoint folder before it is renamed into place (the trainer: a model folder) */
  writeExtra?: (dir: string) => void,
): string {
  fs.mkdirSync(root, { recursive: true });
  const final = stepDir(root, state.step);
  const tmp = path.join(root, `.tmp-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
  fs.mkdirSync(tmp);
  try {
    writeTensors(path.join(tmp, 'params.safetensors'), params, shapes);
    const opt: Record<string, Float32Array> = {};
    for (const [k, v] of Object.entries(moments.m)) opt[`m.${k}`] = v;
    for (const [k, v] of Object.entries(moments.v)) opt[`v.${k}`] = v;
    writeTensors(path.join(tmp, 'optimizer.safetensors'), opt, shapes);
    writeExtra?.(tmp);
    writeFileAtomic(path.join(tmp, 'state.json'), `${JSON.stringify(state)}\n`);
    fs.rmSync(final, { recursive: true, force: true });
    fs.renameSync(tmp, final);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  pruneCheckpoints(root, keepLast, state.bestStep);
  return final;
}

export function listCheckpoints(root: string): number[] {
  if (!fs.existsSync(root)) return [];
  return fs
    .readdirSync(root)
    .map((f) => /^step-(\d{8})$/.exec(f))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .filter((s) => fs.existsSync(path.join(stepDir(root, s), 'state.json')))
    .sort((a, b) => a - b);
}

function pruneCheckpoints(root: string, keepLast: number, bestStep: number) {
  const steps = listCheckpoints(root);
  const keep = new Set(steps.slice(-Math.max(1, keepLast)));
  keep.add(bestStep);
  for (const s of steps) if (!keep.has(s)) fs.rmSync(stepDir(root, s), { recursive: true, force: true });
  for (const f of fs.readdirSync(root)) if (f.startsWith('.tmp-')) fs.rmSync(path.join(root, f), { recursive: true, force: true });
}

/** Loads the newest complete checkpoint (or a given step). */
export function loadCheckpoint(root: string, step?: number): Checkpoint | undefined {
  const steps = listCheckpoints(root);
  if (steps.length === 0) return undefined;
  const s = step ?? steps[steps.length - 1];
  if (!steps.includes(s)) throw new UserError(`no checkpoint for step ${s}`, root);
  const dir = stepDir(root, s);
  const read = (file: string) => {
    const f = SafetensorsFile.open(file);
    try {
      return Object.fromEntries(f.names().map((n) => [n, f.readF32(n)]));
    } finally {
      f.close();
    }
  };
  let state: TrainState;
  try {
    state = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8'));
  } catch {
    throw new UserError('state.json is not valid JSON', dir);
  }
  const params = read(path.join(dir, 'params.safetensors'));
  const opt = read(path.join(dir, 'optimizer.safetensors'));
  const m: Record<string, Float32Array> = {};
  const v: Record<string, Float32Array> = {};
  for (const [k, x] of Object.entries(opt)) {
    if (k.startsWith('m.')) m[k.slice(2)] = x;
    else if (k.startsWith('v.')) v[k.slice(2)] = x;
  }
  return { dir, params, moments: { m, v }, state };
}
