/**
 * Loading a Hugging Face speech encoder folder (config.json + model.safetensors [+ preprocessor_config.json]):
 * wav2vec2, HuBERT or WavLM, as a frozen graph builder.
 *
 * Every config key we use is validated (unknown model types and options we do not implement fail with a
 * one-line UserError naming the key and the file); keys that are absent take HF's defaults, like
 * `from_pretrained`. All weights are checked at load time by a dry build, so a missing or mis-shaped tensor
 * fails here, naming the tensor, rather than at the first forward.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Graph, type Value } from '../graph/ir.ts';
import { PREPROCESSOR_DEFAULTS, type PreprocessorConfig, readPreprocessorConfig } from '../audio/normalize.ts';
import { UserError } from '../util/errors.ts';
import { readJsonObject } from '../util/fs.ts';
import {
  type EncoderWeights,
  type SpeechEncoderBuildOptions,
  type SpeechEncoderConfig,
  type SpeechEncoderOutputs,
  type SpeechModelType,
  buildWav2Vec2,
  convFrameLengths,
  loadPositionalConvWeight,
} from './wav2vec2.ts';
import { buildWavLM } from './wavlm.ts';
import { Weights } from './weights.ts';

export type { SpeechEncoderBuildOptions, SpeechEncoderConfig, SpeechEncoderOutputs, SpeechModelType } from './wav2vec2.ts';

/**
 * What every frame encoder exposes (frame-encoders.ts: the fbank graph and Hugging Face encoders); the feature
 * cache, batches and the model see only this.
 */
export interface FrameEncoder {
  /** Stable identity for caching: a hash of everything that determines the output (config, weights, code version). */
  readonly id: string;
  /** How many hidden states `encode` returns per clip (e.g. 13 for wav2vec2-base: CNN output + 12 layers). */
  readonly numHiddenStates: number;
  /** Width D of each hidden state. */
  readonly hiddenSize: number;
  /** Frames per second of audio (100 / stack for fbank, 50 for wav2vec2-style encoders). */
  readonly frameRate: number;
  /**
   * Encodes 16 kHz mono float clips. Returns, per clip, `numHiddenStates` row-major [frames, hiddenSize] arrays.
   * A clip's result must not depend on the other clips in the batch (the feature cache relies on it).
   */
  encode(batch: Float32Array[]): Promise<Array<{ states: Float32Array[]; frames: number }>>;
}

export interface SpeechEncoder {
  /** The model folder. */
  readonly dir: string;
  readonly config: SpeechEncoderConfig;
  /** num_hidden_layers + 1 */
  readonly numHiddenStates: number;
  readonly hiddenSize: number;
  /** preprocessor_config.json (HF Wav2Vec2FeatureExtractor defaults when the file is absent). */
  readonly preprocessor: PreprocessorConfig & { source: 'file' | 'default' };
  /** Conv stack output length (frames) for each input length (samples). */
  frameLengths(sampleLengths: number[]): number[];
  /**
   * Builds the encoder into `g`. inputValues [B, S] float32 (normalised waveform); attentionMask [B, S]
   * int64/int32/bool with 1 = valid sample, or undefined for no masking. B and S may be symbolic.
   */
  build(g: Graph, inputValues: Value, attentionMask?: Value, opts?: SpeechEncoderBuildOptions): SpeechEncoderOutputs;
}

const MODEL_TYPES: readonly SpeechModelType[] = ['wav2vec2', 'hubert', 'wavlm'];

/** HF config defaults (Wav2Vec2Config / HubertConfig / WavLMConfig, transformers 4.43). */
const DEFAULTS = {
  hidden_size: 768,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  intermediate_size: 3072,
  hidden_act: 'gelu',
  layer_norm_eps: 1e-5,
  feat_extract_norm: 'group',
  feat_extract_activation: 'gelu',
  conv_dim: [512, 512, 512, 512, 512, 512, 512],
  conv_stride: [5, 2, 2, 2, 2, 2, 2],
  conv_kernel: [10, 3, 3, 3, 3, 2, 2],
  conv_bias: false,
  num_conv_pos_embeddings: 128,
  num_conv_pos_embedding_groups: 16,
  do_stable_layer_norm: false,
  feat_proj_layer_norm: true,
  num_buckets: 320,
  max_bucket_distance: 800,
};

