/**
 * wav2vec 2.0 and HuBERT speech encoders (Hugging Face Wav2Vec2Model / HubertModel, transformers 4.43), frozen,
 * forward only. WavLM (wavlm.ts) shares everything here except its attention.
 *
 * Pipeline (see ../shared/fixtures/hf-parity/README.md, "Audio encoders"):
 *   input_values [B, S] -> conv feature encoder [B, C, T] -> feature projection (LN, Linear) [B, T, H]
 *   -> zero padded frames -> + GELU(positional grouped conv) -> post-LN or pre-LN ("stable") transformer.
 * The frame mask is derived in the graph from the sample-level attention mask with the conv length formula,
 * so batch size and sample count may both be symbolic.
 */
import type { Graph, Value } from '../graph/ir.ts';
import * as O from '../graph/ops.ts';
import { linear } from '../graph/nn.ts';
import { UserError } from '../util/errors.ts';
import type { Weights } from './weights.ts';

export type SpeechModelType = 'wav2vec2' | 'hubert' | 'wavlm';

/** The parsed, validated subset of a HF config.json that the encoders use. */
export interface SpeechEncoderConfig {
  modelType: SpeechModelType;
  hiddenSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  intermediateSize: number;
  layerNormEps: number;
  convDim: number[];
  convKernel: number[];
  convStride: number[];
  convBias: boolean;
  featExtractNorm: 'group' | 'layer';
  doStableLayerNorm: boolean;
  numConvPosEmbeddings: number;
  numConvPosEmbeddingGroups: number;
  /** HuBERT's `feat_proj_layer_norm`; always true for wav2vec2 and WavLM. */
  featProjLayerNorm: boolean;
  /** WavLM only (0 otherwise). */
  numBuckets: number;
  maxBucketDistance: number;
}

export interface SpeechEncoderBuildOptions {
  /** Which hidden states to return (0 .. numHiddenLayers), in this order. Default: all. */
  layers?: number[];
}

export interface SpeechEncoderOutputs {
  /** The requested hidden states, each [B, T, H]. */
  hiddenStates: Value[];
  /** [B, T, H] (= hidden state numHiddenLayers). */
  lastHiddenState: Value;
  /** Feature projection LayerNorm output [B, T, C] (wav2vec2 / WavLM only). */
  extractFeatures?: Value;
  /** Raw conv stack output [B, C, T]. */
  convFeatures: Value;
  /** [B, T] bool, true at valid frames (all true without an attention mask). */
  frameMask: Value;
}

/** What a loaded checkpoint gives the graph builders. */
export interface EncoderWeights {
  cfg: SpeechEncoderConfig;
  weights: Weights;
  /** Tensor name prefix: '' for bare models, 'wav2vec2.' etc. for checkpoints saved from a head model. */
  prefix: string;
  /** Weight-normalised positional conv weight [H, H/G, K], computed at load time. */
  posConvWeight: Float32Array;
}

/**
 * An attention block: `x` is the attention input [B, T, H] (already layer-normed in stable models), `keyBias`
 * the additive key padding bias [B, 1, 1, T] (undefined without a mask). Returns the out-projected output.
 */
export type AttentionFn = (layer: number, x: Value, keyBias: Value | undefined) => Value;

/** torch.finfo(torch.float32).min: HF's additive mask value. */
export const FLOAT32_MIN = -3.4028234663852886e38;

// ---------------------------------------------------------------------------------------------------------
// lengths

/** Output length of one conv layer, floor((L - k) / s) + 1, clamped at 0 (HF's formula; <= 0 means no frame). */
export function convOutLength(len: number, kernel: number, stride: number): number {
  return Math.max(0, Math.floor((len - kernel) / stride) + 1);
}

/** Frame count of the conv stack for each sample count. */
export function convFrameLengths(cfg: SpeechEncoderConfig, sampleLengths: number[]): number[] {
  return sampleLengths.map((n) => cfg.convKernel.reduce((len, k, i) => convOutLength(len, k, cfg.convStride[i]), n));
}

/**
 * The same in the graph, on int64 lengths [B]. Integer Div truncates, so it is applied to the non-negative
 * numerator max(L - k + s, 0): floor((L - k)/s) + 1 = floor((L - k + s)/s), and a clamped 0 stays 0.
 */
export function convFrameLengthsInGraph(cfg: SpeechEncoderConfig, lens: Value): Value {
  let l = lens;
  cfg.convKernel.forEach((k, i) => {
    const s = cfg.convStride[i];
    l = O.div(O.maximum(O.sub(l, k - s), 0), s);
  });
  return l;
}

// ---------------------------------------------------------------------------------------------------------
// building blocks (shared with WavLM)

