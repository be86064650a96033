/**
 * Waveform normalisation with Hugging Face Wav2Vec2FeatureExtractor semantics, and its preprocessor config.
 *
 * The normalisation is a graph (normalizeWaveformGraph), so the one implementation runs in training, predict,
 * the server, the export and the browser alike. HF computes `(x - x.mean()) / sqrt(x.var() + 1e-7)` in float32
 * numpy; ONNX Runtime's ReduceMean sums in a different order, so the values agree to float rounding (1e-5 on
 * the hf-parity fixtures), not bit for bit. test/oracles/hf-normalize.ts holds numpy's exact arithmetic as the
 * tests' reference.
 */
import path from 'node:path';
import type { Value } from '../graph/ir.ts';
import { add, div, mul, reduceMean, sqrt, sub } from '../graph/ops.ts';
import { UserError } from '../util/errors.ts';
import { readJsonObject } from '../util/fs.ts';

/** Zero-mean unit-variance normalisation of each row of `x` [B, S] over its samples (HF's var + 1e-7). */
export function normalizeWaveformGraph(x: Value): Value {
  const d = sub(x, reduceMean(x, [1], true));
  return div(d, sqrt(add(reduceMean(mul(d, d), [1], true), 1e-7)));
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
