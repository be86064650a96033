/**
 * The classical peer: utterance functionals + an RBF SVM, the baseline the built-in model is measured against
 * (issue 15's recipe; a benchmark peer for `npm run bench -- accuracy` and the demo report, not the product).
 *
 * Per clip, from the built-in encoder graph (frame-encoders.ts, `fbank+mfcc+prosody` with 40 mel bins: one
 * implementation of the frame features) through the feature cache:
 *   frame features  40 log-mel bins, 13 MFCCs, their frame-to-frame deltas (x[t] - x[t-1]), log-F0 on the
 *                   louder half of the frames (log-energy >= its median), log-energy: 108 channels
 *   functionals     per channel the mean, std, min, max, 10th / 50th / 90th percentile (linear interpolation,
 *                   as numpy) and mean absolute frame-to-frame change; plus the duration: 865 values
 * Training: optional speaker normalisation (each functional z-normalised within each speaker, on the training
 * and the test side alike), then standardisation with the training statistics, then a C-SVC with an RBF kernel
 * (C = 10, class weights n / (classes * count), as sklearn's 'balanced'; gamma 1 / (features * variance of the
 * standardised training matrix), sklearn's 'scale').
 *
 * The SVM is libsvm (3.22) compiled to WebAssembly (libsvm-js, from the mljs project): the reference SVM
 * solver itself, with per-class weights, rather than a JS reimplementation (ml-svm has no class weights).
 */
import { createRequire } from 'node:module';
import type { DatasetItem } from '../data/types.ts';
import { leaveOneGroupOut } from '../data/splits.ts';
import { FeatureCache } from '../features/cache.ts';
import { prepareClips, statesOf } from '../features/clips.ts';
import { cacheRoot } from '../graph/runtime.ts';
import { BuiltinFrameEncoder, releaseFrameEncoder } from '../models/frame-encoders.ts';
import { MFCC_COEFFS } from '../models/frame-features-graph.ts';
import { UserError } from '../util/errors.ts';
import { computeMetrics } from './metrics.ts';

export const PEER_MEL_BINS = 40;
export const PEER_SVM = { cost: 10 } as const;
const FUNCTIONALS = ['mean', 'std', 'min', 'max', 'p10', 'p50', 'p90', 'mean_abs_delta'] as const;

/** The peer's frame encoder: the built-in graph with the groups and mel bins of the recipe, one frame per 10 ms. */
export function peerEncoder(): BuiltinFrameEncoder {
  return new BuiltinFrameEncoder({ stack: 1, features: ['fbank', 'mfcc', 'prosody'], options: { numMelBins: PEER_MEL_BINS } });
}

/** Names of the functionals peerFunctionals returns, in order. */
export function peerFeatureNames(): string[] {
  const ch = [
    ...Array.from({ length: PEER_MEL_BINS }, (_, i) => `fbank_${i}`),
    ...Array.from({ length: PEER_MEL_BINS }, (_, i) => `fbank_${i}_delta`),
    ...Array.from({ length: MFCC_COEFFS }, (_, i) => `mfcc_${i}`),
    ...Array.from({ length: MFCC_COEFFS }, (_, i) => `mfcc_${i}_delta`),
    'log_f0_louder_half',
    'log_energy',
  ];
  return [...ch.flatMap((c) => FUNCTIONALS.map((f) => `${c}.${f}`)), 'duration_s'];
}

/** The eight functionals of one series (see the file comment), appended to `out`. */
function pushFunctionals(out: number[], x: Float64Array): void {
  const n = x.length;
  let sum = 0;
  for (const v of x) sum += v;
  const mean = sum / n;
  let sq = 0;
  let absDelta = 0;
  for (let i = 0; i < n; i++) {
    sq += (x[i]! - mean) ** 2;
    if (i > 0) absDelta += Math.abs(x[i]! - x[i - 1]!);
  }
  const sorted = Float64Array.from(x).sort();
  const q = (p: number) => {
    const pos = p * (n - 1);
    const i = Math.floor(pos);
    return sorted[i]! + (pos - i) * ((sorted[Math.min(i + 1, n - 1)] ?? 0) - sorted[i]!);
  };
  out.push(mean, Math.sqrt(sq / n), sorted[0]!, sorted[n - 1]!, q(0.1), q(0.5), q(0.9), n > 1 ? absDelta / (n - 1) : 0);
}