/**
 * Exact (erf) GELU written as x * (1 + erf(x / sqrt 2)) * 0.5: the form ONNX Runtime's GeluFusion recognises
 * (-> Gelu, or BiasGelu after a bias Add). The `x * (1/sqrt 2)` form of nn.gelu stays 5 separate kernels.
 */
export const gelu = (x: Value): Value => O.mul(O.mul(x, O.add(O.erf(O.div(x, Math.SQRT2)), 1)), 0.5);

export const frozen = (g: Graph, ew: EncoderWeights, name: string, shape: number[]): Value =>
  ew.weights.frozen(g, ew.prefix + name, shape);

/** A scalar int64 holding axis `axis` of x (a constant when the dim is static). */
export function dimScalar(x: Value, axis: number): Value {
  const d = x.shape[axis];
  if (typeof d === 'number') return O.constant(x, [d], [], 'int64');
  return O.gather(O.shapeOf(x), O.constant(x, [axis], [], 'int64'), 0);
}

/** Conv feature encoder: [B, S] float32 -> [B, C, T]. */
export function featureEncoder(g: Graph, ew: EncoderWeights, inputValues: Value): Value {
  const { cfg } = ew;
  let x = O.unsqueeze(inputValues, [1]);
  let cin = 1;
  cfg.convDim.forEach((c, i) => {
    const p = `feature_extractor.conv_layers.${i}`;
    x = g.scope(p, () => {
      const w = frozen(g, ew, `${p}.conv.weight`, [c, cin, cfg.convKernel[i]]);
      const b = cfg.convBias ? frozen(g, ew, `${p}.conv.bias`, [c]) : undefined;
      let y = O.conv1d(x, w, b, { stride: cfg.convStride[i] });
      if (cfg.featExtractNorm === 'group' && i === 0) {
        // GroupNorm(num_groups = C): per (item, channel) over the whole time axis, padding included.
        y = O.instanceNorm(y, frozen(g, ew, `${p}.layer_norm.weight`, [c]), frozen(g, ew, `${p}.layer_norm.bias`, [c]), 1e-5);
      } else if (cfg.featExtractNorm === 'layer') {
        // LayerNorm over channels, eps 1e-5 hard-coded in HF (not layer_norm_eps).
        const t = O.layerNorm(O.transpose(y, [0, 2, 1]), frozen(g, ew, `${p}.layer_norm.weight`, [c]), frozen(g, ew, `${p}.layer_norm.bias`, [c]), 1e-5);
        y = O.transpose(t, [0, 2, 1]);
      }
      return gelu(y);
    });
    cin = c;
  });
  return x;
}

/** Feature projection: conv features [B, C, T] -> hidden [B, T, H], and the LayerNorm output [B, T, C]. */
export function featureProjection(g: Graph, ew: EncoderWeights, conv: Value): { hidden: Value; normed: Value } {
  const { cfg } = ew;
  const c = cfg.convDim[cfg.convDim.length - 1];
  return g.scope('feature_projection', () => {
    const feats = O.transpose(conv, [0, 2, 1]);
    const normed = cfg.featProjLayerNorm
      ? O.layerNorm(feats, frozen(g, ew, 'feature_projection.layer_norm.weight', [c]), frozen(g, ew, 'feature_projection.layer_norm.bias', [c]), cfg.layerNormEps)
      : feats;
    const hidden = linear(
      normed,
      frozen(g, ew, 'feature_projection.projection.weight', [cfg.hiddenSize, c]),
      frozen(g, ew, 'feature_projection.projection.bias', [cfg.hiddenSize]),
    );
    return { hidden, normed };
  });
}

/** Positional conv embedding: GELU(grouped conv, padding K//2, last frame dropped if K is even), [B, T, H]. */
export function positionalConv(g: Graph, ew: EncoderWeights, x: Value): Value {
  const { hiddenSize: h, numConvPosEmbeddings: k, numConvPosEmbeddingGroups: groups } = ew.cfg;
  return g.scope('encoder.pos_conv_embed', () => {
    const w = g.constant(ew.posConvWeight, [h, h / groups, k], 'float32', `${ew.prefix}encoder.pos_conv_embed.conv.weight`);
    const b = frozen(g, ew, 'encoder.pos_conv_embed.conv.bias', [h]);
    let y = O.conv1d(O.transpose(x, [0, 2, 1]), w, b, { pad: Math.floor(k / 2), groups });
    if (k % 2 === 0) y = O.slice(y, [0], [-1], [2]);
    return O.transpose(gelu(y), [0, 2, 1]);
  });
}