/** Parses and validates a speech encoder config.json object; `file` names it in errors. */
export function parseSpeechEncoderConfig(raw: unknown, file: string): SpeechEncoderConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new UserError('expected a JSON object', file);
  const o = raw as Record<string, unknown>;
  const fail = (key: string, msg: string): never => {
    throw new UserError(`"${key}" ${msg}`, file);
  };
  const show = (v: unknown) => JSON.stringify(v);

  const mt = o.model_type;
  if (mt === undefined) fail('model_type', `is missing; expected one of ${MODEL_TYPES.join(', ')}`);
  if (!MODEL_TYPES.includes(mt as SpeechModelType)) fail('model_type', `is ${show(mt)}; supported speech encoders: ${MODEL_TYPES.join(', ')}`);
  const modelType = mt as SpeechModelType;

  const int = (key: keyof typeof DEFAULTS, min = 1): number => {
    const v = o[key] ?? DEFAULTS[key];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) fail(key, `must be an integer >= ${min}, got ${show(v)}`);
    return v as number;
  };
  const bool = (key: keyof typeof DEFAULTS): boolean => {
    const v = o[key] ?? DEFAULTS[key];
    if (typeof v !== 'boolean') fail(key, `must be true or false, got ${show(v)}`);
    return v as boolean;
  };
  const ints = (key: keyof typeof DEFAULTS): number[] => {
    const v = o[key] ?? DEFAULTS[key];
    if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 1))
      fail(key, `must be a non-empty list of positive integers, got ${show(v)}`);
    return [...(v as number[])];
  };
  const oneOf = <T extends string>(key: keyof typeof DEFAULTS, allowed: readonly T[], what: string): T => {
    const v = o[key] ?? DEFAULTS[key];
    if (!allowed.includes(v as T)) fail(key, `is ${show(v)}; ${what}`);
    return v as T;
  };

  const hiddenSize = int('hidden_size');
  const numHiddenLayers = int('num_hidden_layers');
  const numAttentionHeads = int('num_attention_heads');
  const intermediateSize = int('intermediate_size');
  if (hiddenSize % numAttentionHeads !== 0) fail('num_attention_heads', `(${numAttentionHeads}) must divide hidden_size (${hiddenSize})`);

  const eps = o.layer_norm_eps ?? DEFAULTS.layer_norm_eps;
  if (typeof eps !== 'number' || !(eps > 0) || !Number.isFinite(eps)) fail('layer_norm_eps', `must be a positive number, got ${show(eps)}`);

  oneOf('hidden_act', ['gelu'], 'only "gelu" (exact erf GELU) is supported');
  oneOf('feat_extract_activation', ['gelu'], 'only "gelu" (exact erf GELU) is supported');
  const featExtractNorm = oneOf('feat_extract_norm', ['group', 'layer'] as const, 'expected "group" or "layer"');
  const doStableLayerNorm = bool('do_stable_layer_norm');
  const convBias = bool('conv_bias');

  const convDim = ints('conv_dim');
  const convKernel = ints('conv_kernel');
  const convStride = ints('conv_stride');
  if (convKernel.length !== convDim.length) fail('conv_kernel', `has ${convKernel.length} entries but conv_dim has ${convDim.length}`);
  if (convStride.length !== convDim.length) fail('conv_stride', `has ${convStride.length} entries but conv_dim has ${convDim.length}`);
  if (o.num_feat_extract_layers !== undefined && o.num_feat_extract_layers !== convDim.length)
    fail('num_feat_extract_layers', `is ${show(o.num_feat_extract_layers)} but conv_dim has ${convDim.length} entries`);

  const numConvPosEmbeddings = int('num_conv_pos_embeddings');
  const numConvPosEmbeddingGroups = int('num_conv_pos_embedding_groups');
  if (hiddenSize % numConvPosEmbeddingGroups !== 0)
    fail('num_conv_pos_embedding_groups', `(${numConvPosEmbeddingGroups}) must divide hidden_size (${hiddenSize})`);

  // Options of the same model classes that change the math and that we do not implement.
  if (o.add_adapter !== undefined && o.add_adapter !== false) fail('add_adapter', `is ${show(o.add_adapter)}; the output adapter is not supported`);
  if (o.conv_pos_batch_norm !== undefined && o.conv_pos_batch_norm !== false)
    fail('conv_pos_batch_norm', `is ${show(o.conv_pos_batch_norm)}; batch norm in the positional conv is not supported`);

  const featProjLayerNorm = modelType === 'hubert' ? bool('feat_proj_layer_norm') : true;
  let numBuckets = 0;
  let maxBucketDistance = 0;
  if (modelType === 'wavlm') {
    numBuckets = int('num_buckets', 4);
    if (numBuckets % 2 !== 0) fail('num_buckets', `must be even, got ${numBuckets}`);
    maxBucketDistance = int('max_bucket_distance');
    if (maxBucketDistance <= Math.floor(numBuckets / 4))
      fail('max_bucket_distance', `(${maxBucketDistance}) must exceed num_buckets/4 (${Math.floor(numBuckets / 4)})`);
  }

  return {
    modelType,
    hiddenSize,
    numHiddenLayers,
    numAttentionHeads,
    intermediateSize,
    layerNormEps: eps as number,
    convDim,
    convKernel,
    convStride,
    convBias,
    featExtractNorm,
    doStableLayerNorm,
    numConvPosEmbeddings,
    numConvPosEmbeddingGroups,
    featProjLayerNorm,
    numBuckets,
    maxBucketDistance,
  };
}

