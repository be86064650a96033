/**
 * The model's input contract (its "processor", as in Hugging Face and Ultravox): what the training-step and
 * label-scoring graphs of emosllm.ts read, built from clips' encoder states and the prompt.
 *
 * Training batches:
 * A clip's encoder states (one [T, D] matrix per selected layer) are randomly cropped in the frame domain,
 * right-padded to the longest clip with a frame
 * mask, and paired with the token ids of the text that follows the audio tokens:
 *   [n_q audio tokens | prompt (+ transcript) | answer]
 * Training uses only the logits that predict answer tokens (HF's label shift: the logit at position t
 * predicts token t+1), so batches carry those positions and targets instead of a full label matrix.
 */
import { type Tensor, tensor } from '../graph/runtime.ts';
import type { Rng } from '../util/rng.ts';
import type { PromptBuilder } from './prompt.ts';

/** Per-channel mean and std of a group (models/normalize.ts). */
export interface ChannelStats {
  /** [layers * dim] */
  mean: Float32Array;
  std: Float32Array;
}

export interface ClipStates {
  /** one [frames, dim] row-major matrix per selected encoder layer */
  states: Float32Array[];
  frames: number;
  dim: number;
  /** the statistics of the stat token's inputs over the clip's group (speaker normalisation: models/normalize.ts) */
  statGroup?: ChannelStats;
}

export interface Example {
  id: string;
  states: ClipStates;
  /** index into the label set */
  label: number;
  transcript?: string;
}

/** Training crops: a random window of `frames` frames (the whole clip when it is shorter). */
export interface Crop {
  frames: number;
  rng: Rng;
}

export interface Batch {
  size: number;
  frames: number;
  layers: number;
  dim: number;
  /** [layers, B, T, D] */
  hiddenStates: Float32Array;
  /** [B, T] 1 = valid frame */
  frameMask: BigInt64Array;
  /** [B, P] prompt ids followed by the answer ids, right-padded with `padId` */
  textIds: BigInt64Array;
  textLen: number;
  /** [B, nQ + P] */
  attentionMask: BigInt64Array;
  /** [B, K] position of the logit that predicts each answer token; K = longest answer */
  lossPositions: BigInt64Array;
  /** [B, K] the answer token ids, -100 where a row's answer is shorter */
  lossTargets: BigInt64Array;
  answerLen: number;
  /** each row's statGroup (ClipStates): the stat token's group standardisation */
  statGroups: Array<ChannelStats | undefined>;
  /** [B, statWidth]: training dropout of the mapper's stat-token inputs (0, or 1 / (1 - p)); absent = keep all */
  statKeep?: Float32Array;
}

export const IGNORE_INDEX = -100;

/** The frame window a crop keeps: [start, start + length). */
export function cropWindow(frames: number, crop: Crop): { start: number; length: number } {
  if (frames <= crop.frames) return { start: 0, length: frames };
  return { start: crop.rng.int(frames - crop.frames + 1), length: crop.frames };
}

export interface BatchOptions {
  crop: Crop;
  nQueries: number;
  padId?: number;
}

export function buildBatch(examples: Example[], prompt: PromptBuilder, opts: BatchOptions): Batch {
  if (examples.length === 0) throw new Error('buildBatch: no examples');
  const { nQueries } = opts;
  const padId = opts.padId ?? 0;
  const layers = examples[0].states.states.length;
  const dim = examples[0].states.dim;
  const windows = examples.map((e) => {
    if (e.states.states.length !== layers || e.states.dim !== dim)
      throw new Error(`clip ${e.id}: encoder states have ${e.states.states.length}x${e.states.dim}, expected ${layers}x${dim}`);
    return cropWindow(e.states.frames, opts.crop);
  });
  const B = examples.length;
  const T = Math.max(1, ...windows.map((w) => w.length));
  const hiddenStates = new Float32Array(layers * B * T * dim);
  const frameMask = new BigInt64Array(B * T);
  examples.forEach((e, b) => {
    const { start, length } = windows[b];
    for (let l = 0; l < layers; l++) {
      const src = e.states.states[l].subarray(start * dim, (start + length) * dim);
      hiddenStates.set(src, ((l * B + b) * T) * dim);
    }
    frameMask.fill(1n, b * T, b * T + length);
  });

  const promptIds = examples.map((e) => prompt.promptIds(e.transcript));
  const answers = examples.map((e) => {
    const a = prompt.answerIds[e.label];
    if (!a) throw new Error(`buildBatch: clip ${e.id} has label index ${e.label}, outside the prompt's ${prompt.labels.length} labels`);
    return a;
  });
  const rows = promptIds.map((p, b) => [...p, ...answers[b]]);
  const P = Math.max(...rows.map((r) => r.length));
  const K = Math.max(1, ...answers.map((a) => a.length));
  const textIds = new BigInt64Array(B * P).fill(BigInt(padId));
  const attentionMask = new BigInt64Array(B * (nQueries + P));
  const lossPositions = new BigInt64Array(B * K);
  const lossTargets = new BigInt64Array(B * K).fill(BigInt(IGNORE_INDEX));
  rows.forEach((r, b) => {
    r.forEach((id, j) => (textIds[b * P + j] = BigInt(id)));
    attentionMask.fill(1n, b * (nQueries + P), b * (nQueries + P) + nQueries + r.length);
    const a = answers[b];
    const firstAnswerPos = nQueries + promptIds[b].length; // position of the first answer token
    a.forEach((id, k) => {
      lossPositions[b * K + k] = BigInt(firstAnswerPos + k - 1); // the logit one step earlier predicts it
      lossTargets[b * K + k] = BigInt(id);
    });
  });
  return {
    size: B,
    frames: T,
    layers,
    dim,
    hiddenStates,
    frameMask,
    textIds,
    textLen: P,
    attentionMask,
    lossPositions,
    lossTargets,
    answerLen: K,
    statGroups: examples.map((e) => e.states.statGroup),
  };
}

/** Candidate answers as the label-scoring graph's inputs first_targets, answer_ids, answer_next (emosllm.ts). */
export function answerTensors(answers: number[][]): Record<string, Tensor> {
  const C = answers.length;
  const A = Math.max(1, ...answers.map((a) => a.length - 1));
  const first = new BigInt64Array(C);
  const ids = new BigInt64Array(C * A);
  const next = new BigInt64Array(C * A).fill(BigInt(IGNORE_INDEX));
  answers.forEach((a, c) => {
    first[c] = BigInt(a[0]);
    for (let j = 0; j + 1 < a.length; j++) {
      ids[c * A + j] = BigInt(a[j]);
      next[c * A + j] = BigInt(a[j + 1]);
    }
  });
  return { first_targets: tensor(first, [C]), answer_ids: tensor(ids, [C, A]), answer_next: tensor(next, [C, A]) };
}