/** Positional conv weight with weight norm over dim 2 folded in: w[:, :, k] = g[k] * v[:, :, k] / ||v[:, :, k]||. */
export function loadPositionalConvWeight(weights: Weights, prefix: string, cfg: SpeechEncoderConfig): Float32Array {
  const { hiddenSize: h, numConvPosEmbeddings: k, numConvPosEmbeddingGroups: groups } = cfg;
  const base = `${prefix}encoder.pos_conv_embed.conv`;
  const vShape = [h, h / groups, k];
  if (weights.has(`${base}.weight`)) return weights.read(`${base}.weight`, vShape); // weight norm already removed
  let gName = `${base}.weight_g`;
  let vName = `${base}.weight_v`;
  if (!weights.has(gName) && weights.has(`${base}.parametrizations.weight.original0`)) {
    gName = `${base}.parametrizations.weight.original0`;
    vName = `${base}.parametrizations.weight.original1`;
  }
  if (!weights.has(gName) || !weights.has(vName))
    throw new UserError(`missing tensor "${gName}" (positional conv weight norm: expected weight_g/weight_v or parametrizations.weight.original0/original1)`, weights.where);
  const gv = weights.read(gName, [1, 1, k]);
  const v = weights.read(vName, vShape);
  const out = new Float32Array(v.length);
  const rows = h * (h / groups);
  for (let j = 0; j < k; j++) {
    let ss = 0;
    for (let r = 0; r < rows; r++) ss += v[r * k + j] * v[r * k + j];
    const scale = Math.fround(gv[j] / Math.fround(Math.sqrt(ss)));
    for (let r = 0; r < rows; r++) out[r * k + j] = v[r * k + j] * scale;
  }
  return out;
}

/** FF = output_dense(gelu(intermediate_dense(x))). Node scopes of layer blocks are relative to the layer's scope. */
export function feedForward(g: Graph, ew: EncoderWeights, layer: number, x: Value): Value {
  const { hiddenSize: h, intermediateSize: f } = ew.cfg;
  const p = `encoder.layers.${layer}.feed_forward`;
  return g.scope('feed_forward', () => {
    const y = gelu(linear(x, frozen(g, ew, `${p}.intermediate_dense.weight`, [f, h]), frozen(g, ew, `${p}.intermediate_dense.bias`, [f])));
    return linear(y, frozen(g, ew, `${p}.output_dense.weight`, [h, f]), frozen(g, ew, `${p}.output_dense.bias`, [h]));
  });
}

/** The q/k/v/out projections of layer `layer`'s attention. */
export function attentionProjections(g: Graph, ew: EncoderWeights, layer: number) {
  const h = ew.cfg.hiddenSize;
  const p = `encoder.layers.${layer}.attention`;
  const proj = (n: string) => ({ w: frozen(g, ew, `${p}.${n}.weight`, [h, h]), b: frozen(g, ew, `${p}.${n}.bias`, [h]) });
  return { q: proj('q_proj'), k: proj('k_proj'), v: proj('v_proj'), out: proj('out_proj') };
}

/**
 * Multi-head self-attention with biases, heads batched: softmax(q k^T + bias) v. `scaleQ` applies HF's query
 * scaling (wav2vec2 multiplies by head_dim^-0.5, torch MHA divides by sqrt(head_dim)). `bias` broadcasts to
 * [B, heads, T, T].
 */
export function multiHeadAttention(
  g: Graph,
  ew: EncoderWeights,
  layer: number,
  x: Value,
  bias: Value | undefined,
  scaleQ: (q: Value) => Value,
): Value {
  const { hiddenSize: h, numAttentionHeads: nh } = ew.cfg;
  const hd = h / nh;
  const W = attentionProjections(g, ew, layer);
  return g.scope('attention', () => {
    const q = O.transpose(O.reshape(scaleQ(linear(x, W.q.w, W.q.b)), [0, 0, nh, hd]), [0, 2, 1, 3]); // [B, nh, T, hd]
    const kT = O.transpose(O.reshape(linear(x, W.k.w, W.k.b), [0, 0, nh, hd]), [0, 2, 3, 1]); // [B, nh, hd, T]
    const v = O.transpose(O.reshape(linear(x, W.v.w, W.v.b), [0, 0, nh, hd]), [0, 2, 1, 3]); // [B, nh, T, hd]
    let s = O.matmul(q, kT);
    if (bias) s = O.add(s, bias);
    const ctx = O.matmul(O.softmax(s, -1), v); // [B, nh, T, hd]
    const merged = O.reshape(O.transpose(ctx, [0, 2, 1, 3]), [0, 0, h]);
    return linear(merged, W.out.w, W.out.b);
  });
}

/** wav2vec2 / HuBERT attention: additive key mask (1 - mask) * finfo.min, q * head_dim^-0.5. */
export function wav2vec2Attention(g: Graph, ew: EncoderWeights): AttentionFn {
  const scale = (ew.cfg.hiddenSize / ew.cfg.numAttentionHeads) ** -0.5;
  return (layer, x, keyBias) => multiHeadAttention(g, ew, layer, x, keyBias, (q) => O.mul(q, scale));
}

// ---------------------------------------------------------------------------------------------------------
// the whole model