/** Opens a wav2vec2 / HuBERT / WavLM folder; checks config and every weight it needs. */
export function loadSpeechEncoder(dir: string): SpeechEncoder {
  const cfgFile = path.join(dir, 'config.json');
  const config = parseSpeechEncoderConfig(readJsonObject(cfgFile), cfgFile);
  const preFile = path.join(dir, 'preprocessor_config.json');
  const preprocessor = fs.existsSync(preFile)
    ? { ...readPreprocessorConfig(preFile), source: 'file' as const }
    : { ...PREPROCESSOR_DEFAULTS, source: 'default' as const };

  const weights = Weights.open(dir);
  // Checkpoints saved from a head model (Wav2Vec2ForCTC, WavLMForXVector...) prefix the encoder's keys.
  const probe = 'feature_extractor.conv_layers.0.conv.weight';
  const prefix = !weights.has(probe) && weights.has(`${config.modelType}.${probe}`) ? `${config.modelType}.` : '';
  const ew: EncoderWeights = { cfg: config, weights, prefix, posConvWeight: loadPositionalConvWeight(weights, prefix, config) };
  const builder = config.modelType === 'wavlm' ? buildWavLM : buildWav2Vec2;

  const encoder: SpeechEncoder = {
    dir,
    config,
    numHiddenStates: config.numHiddenLayers + 1,
    hiddenSize: config.hiddenSize,
    preprocessor,
    frameLengths: (sampleLengths) => convFrameLengths(config, sampleLengths),
    build: (g, inputValues, attentionMask, opts = {}) => builder(g, ew, inputValues, attentionMask, opts),
  };

  // Dry build (graph construction only, nothing runs): every tensor is looked up and shape-checked now.
  const g = new Graph();
  encoder.build(g, g.input('input_values', 'float32', ['batch', 'samples']), g.input('attention_mask', 'int64', ['batch', 'samples']));
  return encoder;
}