/** Functionals of one clip from its frame features ([frames, 40 + 26 + 3] of peerEncoder). */
export function clipFunctionals(states: Float32Array, frames: number, width: number, frameRate: number): Float64Array {
  const col = (c: number) => Float64Array.from({ length: frames }, (_, t) => states[t * width + c]!);
  const delta = (x: Float64Array) => (x.length > 1 ? Float64Array.from({ length: x.length - 1 }, (_, t) => x[t + 1]! - x[t]!) : new Float64Array(1));
  const mfcc0 = PEER_MEL_BINS; // mfcc group: 13 MFCCs, then the graph's smoothed deltas (not used: the recipe's are frame-to-frame)
  const prosody0 = PEER_MEL_BINS + 2 * MFCC_COEFFS; // log-F0, voicing, log-energy
  const fb = Array.from({ length: PEER_MEL_BINS }, (_, c) => col(c));
  const mf = Array.from({ length: MFCC_COEFFS }, (_, c) => col(mfcc0 + c));
  const logF0 = col(prosody0);
  const logE = col(prosody0 + 2);
  const median = Float64Array.from(logE).sort()[Math.floor((frames - 1) / 2)]!;
  const louder = logF0.filter((_, t) => logE[t]! >= median);
  const out: number[] = [];
  for (const x of [...fb, ...fb.map(delta), ...mf, ...mf.map(delta), louder, logE]) pushFunctionals(out, x);
  out.push(frames / frameRate);
  return Float64Array.from(out);
}

export interface PeerFeatures {
  items: DatasetItem[];
  /** one functionals vector per item (peerFeatureNames order) */
  features: Float64Array[];
  warnings: string[];
}

/** Functionals of every readable item (an unreadable one is left out with a warning), via the feature cache. */
export async function peerFunctionals(items: DatasetItem[], opts: { cacheDir?: string; onProgress?: (done: number, total: number) => void } = {}): Promise<PeerFeatures> {
  const enc = peerEncoder();
  try {
    const cache = new FeatureCache(cacheRoot({ cacheDir: opts.cacheDir }), enc);
    const prep = await prepareClips(cache, items, { onProgress: opts.onProgress });
    const states = await statesOf(cache, prep.clips);
    return {
      items: prep.clips.map((c) => c.item),
      features: states.map((s) => clipFunctionals(s.states[0]!, s.frames, enc.hiddenSize, enc.frameRate)),
      warnings: prep.warnings,
    };
  } finally {
    await releaseFrameEncoder(enc);
  }
}

/** Column means and stds (population; a constant column gets std 1) of rows. */
function columnStats(rows: Float64Array[]): { mean: Float64Array; std: Float64Array } {
  const d = rows[0]!.length;
  const mean = new Float64Array(d);
  const std = new Float64Array(d);
  for (const r of rows) for (let j = 0; j < d; j++) mean[j] += r[j]! / rows.length;
  for (const r of rows) for (let j = 0; j < d; j++) std[j] += (r[j]! - mean[j]!) ** 2 / rows.length;
  for (let j = 0; j < d; j++) std[j] = std[j]! > 1e-24 ? Math.sqrt(std[j]!) : 1;
  return { mean, std };
}

const zScore = (r: Float64Array, s: { mean: Float64Array; std: Float64Array }) => r.map((v, j) => (v - s.mean[j]!) / s.std[j]!);

/** Each row z-normalised with the statistics of its own speaker's rows. */
export function speakerNormalise(rows: Float64Array[], speakers: string[]): Float64Array[] {
  const out: Float64Array[] = new Array(rows.length);
  for (const spk of new Set(speakers)) {
    const idx = speakers.flatMap((s, i) => (s === spk ? [i] : []));
    const stats = columnStats(idx.map((i) => rows[i]!));
    for (const i of idx) out[i] = zScore(rows[i]!, stats);
  }
  return out;
}

interface LibSvm {
  new (options: Record<string, unknown>): { train(x: number[][], y: number[]): void; predict(x: number[][]): number[]; free(): void };
  SVM_TYPES: Record<string, string>;
  KERNEL_TYPES: Record<string, string>;
}
let libsvm: LibSvm | undefined;
/**
 * libsvm-js's asm.js build (synchronous; the WebAssembly build warns on every load in Node, where its streaming
 * fetch of a file path fails). Its emscripten runtime installs a process-wide unhandledRejection handler that
 * exits the process; that handler is removed again, so loading the peer changes nothing else in the process.
 */
