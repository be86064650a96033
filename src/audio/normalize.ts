/**
 * Waveform normalisation with Hugging Face Wav2Vec2FeatureExtractor semantics, and its preprocessor config.
 *
 * HF computes `(x - x.mean()) / sqrt(x.var() + 1e-7)` on float32 numpy arrays: numpy sums float32 with pairwise
 * summation in float32 and rounds every intermediate to float32. We reproduce that arithmetic exactly (Math.fround
 * at each step, same pairwise split), so our input_values match the reference bit for bit instead of "close".
 */
import path from 'node:path';
import { UserError } from '../util/errors.ts';
import { readJsonObject } from '../util/fs.ts';

const f32 = Math.fround;

/** numpy's pairwise_sum for float32 (loops_utils.h.src): 8 accumulators per block of <= 128, split in halves above. */
export function pairwiseSumF32(a: Float32Array, start: number, n: number): number {
  if (n < 8) {
    let res = 0;
    for (let i = 0; i < n; i++) res = f32(res + a[start + i]!);
    return res;
  }
  if (n <= 128) {
    const r = [a[start]!, a[start + 1]!, a[start + 2]!, a[start + 3]!, a[start + 4]!, a[start + 5]!, a[start + 6]!, a[start + 7]!];
    let i = 8;
    for (; i < n - (n % 8); i += 8) {
      for (let j = 0; j < 8; j++) r[j] = f32(r[j]! + a[start + i + j]!);
    }
    let res = f32(f32(f32(r[0]! + r[1]!) + f32(r[2]! + r[3]!)) + f32(f32(r[4]! + r[5]!) + f32(r[6]! + r[7]!)));
    for (; i < n; i++) res = f32(res + a[start + i]!);
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return f32(pairwiseSumF32(a, start, n2) + pairwiseSumF32(a, start + n2, n - n2));
}

export interface NormalizeOptions {
  /** `do_normalize` from the preprocessor config; false returns the input unchanged. */
  doNormalize: boolean;
  /** Samples [0, validLength) are real audio, the rest padding (default: all valid). */
  validLength?: number;
  /** Value written to padded positions after normalising (HF `padding_value`, default 0). */
  paddingValue?: number;
}

/** Zero-mean unit-variance normalisation over the valid samples, in float32 arithmetic like HF/numpy. */
export function normalizeWaveform(x: Float32Array, opts: NormalizeOptions): Float32Array {
  if (!opts.doNormalize) return x;
  const n = opts.validLength ?? x.length;
  if (!Number.isInteger(n) || n < 0 || n > x.length) throw new RangeError(`validLength ${n} outside 0..${x.length}`);
  const out = new Float32Array(x.length);
  if (n > 0) {
    // numpy: mean = float32(sum) / float32(count); var = sum((x - mean)^2) / count, all float32.
    const count = f32(n);
    const mean = f32(pairwiseSumF32(x, 0, n) / count);
    const sq = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const d = f32(x[i]! - mean);
      sq[i] = f32(d * d);
    }
    const variance = f32(pairwiseSumF32(sq, 0, n) / count);
    const denom = f32(Math.sqrt(f32(variance + f32(1e-7))));
    for (let i = 0; i < n; i++) out[i] = f32(f32(x[i]! - mean) / denom);
  }
  const pad = opts.paddingValue ?? 0;
  if (n < x.length) out.fill(pad, n);
  return out;
}

export interface PreprocessorConfig {
  doNormalize: boolean;
  samplingRate: number;
  returnAttentionMask: boolean;
  paddingValue: number;
  featureSize: number;
  paddingSide: 'right' | 'left';
}

/** HF Wav2Vec2FeatureExtractor defaults, used for keys the file leaves out. */
export const PREPROCESSOR_DEFAULTS: PreprocessorConfig = {
  doNormalize: true,
  samplingRate: 16000,
  returnAttentionMask: false,
  paddingValue: 0,
  featureSize: 1,
  paddingSide: 'right',
};

/** Read `preprocessor_config.json` from a model folder (or the file itself). */
export function readPreprocessorConfig(dirOrFile: string): PreprocessorConfig {
  const file = dirOrFile.endsWith('.json') ? dirOrFile : path.join(dirOrFile, 'preprocessor_config.json');
  const o = readJsonObject(file);
  const type = o.feature_extractor_type;
  if (type !== undefined && type !== 'Wav2Vec2FeatureExtractor') {
    throw new UserError(`feature_extractor_type ${JSON.stringify(type)} is not supported (expected Wav2Vec2FeatureExtractor)`, file);
  }
  const bool = (k: string, d: boolean): boolean => {
    const v = o[k];
    if (v === undefined) return d;
    if (typeof v !== 'boolean') throw new UserError(`${k} must be true or false, got ${JSON.stringify(v)}`, file);
    return v;
  };
  const num = (k: string, d: number, check: (v: number) => boolean, what: string): number => {
    const v = o[k];
    if (v === undefined) return d;
    if (typeof v !== 'number' || !Number.isFinite(v) || !check(v)) throw new UserError(`${k} must be ${what}, got ${JSON.stringify(v)}`, file);
    return v;
  };
  const side = o.padding_side ?? 'right';
  if (side !== 'right' && side !== 'left') throw new UserError(`padding_side must be "right" or "left", got ${JSON.stringify(side)}`, file);
  const cfg: PreprocessorConfig = {
    doNormalize: bool('do_normalize', PREPROCESSOR_DEFAULTS.doNormalize),
    samplingRate: num('sampling_rate', PREPROCESSOR_DEFAULTS.samplingRate, (v) => Number.isInteger(v) && v >= 1000 && v <= 768000, 'an integer sample rate in Hz'),
    returnAttentionMask: bool('return_attention_mask', PREPROCESSOR_DEFAULTS.returnAttentionMask),
    paddingValue: num('padding_value', PREPROCESSOR_DEFAULTS.paddingValue, () => true, 'a number'),
    featureSize: num('feature_size', PREPROCESSOR_DEFAULTS.featureSize, (v) => v === 1, '1 (raw waveform input)'),
    paddingSide: side,
  };
  return cfg;
}