function checkInputs(inputValues: Value, attentionMask: Value | undefined): void {
  if (inputValues.dtype !== 'float32' || inputValues.rank !== 2)
    throw new Error(`speech encoder: input_values must be float32 [B, S], got ${inputValues.dtype}[${inputValues.shape.join(', ')}]`);
  if (attentionMask) {
    if (attentionMask.rank !== 2 || !['int64', 'int32', 'bool'].includes(attentionMask.dtype))
      throw new Error(`speech encoder: attention_mask must be int64, int32 or bool [B, S], got ${attentionMask.dtype}[${attentionMask.shape.join(', ')}]`);
  }
}

/**
 * Builds the encoder on `inputValues` [B, S]. `attentionMask` [B, S] (1 = valid sample) enables HF's masking:
 * padded frames are zeroed before the positional conv and padded keys get `finfo.min` (WavLM: -inf-like) added.
 * Without it nothing is masked (HF's behaviour for group-norm base models run without a mask).
 */
export function buildSpeechEncoderGraph(
  g: Graph,
  ew: EncoderWeights,
  inputValues: Value,
  attentionMask: Value | undefined,
  opts: SpeechEncoderBuildOptions,
  attention: AttentionFn,
): SpeechEncoderOutputs {
  checkInputs(inputValues, attentionMask);
  const { cfg } = ew;
  const n = cfg.numHiddenLayers;
  const wanted = opts.layers ?? Array.from({ length: n + 1 }, (_, i) => i);
  for (const l of wanted)
    if (!Number.isInteger(l) || l < 0 || l > n) throw new Error(`speech encoder: hidden state ${l} requested, the model has 0..${n}`);

  const convFeatures = featureEncoder(g, ew, inputValues);
  const tScalar = dimScalar(convFeatures, 2);

  let frameMask: Value;
  let keyBias: Value | undefined;
  if (attentionMask) {
    const lens = O.reduceSum(O.cast(attentionMask, 'int64'), [1]); // [B]
    const frames = convFrameLengthsInGraph(cfg, lens);
    const t = O.range(O.constant(tScalar, [0], [], 'int64'), tScalar, O.constant(tScalar, [1], [], 'int64'));
    frameMask = O.less(O.unsqueeze(t, [0]), O.unsqueeze(frames, [1])); // [B, T]
    keyBias = O.unsqueeze(O.where(frameMask, 0, O.constant(inputValues, [FLOAT32_MIN], [], 'float32')), [1, 2]); // [B, 1, 1, T]
  } else {
    const shape = O.concat([O.unsqueeze(dimScalar(inputValues, 0), [0]), O.unsqueeze(tScalar, [0])], 0);
    frameMask = O.fill(shape, [inputValues.shape[0], convFeatures.shape[2]], 1, 'bool');
  }

  const { hidden, normed } = featureProjection(g, ew, convFeatures);
  let x = hidden;
  if (attentionMask) x = O.where(O.unsqueeze(frameMask, [2]), x, 0);

  const ln = (name: string, v: Value) =>
    O.layerNorm(v, frozen(g, ew, `${name}.weight`, [cfg.hiddenSize]), frozen(g, ew, `${name}.bias`, [cfg.hiddenSize]), cfg.layerNormEps);

  x = O.add(x, positionalConv(g, ew, x));
  if (!cfg.doStableLayerNorm) x = g.scope('encoder', () => ln('encoder.layer_norm', x));
  const hs: Value[] = [];
  for (let i = 0; i < n; i++) {
    hs.push(x);
    const p = `encoder.layers.${i}`;
    x = g.scope(p, () => {
      let y = x;
      if (!cfg.doStableLayerNorm) {
        y = ln(`${p}.layer_norm`, O.add(y, attention(i, y, keyBias)));
        return ln(`${p}.final_layer_norm`, O.add(y, feedForward(g, ew, i, y)));
      }
      y = O.add(y, attention(i, ln(`${p}.layer_norm`, y), keyBias));
      return O.add(y, feedForward(g, ew, i, ln(`${p}.final_layer_norm`, y)));
    });
  }
  if (cfg.doStableLayerNorm) x = g.scope('encoder', () => ln('encoder.layer_norm', x));
  hs.push(x);

  return {
    hiddenStates: wanted.map((l) => hs[l]),
    lastHiddenState: x,
    extractFeatures: cfg.modelType === 'hubert' ? undefined : normed,
    convFeatures,
    frameMask,
  };
}

/** wav2vec2 / HuBERT. */
export function buildWav2Vec2(
  g: Graph,
  ew: EncoderWeights,
  inputValues: Value,
  attentionMask?: Value,
  opts: SpeechEncoderBuildOptions = {},
): SpeechEncoderOutputs {
  return buildSpeechEncoderGraph(g, ew, inputValues, attentionMask, opts, wav2vec2Attention(g, ew));
}