function loadLibSvm(): LibSvm {
  if (libsvm) return libsvm;
  const before = new Set(process.listeners('unhandledRejection'));
  libsvm = createRequire(import.meta.url)('libsvm-js/asm') as LibSvm;
  for (const l of process.listeners('unhandledRejection')) if (!before.has(l)) process.removeListener('unhandledRejection', l);
  return libsvm;
}

export interface PeerSplit {
  train: { features: Float64Array[]; labels: string[]; speakers: string[] };
  test: { features: Float64Array[]; speakers: string[] };
}

/** Trains the peer on `train` and predicts `test` (file comment); returns one label per test row. */
export async function fitPredictPeer(split: PeerSplit, opts: { speakerNorm: boolean }): Promise<string[]> {
  const { train, test } = split;
  if (train.features.length === 0) throw new UserError('the classical peer needs training clips');
  if (test.features.length === 0) return [];
  let xTrain = train.features;
  let xTest = test.features;
  if (opts.speakerNorm) {
    xTrain = speakerNormalise(xTrain, train.speakers);
    xTest = speakerNormalise(xTest, test.speakers);
  }
  const stats = columnStats(xTrain);
  xTrain = xTrain.map((r) => zScore(r, stats));
  xTest = xTest.map((r) => zScore(r, stats));
  const labels = [...new Set(train.labels)].sort();
  const y = train.labels.map((l) => labels.indexOf(l));
  const counts = labels.map((_, c) => y.filter((v) => v === c).length);
  const weight = Object.fromEntries(counts.map((n, c) => [c, y.length / (labels.length * n)]));
  const d = xTrain[0]!.length;
  let sum = 0;
  let sq = 0;
  for (const r of xTrain) for (const v of r) (sum += v), (sq += v * v);
  const n = xTrain.length * d;
  const variance = sq / n - (sum / n) ** 2;
  const SVM = loadLibSvm();
  const svm = new SVM({ type: SVM.SVM_TYPES.C_SVC, kernel: SVM.KERNEL_TYPES.RBF, cost: PEER_SVM.cost, gamma: 1 / (d * variance), weight, quiet: true });
  try {
    svm.train(xTrain.map((r) => Array.from(r)), y);
    return svm.predict(xTest.map((r) => Array.from(r))).map((c) => labels[c]!);
  } finally {
    svm.free();
  }
}

export interface PeerResult {
  /** per test item, in order */
  predictions: string[];
  ua: number;
  wa: number;
}

/** The peer trained on `train` and scored on `test` (each item's speaker from the manifest). */
export async function runClassicalPeer(
  train: PeerFeatures,
  test: PeerFeatures,
  opts: { speakerNorm: boolean; labels?: string[] },
): Promise<PeerResult> {
  const predictions = await fitPredictPeer(
    {
      train: { features: train.features, labels: train.items.map((i) => i.label), speakers: train.items.map((i) => i.speaker) },
      test: { features: test.features, speakers: test.items.map((i) => i.speaker) },
    },
    opts,
  );
  const truth = test.items.map((i) => i.label);
  const labels = opts.labels ?? [...new Set([...train.items, ...test.items].map((i) => i.label))].sort();
  const m = computeMetrics(labels, truth, predictions);
  return { predictions, ua: m.ua, wa: m.wa };
}

export interface PeerLosoResult {
  folds: Array<{ speaker: string; ua: number; wa: number }>;
  /** mean over folds */
  ua: number;
  wa: number;
}

/** Leave-one-speaker-out over `all` (functionals computed once): the peer's per-fold and mean UA. */
export async function classicalPeerLoso(all: PeerFeatures, opts: { speakerNorm: boolean }): Promise<PeerLosoResult> {
  const featuresOf = new Map(all.items.map((it, i) => [it, all.features[i]!]));
  const labels = [...new Set(all.items.map((i) => i.label))].sort();
  const folds: PeerLosoResult['folds'] = [];
  for (const fold of leaveOneGroupOut(all.items, 'speaker')) {
    const pick = (items: DatasetItem[]): PeerFeatures => ({ items, features: items.map((i) => featuresOf.get(i)!), warnings: [] });
    const r = await runClassicalPeer(pick(fold.train), pick(fold.test), { speakerNorm: opts.speakerNorm, labels });
    folds.push({ speaker: fold.group, ua: r.ua, wa: r.wa });
  }
  const mean = (k: 'ua' | 'wa') => folds.reduce((a, f) => a + f[k], 0) / folds.length;
  return { folds, ua: mean('ua'), wa: mean('wa') };
}
