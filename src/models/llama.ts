/**
 * Llama (LlamaForCausalLM as in transformers 4.43.4, modeling_llama.py), built as a graph of engine ops.
 *
 * Read top to bottom like the Python file: config, rotary embedding, attention mask, attention, MLP, decoder
 * layer, model, causal-LM head and loss, then greedy generation with a KV cache. The spec every detail
 * follows is ../shared/fixtures/hf-parity/README.md ("Llama").
 *
 * Performance notes (the frozen model is multi-GB; every op below is chosen to avoid copies):
 *  - Frozen weights are file-backed initializers: ONNX Runtime reads them from the checkpoint file; nothing
 *    passes through JS. Each Linear is one 2-D Gemm on the stored [out, in] weight, never a transposed copy.
 *    `layout: 'rows'` (activations as rows, default) lets ONNX Runtime prepack every weight: fastest products,
 *    ~12 s to open a 1B session. `layout: 'columns'` (activations as columns) reads the weights unpacked in place,
 *    forward and backward alike: one copy in training, sessions open in ~1-2 s (see LlamaForwardOptions).
 *  - cos/sin of RoPE are computed once per forward from the position ids and shared by all layers.
 *  - GQA never materialises repeated K/V: queries are viewed as [B, kv, n_rep, L, D] and multiplied with
 *    K/V viewed as [B, kv, 1, L, D] (a broadcasting MatMul), which is repeat_interleave semantics.
 *  - The additive mask is built once per forward ([B, 1, 1, L, Lk]) and shared by all layers.
 *  - LoRA's low-rank path is two small matmuls, x A^T then B^T; B A is never formed in training.
 *  - Generation uses one session for the prompt (past length 0) and the decode steps: one copy of the weights.
 *  - Training on answers only: causalLmTargets + logitsFor run the lm_head at the scored positions only.
 *
 * Speed and memory of both layouts on Llama-3.2-1B shapes: `npm run bench -- models` (README "Measured here").
 */
import fs from 'node:fs';
import path from 'node:path';
import { Graph, type Shape, type Value } from '../graph/ir.ts';
import {
  INT_MAX,
  add,
  cast,
  concat,
  constInts,
  constant,
  cos,
  div,
  equal,
  fill,
  gather,
  gemm,
  greater,
  int64s,
  matmul,
  mul,
  neg,
  or,
  range,
  reduceMean,
  reshape,
  reshapeTo,
  shapeOf,
  sin,
  slice,
  softmax,
  sqrt,
  transpose,
  unsqueeze,
  where,
} from '../graph/ops.ts';
import { maskedCrossEntropy, rmsNorm, silu } from '../graph/nn.ts';
import { type Int8Weight, type QuantizeMode, type QuantizedWeight, quantize, quantizedConstants, quantizedLinear } from '../graph/quant.ts';
import { type CompileOptions, type CompiledGraph, type Tensor, compile, tensor } from '../graph/runtime.ts';
import { UserError } from '../util/errors.ts';
import { readRegularFile } from '../util/fs.ts';
import { Weights } from './weights.ts';

// ---------------------------------------------------------------------------------------------------------
// configuration (LlamaConfig)

export interface Llama3RopeScaling {
  ropeType: 'llama3';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

export interface LlamaConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** null = default RoPE (no scaling) */
  ropeScaling: Llama3RopeScaling | null;
  attentionBias: boolean;
  mlpBias: boolean;
  tieWordEmbeddings: boolean;
  bosTokenId: number | null;
  /** one id or several (Llama-3 instruct lists several) */
  eosTokenId: number[];
  maxPositionEmbeddings: number;
}

/** Reads and validates `config.json` of a Llama checkpoint folder. Every problem is a one-line UserError. */
export function loadLlamaConfig(dir: string): LlamaConfig {
  const file = fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory() ? path.join(dir, 'config.json') : dir;
  let text: string;
  try {
    text = readRegularFile(file, 'utf8');
  } catch (e) {
    throw new UserError(`cannot read config: ${(e as Error).message.split('\n')[0]}`, file);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new UserError('config.json is not valid JSON', file);
  }
  return parseLlamaConfig(raw, file);
}

/** Validates a parsed config.json object (`where` names the file in errors). */
export function parseLlamaConfig(raw: unknown, where = 'config.json'): LlamaConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new UserError('config must be a JSON object', where);
  const c = raw as Record<string, unknown>;
  const bad = (key: string, msg: string): never => {
    throw new UserError(`"${key}" ${msg}`, where);
  };
  const int = (key: string, dflt?: number): number => {
    const v = c[key] ?? dflt;
    if (v === undefined) return bad(key, 'is missing');
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) return bad(key, `must be a positive integer, got ${JSON.stringify(v)}`);
    return v;
  };
  const num = (key: string, dflt: number, obj: Record<string, unknown> = c, prefix = ''): number => {
    const v = obj[key] ?? dflt;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) return bad(prefix + key, `must be a positive number, got ${JSON.stringify(v)}`);
    return v;
  };
  const flag = (key: string, dflt: boolean): boolean => {
    const v = c[key] ?? dflt;
    if (typeof v !== 'boolean') return bad(key, `must be true or false, got ${JSON.stringify(v)}`);
    return v;
  };

  if (c.model_type !== 'llama') bad('model_type', `is ${JSON.stringify(c.model_type)}; only "llama" is supported`);
  const act = c.hidden_act ?? 'silu';
  if (act !== 'silu') bad('hidden_act', `is ${JSON.stringify(act)}; Llama uses "silu"`);

  const hiddenSize = int('hidden_size');
  const numAttentionHeads = int('num_attention_heads');
  const numKeyValueHeads = int('num_key_value_heads', numAttentionHeads);
  if (numAttentionHeads % numKeyValueHeads !== 0)
    bad('num_key_value_heads', `(${numKeyValueHeads}) must divide num_attention_heads (${numAttentionHeads})`);
  let headDim: number;
  if (c.head_dim !== undefined && c.head_dim !== null) headDim = int('head_dim');
  else {
    if (hiddenSize % numAttentionHeads !== 0) bad('hidden_size', `(${hiddenSize}) is not divisible by num_attention_heads (${numAttentionHeads})`);
    headDim = hiddenSize / numAttentionHeads;
  }
  if (headDim % 2 !== 0) bad('head_dim', `(${headDim}) must be even for rotary embeddings`);

  let ropeScaling: Llama3RopeScaling | null = null;
  const rs = c.rope_scaling;
  if (rs !== undefined && rs !== null) {
    if (typeof rs !== 'object' || Array.isArray(rs)) bad('rope_scaling', 'must be an object or null');
    const r = rs as Record<string, unknown>;
    const typeKey = r.rope_type !== undefined ? 'rope_type' : 'type';
    const type = r[typeKey];
    if (type === 'llama3') {
      ropeScaling = {
        ropeType: 'llama3',
        factor: num('factor', NaN, r, 'rope_scaling.'),
        lowFreqFactor: num('low_freq_factor', NaN, r, 'rope_scaling.'),
        highFreqFactor: num('high_freq_factor', NaN, r, 'rope_scaling.'),
        originalMaxPositionEmbeddings: num('original_max_position_embeddings', NaN, r, 'rope_scaling.'),
      };
      if (ropeScaling.highFreqFactor <= ropeScaling.lowFreqFactor)
        bad('rope_scaling.high_freq_factor', 'must be larger than rope_scaling.low_freq_factor');
    } else if (type !== 'default') {
      bad(`rope_scaling.${typeKey}`, `is ${JSON.stringify(type)}; supported: "llama3", "default" (or rope_scaling null)`);
    }
  }

  let eos: number[] = [];
  const e = c.eos_token_id;
  if (typeof e === 'number') eos = [e];
  else if (Array.isArray(e) && e.every((x) => typeof x === 'number')) eos = e as number[];
  else if (e !== undefined && e !== null) bad('eos_token_id', 'must be an integer, a list of integers or null');

  return {
    vocabSize: int('vocab_size'),
    hiddenSize,
    intermediateSize: int('intermediate_size'),
    numHiddenLayers: int('num_hidden_layers'),
    numAttentionHeads,
    numKeyValueHeads,
    headDim,
    rmsNormEps: num('rms_norm_eps', 1e-6),
    ropeTheta: num('rope_theta', 10000),
    ropeScaling,
    attentionBias: flag('attention_bias', false),
    mlpBias: flag('mlp_bias', false),
    tieWordEmbeddings: flag('tie_word_embeddings', false),
    bosTokenId: typeof c.bos_token_id === 'number' ? c.bos_token_id : null,
    eosTokenId: eos,
    maxPositionEmbeddings: int('max_position_embeddings', 2048),
  };
}

// ---------------------------------------------------------------------------------------------------------
// rotary embedding (LlamaRotaryEmbedding, _compute_default_rope_parameters, _compute_llama3_parameters)

const f32 = Math.fround;

/**
 * inv_freq exactly as transformers computes it in float32 (every intermediate rounded where torch rounds):
 * base_i = 1 / theta^(float(2i)/dim), then the llama3 frequency-dependent scaling. Note that torch evaluates
 * `2*pi / freq` as `freq.reciprocal() * (2*pi)` (Tensor.__rtruediv__), and scalars become float32 operands.
 */
export function ropeInvFreq(cfg: Pick<LlamaConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>): Float32Array {
  const dim = cfg.headDim;
  const base = f32(cfg.ropeTheta);
  const out = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) out[i] = f32(1 / f32(Math.pow(base, f32((2 * i) / dim))));
  const rs = cfg.ropeScaling;
  if (!rs) return out;
  const factor = f32(rs.factor);
  const oldCtx = rs.originalMaxPositionEmbeddings;
  const lowWl = f32(oldCtx / rs.lowFreqFactor);
  const highWl = f32(oldCtx / rs.highFreqFactor);
  const twoPi = f32(2 * Math.PI);
  for (let i = 0; i < out.length; i++) {
    const freq = out[i];
    const wavelen = f32(f32(1 / freq) * twoPi);
    if (wavelen < highWl) continue;
    if (wavelen > lowWl) {
      out[i] = f32(freq / factor);
      continue;
    }
    const ratio = f32(f32(1 / wavelen) * f32(oldCtx));
    const smooth = f32(f32(ratio - f32(rs.lowFreqFactor)) / f32(rs.highFreqFactor - rs.lowFreqFactor));
    out[i] = f32(f32(f32(f32(1 - smooth) * freq) / factor) + f32(smooth * freq));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// forward

/** finfo(float32).min: HF's additive mask value for causal and padded keys. */
export const FLOAT32_MIN = -3.4028234663852886e38;

/** A key/value cache entry of one layer: post-RoPE keys and values, [B, kv_heads, past, head_dim]. */
export interface KeyValue {
  key: Value;
  value: Value;
}

/** LoRA adapters applied inside the graph: module path ("model.layers.0.self_attn.q_proj") -> A [r, in], B [out, r]. */
export interface LoraParams {
  scaling: number;
  modules: ReadonlyMap<string, { A: Value; B: Value }>;
}

export interface LlamaForwardOptions {
  /** [B, L] int64 token ids (or give inputsEmbeds) */
  inputIds?: Value;
  /** [B, L, H] float32 embeddings (fed instead of ids; no scaling is applied, as in HF) */
  inputsEmbeds?: Value;
  /** [B, past + L] int64, 1 = attend, 0 = padding. Default: attend everywhere (causal only). */
  attentionMask?: Value;
  /** [B, L] (or [1, L]) int64. Default: past .. past+L-1 for every row, whatever the mask says (HF). */
  positionIds?: Value;
  lora?: LoraParams;
  /** also return hidden_states.{0..N} (N = final-norm output) */
  outputHiddenStates?: boolean;
  /** [B, K] int64 positions at which to compute logits (default: all L positions) */
  logitsFor?: Value;
  /** per-layer cache from earlier tokens (decode); the mask and default positions account for it */
  pastKeyValues?: KeyValue[];
  /** return presentKeyValues (past + this call's keys/values) */
  useCache?: boolean;
  /** skip the lm_head (e.g. when only hidden states are wanted) */
  noLogits?: boolean;
  /**
   * The activations' layout, which decides how the products use the frozen weights (results are the same either way):
   *  - 'rows' (default): activations are rows [B*L, C] and ONNX Runtime repacks every weight at session
   *    creation (~12 s for a 1B model) for the fastest forward. A backward through it makes ONNX Runtime keep
   *    a second packed copy of every weight.
   *  - 'shared': activations are columns [C, B*L] and every weight is read unpacked, in place, by the forward
   *    and the backward alike: one copy (1B LoRA step: 7 GB instead of 11.6 GB peak), sessions open in ~2 s,
   *    products ~15% slower. Use it for graphs that will be differentiated.
   */
  layout?: 'rows' | 'columns';
}

export interface LlamaForwardOutput {
  /** [B, L, V] float32 (or [B, K, V] with logitsFor) */
  logits: Value;
  /** output of the final RMSNorm, [B, L, H] */
  lastHiddenState: Value;
  /** raw output of the last decoder layer (before the final norm) */
  lastLayerOutput: Value;
  hiddenStates?: Value[];
  presentKeyValues?: KeyValue[];
}

/** A scalar int64 Value holding x.shape[axis] (a constant when static). */
function dimScalar(x: Value, axis: number): Value {
  const d = x.shape[axis];
  if (typeof d === 'number') return constant(x, [d], [], 'int64');
  return gather(shapeOf(x), constant(x, [axis], [], 'int64'), 0);
}

/** x.shape[axis] as an int64 [1] Value (a constant when static), to assemble run-time shapes. */
function dimVector(x: Value, axis: number): Value {
  const d = x.shape[axis];
  if (typeof d === 'number') return int64s(x, [d]);
  return gather(shapeOf(x), int64s(x, [axis]), 0);
}

/** Concatenates int64 [1] pieces into a shape vector (a constant when every piece is). */
function shapeVector(parts: Array<Value | number>): Value {
  const like = parts.find((p): p is Value => typeof p !== 'number')!;
  const consts = parts.map((p) => (typeof p === 'number' ? p : constInts(p)?.[0]));
  if (consts.every((c) => c !== undefined)) return int64s(like, consts as number[]);
  return concat(
    parts.map((p) => (typeof p === 'number' ? int64s(like, [p]) : p)),
    0,
  );
}

/** Names of the Linear modules of one decoder layer with [out, in] features. */
export function llamaLinearModules(cfg: LlamaConfig): Map<string, { in: number; out: number }> {
  const m = new Map<string, { in: number; out: number }>();
  const { hiddenSize: H, intermediateSize: I, numAttentionHeads: nh, numKeyValueHeads: kv, headDim: D } = cfg;
  for (let i = 0; i < cfg.numHiddenLayers; i++) {
    const p = `model.layers.${i}`;
    m.set(`${p}.self_attn.q_proj`, { in: H, out: nh * D });
    m.set(`${p}.self_attn.k_proj`, { in: H, out: kv * D });
    m.set(`${p}.self_attn.v_proj`, { in: H, out: kv * D });
    m.set(`${p}.self_attn.o_proj`, { in: nh * D, out: H });
    m.set(`${p}.mlp.gate_proj`, { in: H, out: I });
    m.set(`${p}.mlp.up_proj`, { in: H, out: I });
    m.set(`${p}.mlp.down_proj`, { in: I, out: H });
  }
  return m;
}

/**
 * How the 2-D residual stream of one forward pass is laid out, and the views between it and [B, L, ...]:
 * rows [B*L, C] (token-major) or columns [C, B*L] (channel-major). Run-time shapes are built once per forward.
 */
class Layout {
  /** [B] and [L] as int64 [1] Values */
  readonly bl: [Value, Value];
  private readonly shapes = new Map<string, Value>();

  constructor(
    private readonly x3: Value,
    private readonly headDim: number,
    readonly columns: boolean,
  ) {
    this.bl = [dimVector(x3, 0), dimVector(x3, 1)];
  }

  /** The run-time shape of [B, L, ...tail] (rows) or [...tail, B, L] (columns), cached. */
  private shape(tail: number[], columns: boolean): { shape: Value; hint: Shape } {
    const key = `${columns}:${tail.join(',')}`;
    if (!this.shapes.has(key)) this.shapes.set(key, this.x3.graph.scope('model', () => shapeVector(columns ? [...tail, ...this.bl] : [...this.bl, ...tail])));
    const [b, l] = [this.x3.shape[0], this.x3.shape[1]];
    return { shape: this.shapes.get(key)!, hint: columns ? [...tail, b, l] : [b, l, ...tail] };
  }

  /** [B, L, C] -> stream */
  enter(x3: Value): Value {
    const rows = reshape(x3, [-1, x3.shape[2] as number]);
    return this.columns ? transpose(rows, [1, 0]) : rows;
  }

  /** stream -> [B, L, C]; `columns` = the layout of `x` (the lm_head emits rows in both layouts) */
  exit(x: Value, columns = this.columns): Value {
    const c = x.shape[columns ? 0 : 1] as number;
    const rows = columns ? transpose(x, [1, 0]) : x;
    const s = this.shape([c], false);
    return reshapeTo(rows, s.shape, s.hint);
  }

  /** stream -> rows [B*L, C] */
  rows(x: Value): Value {
    return this.columns ? transpose(x, [1, 0]) : x;
  }

  /** a projection in the stream -> per head [B, L, n, D] */
  toHeads(x: Value, n: number): Value {
    const s = this.shape([n, this.headDim], this.columns);
    const v = reshapeTo(x, s.shape, s.hint); // rows [B, L, n, D]; columns [n, D, B, L]
    return this.columns ? transpose(v, [2, 3, 0, 1]) : v;
  }

  /** attention output [B, kv, n_rep, L, D] -> stream with channel (kv*n_rep + r)*D + d */
  fromHeads(ctx: Value): Value {
    const c = (ctx.shape[1] as number) * (ctx.shape[2] as number) * (ctx.shape[4] as number);
    return this.columns
      ? reshape(transpose(ctx, [1, 2, 4, 0, 3]), [c, -1]) // [kv, n_rep, D, B, L] -> [C, B*L]
      : reshape(transpose(ctx, [0, 3, 1, 2, 4]), [-1, c]); // [B, L, kv, n_rep, D] -> [B*L, C]
  }

  /** RMSNorm over the channels: w * x / sqrt(mean(x^2) + eps) */
  rmsNorm(x: Value, w: Value, eps: number): Value {
    if (!this.columns) return rmsNorm(x, w, eps);
    const ms = reduceMean(mul(x, x), [0], true);
    return mul(unsqueeze(w, [1]), div(x, sqrt(add(ms, eps))));
  }
}

export interface LlamaModelOptions {
  /** in-memory replacements for checkpoint tensors (e.g. LoRA-merged projection weights), name -> float32 */
  overrides?: ReadonlyMap<string, Float32Array>;
  /**
   * Quantised frozen weights (src/graph/quant.ts): every Linear, the lm_head and the embedding table (int8
   * rows for the lookup in both modes). Norms, LoRA and the loss stay float32; the products run on rows.
   */
  quantize?: QuantizeMode;
}

/** An override tensor (trained weights in place of the checkpoint's), checked against the shape the config implies. */
function checkOverride(name: string, values: Float32Array, shape: number[]): Float32Array {
  if (values.length !== shape.reduce((a, b) => a * b, 1))
    throw new UserError(`override for tensor "${name}" has ${values.length} values, the config implies [${shape.join(', ')}]`);
  return values;
}

export class LlamaModel {
  readonly invFreq: Float32Array;
  private readonly consts = new WeakMap<Graph, Map<string, Value>>();
  private readonly quantConsts = new WeakMap<Graph, Map<string, Value[]>>();
  /** quantised weights by tensor name, made once per model and shared by its graphs */
  private readonly quantized = new Map<string, QuantizedWeight>();
  private session?: { graph: CompiledGraph; layout: LlamaForwardOptions['layout'] };

  constructor(
    readonly config: LlamaConfig,
    readonly weights: Weights,
    readonly opts: LlamaModelOptions = {},
  ) {
    this.invFreq = ropeInvFreq(config);
  }

  /**
   * Opens a Hugging Face Llama folder (config.json + model.safetensors or a sharded index) and checks every
   * tensor the config implies (names and shapes, from the header only): a broken checkpoint fails here.
   */
  static open(dir: string, opts: LlamaModelOptions = {}): LlamaModel {
    const cfg = loadLlamaConfig(dir);
    const model = new LlamaModel(cfg, Weights.open(dir), opts);
    model.checkWeights();
    return model;
  }

  /** Every checkpoint tensor the forward pass reads, with the shape the config implies. */
  expectedTensors(): Map<string, number[]> {
    const c = this.config;
    const t = new Map<string, number[]>();
    t.set('model.embed_tokens.weight', [c.vocabSize, c.hiddenSize]);
    for (const [m, s] of this.linearModules()) {
      t.set(`${m}.weight`, [s.out, s.in]);
      const bias = m.includes('.self_attn.') ? c.attentionBias : c.mlpBias;
      if (bias) t.set(`${m}.bias`, [s.out]);
    }
    for (let i = 0; i < c.numHiddenLayers; i++) {
      t.set(`model.layers.${i}.input_layernorm.weight`, [c.hiddenSize]);
      t.set(`model.layers.${i}.post_attention_layernorm.weight`, [c.hiddenSize]);
    }
    t.set('model.norm.weight', [c.hiddenSize]);
    if (!c.tieWordEmbeddings) t.set('lm_head.weight', [c.vocabSize, c.hiddenSize]);
    return t;
  }

  /** Checks names, shapes and dtypes of the checkpoint against the config (one-line UserError naming the tensor). */
  checkWeights(): void {
    for (const [name, shape] of this.expectedTensors()) {
      const o = this.opts.overrides?.get(name);
      if (o) checkOverride(name, o, shape);
      else this.weights.check(name, shape);
    }
  }

  /** Linear modules by path with their features (for LoRA). */
  linearModules(): Map<string, { in: number; out: number }> {
    return llamaLinearModules(this.config);
  }

  /**
   * Makes `g` use these Values (e.g. trainable graph inputs) for the named checkpoint tensors instead of the
   * frozen file-backed constants: full fine-tuning feeds the LLM's weights like any other parameter.
   */
  bindWeights(g: Graph, values: ReadonlyMap<string, Value>): void {
    if (this.opts.quantize)
      throw new UserError(`--quantize ${this.opts.quantize} freezes the base weights; it cannot be combined with training them (full fine-tuning)`);
    const expected = this.expectedTensors();
    let m = this.consts.get(g);
    if (!m) this.consts.set(g, (m = new Map()));
    for (const [name, v] of values) {
      const shape = expected.get(name);
      if (!shape) throw new Error(`bindWeights: "${name}" is not a tensor of this model`);
      if (v.rank !== shape.length || v.shape.some((d, i) => d !== shape[i])) throw new Error(`bindWeights: ${v} for "${name}" [${shape.join(', ')}]`);
      if (m.has(name)) throw new Error(`bindWeights: "${name}" is already used in this graph`);
      m.set(name, v);
    }
  }

  /** A frozen weight of this model in graph `g` (one Value per graph and name; bound values and overrides win). */
  weight(g: Graph, name: string, shape: number[]): Value {
    let m = this.consts.get(g);
    if (!m) this.consts.set(g, (m = new Map()));
    const hit = m.get(name);
    if (hit) return hit;
    const o = this.opts.overrides?.get(name);
    let v: Value;
    if (o) v = g.constant(checkOverride(name, o, shape), shape, 'float32', name);
    else v = this.weights.frozen(g, name, shape);
    m.set(name, v);
    return v;
  }

  /** The quantised form of a frozen weight [out, in] (made once per model), or undefined when not quantising it. */
  private quantizedWeight(name: string, mode: QuantizeMode, out: number, inF: number): QuantizedWeight | undefined {
    if (!this.opts.quantize || this.opts.overrides?.has(name)) return undefined;
    const key = `${mode}:${name}`;
    let q = this.quantized.get(key);
    if (!q) this.quantized.set(key, (q = quantize(mode, this.weights.read(name, [out, inF]), out, inF)));
    return q;
  }

  /** The graph constants of a quantised weight, made once per graph (the tied table serves lookup and lm_head). */
  private quantizedValues(g: Graph, name: string, q: QuantizedWeight): Value[] {
    let m = this.quantConsts.get(g);
    if (!m) this.quantConsts.set(g, (m = new Map()));
    const key = `${q.mode}:${name}`;
    let c = m.get(key);
    if (!c) m.set(key, (c = quantizedConstants(g, name, q)));
    return c;
  }

  /** y = x W^T for rows x [N, in] with the named weight quantised. */
  private quantizedProduct(x: Value, name: string, q: QuantizedWeight): Value {
    return quantizedLinear(x, q, this.quantizedValues(x.graph, name, q));
  }

  /** The embedding lookup: ids [B, L] int64 -> [B, L, H]. */
  embed(g: Graph, ids: Value): Value {
    const { vocabSize: V, hiddenSize: H } = this.config;
    const name = 'model.embed_tokens.weight';
    const q = this.quantizedWeight(name, 'int8', V, H) as Int8Weight | undefined;
    if (!q) return g.scope('model.embed_tokens', () => gather(this.weight(g, name, [V, H]), ids, 0));
    // int8 rows: gather the codes and their scales, dequantise only the looked-up rows
    return g.scope('model.embed_tokens', () => {
      const [codes, scales] = this.quantizedValues(g, name, q);
      return mul(cast(gather(codes, ids, 0), 'float32'), unsqueeze(gather(scales, ids, 0), [ids.rank]));
    });
  }

  /**
   * A Linear module (PyTorch layout W [out, in]) with its optional LoRA adapter, y = x W^T + b + s (x A^T) B^T,
   * one 2-D Gemm per product on the stored weight (never a transposed copy):
   *  - rows layout, x [N, in]: Gemm(x, W, transB) — ONNX Runtime prepacks W (fastest forward);
   *  - columns layout, x^T [in, N]: y^T = Gemm(W, x^T) — W is read unpacked, and the backward
   *    dx^T = Gemm(W, dy^T, transA) reads the same buffer, so training holds one copy of each weight.
   */
  private linear(s: Layout, x: Value, module: string, inF: number, outF: number, bias: boolean, lora?: LoraParams): Value {
    const g = x.graph;
    const b = bias ? this.weight(g, `${module}.bias`, [outF]) : undefined;
    const ad = lora?.modules.get(module);
    const q = this.opts.quantize && this.quantizedWeight(`${module}.weight`, this.opts.quantize, outF, inF);
    const W = q ? undefined : this.weight(g, `${module}.weight`, [outF, inF]);
    if (!s.columns) {
      const y = q ? (b ? add(this.quantizedProduct(x, `${module}.weight`, q), b) : this.quantizedProduct(x, `${module}.weight`, q)) : gemm(x, W!, b, { transB: true });
      if (!ad) return y;
      return add(y, mul(gemm(gemm(x, ad.A, undefined, { transB: true }), ad.B, undefined, { transB: true }), lora!.scaling)); // peft: result + lora_B(lora_A(x)) * scaling
    }
    let y = gemm(W!, x);
    if (b) y = add(y, unsqueeze(b, [1]));
    if (!ad) return y;
    return add(y, mul(gemm(ad.B, gemm(ad.A, x)), lora!.scaling));
  }

  /** cos and sin of the rotary angles, [B, L, 1, D] each (sin sign-folded for rotate_half, see applyRope). */
  private rotary(positionIds: Value): { cos: Value; sinSigned: Value } {
    const half = this.config.headDim / 2;
    const inv = positionIds.graph.constant(this.invFreq, [half], 'float32', 'model.rotary_emb.inv_freq');
    // freqs = position_ids (float32) * inv_freq (float32): HF's inv_freq @ position_ids has inner dim 1
    const freqs = mul(unsqueeze(cast(positionIds, 'float32'), [2]), inv); // [B, L, D/2]
    const c = cos(freqs);
    const s = sin(freqs);
    // emb = cat(freqs, freqs): cos(emb) = cat(cos, cos). rotate_half(x) * sin = cat(x2, x1) * cat(-sin, sin)
    return { cos: unsqueeze(concat([c, c], -1), [2]), sinSigned: unsqueeze(concat([neg(s), s], -1), [2]) };
  }

  /** x * cos + rotate_half(x) * sin with rotate_half(x) = cat(-x2, x1); x is [B, L, heads, D]. */
  private applyRope(x: Value, rope: { cos: Value; sinSigned: Value }): Value {
    const D = this.config.headDim;
    const x1 = slice(x, [0], [D / 2], [3]);
    const x2 = slice(x, [D / 2], [D], [3]);
    return add(mul(x, rope.cos), mul(concat([x2, x1], 3), rope.sinSigned));
  }

  /**
   * The additive mask [B|1, 1, 1, L, Lk] (0 or finfo.min), as HF's _update_causal_mask for eager attention:
   * key j is hidden from query i (absolute position past + i) when j > past + i or attention_mask[j] == 0.
   */
  private mask(x: Value, past: Value | undefined, attentionMask: Value | undefined): Value {
    const L = dimScalar(x, 1);
    const zero = constant(x, [0], [], 'int64');
    const one = constant(x, [1], [], 'int64');
    const P = past ?? zero;
    const qPos = range(P, add(P, L), one); // [L]
    const kPos = attentionMask ? range(zero, dimScalar(attentionMask, 1), one) : range(zero, add(P, L), one); // [Lk]
    let hidden = greater(unsqueeze(kPos, [0]), unsqueeze(qPos, [1])); // [L, Lk]: future keys
    hidden = unsqueeze(hidden, [0, 1, 2]); // [1, 1, 1, L, Lk]
    if (attentionMask) hidden = or(hidden, unsqueeze(equal(attentionMask, 0), [1, 2, 3])); // [B, 1, 1, L, Lk]
    const minV = constant(x, [FLOAT32_MIN], [], 'float32');
    const zeroF = constant(x, [0], [], 'float32');
    return where(hidden, minV, zeroF);
  }

  /** LlamaAttention (eager): q, k, v projections, RoPE, GQA attention, o_proj. x is the normed stream. */
  private attention(
    g: Graph,
    s: Layout,
    layer: number,
    x: Value,
    rope: { cos: Value; sinSigned: Value },
    mask: Value,
    lora: LoraParams | undefined,
    past: KeyValue | undefined,
  ): { out: Value; present: KeyValue } {
    const { hiddenSize: H, numAttentionHeads: nh, numKeyValueHeads: kv, headDim: D, attentionBias } = this.config;
    const nRep = nh / kv;
    const p = `model.layers.${layer}.self_attn`;
    const proj = (name: string, n: number) => s.toHeads(this.linear(s, x, `${p}.${name}`, H, n * D, attentionBias, lora), n); // [B, L, n, D]
    return g.scope(p, () => {
      const q = proj('q_proj', nh);
      const k = proj('k_proj', kv);
      const v = proj('v_proj', kv);
      const qr = this.applyRope(q, rope);
      const kr = this.applyRope(k, rope);
      // query head h = kv_head * n_rep + r uses kv head floor(h / n_rep) (repeat_kv = repeat_interleave)
      const q5 = transpose(reshape(qr, [0, 0, kv, nRep, D]), [0, 2, 3, 1, 4]); // [B, kv, n_rep, L, D]
      let k4 = transpose(kr, [0, 2, 1, 3]); // [B, kv, L, D]
      let v4 = transpose(v, [0, 2, 1, 3]);
      if (past) {
        k4 = concat([past.key, k4], 2);
        v4 = concat([past.value, v4], 2);
      }
      const k5 = unsqueeze(k4, [2]); // [B, kv, 1, Lk, D]: broadcast over n_rep, no copies
      const v5 = unsqueeze(v4, [2]);
      const scores = add(div(matmul(q5, k5, { transB: true }), Math.sqrt(D)), mask); // [B, kv, n_rep, L, Lk]
      const probs = softmax(scores, -1);
      const ctx = matmul(probs, v5); // [B, kv, n_rep, L, D]
      const merged = s.fromHeads(ctx); // heads concatenated: channel h*D + d
      const out = this.linear(s, merged, `${p}.o_proj`, nh * D, H, attentionBias, lora);
      return { out, present: { key: k4, value: v4 } };
    });
  }

  /** LlamaMLP: down_proj(silu(gate_proj(x)) * up_proj(x)). */
  private mlp(g: Graph, s: Layout, layer: number, x: Value, lora: LoraParams | undefined): Value {
    const { hiddenSize: H, intermediateSize: I, mlpBias } = this.config;
    const p = `model.layers.${layer}.mlp`;
    return g.scope(p, () => {
      const gate = this.linear(s, x, `${p}.gate_proj`, H, I, mlpBias, lora);
      const up = this.linear(s, x, `${p}.up_proj`, H, I, mlpBias, lora);
      return this.linear(s, mul(silu(gate), up), `${p}.down_proj`, I, H, mlpBias, lora);
    });
  }

  /** LlamaForCausalLM.forward. Symbolic batch and sequence dims work throughout. */
  forward(g: Graph, o: LlamaForwardOptions): LlamaForwardOutput {
    const cfg = this.config;
    const { hiddenSize: H, vocabSize: V, rmsNormEps: eps } = cfg;
    if (!!o.inputIds === !!o.inputsEmbeds) throw new Error('LlamaModel.forward: give exactly one of inputIds and inputsEmbeds');
    if (o.pastKeyValues && o.pastKeyValues.length !== cfg.numHiddenLayers)
      throw new Error(`LlamaModel.forward: ${o.pastKeyValues.length} past entries for ${cfg.numHiddenLayers} layers`);
    const x3 = o.inputsEmbeds ?? this.embed(g, o.inputIds!); // [B, L, H]
    const pastLen = o.pastKeyValues ? dimScalar(o.pastKeyValues[0].key, 2) : undefined;

    // quantised products read their own packed layouts, so they always run on rows
    const s = g.scope('model', () => new Layout(x3, cfg.headDim, o.layout === 'columns' && !this.opts.quantize));
    const [rope, mask] = g.scope('model', () => {
      let pos = o.positionIds;
      if (!pos) {
        const start = pastLen ?? constant(x3, [0], [], 'int64');
        pos = unsqueeze(range(start, add(start, dimScalar(x3, 1)), constant(x3, [1], [], 'int64')), [0]); // [1, L]
      }
      return [this.rotary(pos), this.mask(x3, pastLen, o.attentionMask)] as const;
    });

    // The residual stream is 2-D (rows [B*L, H], or columns [H, B*L] with shared weights): one Gemm per Linear.
    let x = s.enter(x3);

    const hiddenStates: Value[] = [];
    const present: KeyValue[] = [];
    for (let i = 0; i < cfg.numHiddenLayers; i++) {
      if (o.outputHiddenStates) hiddenStates.push(i === 0 ? x3 : s.exit(x));
      const p = `model.layers.${i}`;
      const h = g.scope(`${p}.input_layernorm`, () => s.rmsNorm(x, this.weight(g, `${p}.input_layernorm.weight`, [H]), eps));
      const att = this.attention(g, s, i, h, rope, mask, o.lora, o.pastKeyValues?.[i]);
      present.push(att.present);
      x = add(x, att.out);
      const h2 = g.scope(`${p}.post_attention_layernorm`, () =>
        s.rmsNorm(x, this.weight(g, `${p}.post_attention_layernorm.weight`, [H]), eps),
      );
      x = add(x, this.mlp(g, s, i, h2, o.lora));
    }
    const lastLayerOutput = s.exit(x);
    const normedStream = g.scope('model.norm', () => s.rmsNorm(x, this.weight(g, 'model.norm.weight', [H]), eps));
    const normed = s.exit(normedStream);
    if (o.outputHiddenStates) hiddenStates.push(normed);

    let logits = normed;
    if (!o.noLogits) {
      logits = g.scope('lm_head', () => {
        const headName = cfg.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
        const q = this.opts.quantize && this.quantizedWeight(headName, this.opts.quantize, V, H);
        if (q && !o.logitsFor) return s.exit(this.quantizedProduct(normedStream, headName, q), false); // rows [N, V]
        const W = q ? undefined : this.weight(g, headName, [V, H]);
        const product = (x: Value) => (q ? this.quantizedProduct(x, headName, q) : gemm(x, W!, undefined, { transB: true }));
        // logits are rows [N, V] in both layouts (columns: Gemm(h^T, W, transA, transB)); W is prepacked
        if (!o.logitsFor) return s.exit(gemm(normedStream, W!, undefined, { transA: s.columns, transB: true }), false);
        // only the rows b*L + pos of the [B*L, H] states
        const at = o.logitsFor;
        const rowStart = mul(range(constant(x3, [0], [], 'int64'), dimScalar(x3, 0), constant(x3, [1], [], 'int64')), dimScalar(x3, 1));
        const picked = gather(s.rows(normedStream), reshape(add(at, unsqueeze(rowStart, [1])), [-1]), 0); // [B*K, H]
        const shape = shapeVector([s.bl[0], dimVector(at, 1), V]);
        return reshapeTo(product(picked), shape, [at.shape[0], at.shape[1], V]); // [B, K, V]
      });
    }
    return {
      logits,
      lastHiddenState: normed,
      lastLayerOutput,
      hiddenStates: o.outputHiddenStates ? hiddenStates : undefined,
      presentKeyValues: o.useCache ? present : undefined,
    };
  }

  // -------------------------------------------------------------------------------------------------------
  // greedy generation with a KV cache

  /**
   * The generation session (compiled once per weights mode): one graph for prefill and decode, so the weights
   * are loaded once. Inputs: input_ids and position_ids [B, L], past.{i}.key/value [B, kv, P, D] (P = 0 for
   * the prompt), logits_for [B, 1]; outputs: logits [B, 1, V] and present.{i}.key/value [B, kv, P+L, D].
   */
  async generationSession(opts: CompileOptions = {}, layout: LlamaForwardOptions['layout'] = 'rows'): Promise<CompiledGraph> {
    if (this.session && this.session.layout === layout) return this.session.graph;
    await this.release();
    const { numHiddenLayers: N, numKeyValueHeads: kv, headDim: D } = this.config;
    const g = new Graph();
    const ids = g.input('input_ids', 'int64', ['batch', 'seq']);
    const positionIds = g.input('position_ids', 'int64', ['batch', 'seq']);
    const past = Array.from({ length: N }, (_, i) => ({
      key: g.input(`past.${i}.key`, 'float32', ['batch', kv, 'past', D]),
      value: g.input(`past.${i}.value`, 'float32', ['batch', kv, 'past', D]),
    }));
    const logitsFor = g.input('logits_for', 'int64', ['batch', 1]);
    const out = this.forward(g, { inputIds: ids, positionIds, pastKeyValues: past, useCache: true, logitsFor, layout });
    const outputs: Record<string, Value> = { logits: out.logits };
    out.presentKeyValues!.forEach((kvp, i) => {
      outputs[`present.${i}.key`] = kvp.key;
      outputs[`present.${i}.value`] = kvp.value;
    });
    const graph = await compile(outputs, { name: 'llama-generate', ...opts });
    this.session = { graph, layout };
    return graph;
  }

  /**
   * Greedy decoding (HF generate with do_sample=false): prompt ids + up to maxNewTokens argmax tokens, stopping
   * after an eos token (which is kept). Returns the full sequence, like HF's output_ids. The prompt runs once
   * (past length 0), then one token per step against the key/value cache.
   */
  async generate(
    promptIds: ArrayLike<number>,
    maxNewTokens: number,
    opts: { eos?: number | number[] | null; compile?: CompileOptions; layout?: LlamaForwardOptions['layout'] } = {},
  ): Promise<number[]> {
    const session = await this.generationSession(opts.compile, opts.layout);
    const { numHiddenLayers: N, vocabSize: V, numKeyValueHeads: kv, headDim: D } = this.config;
    const eos = new Set(opts.eos === undefined ? this.config.eosTokenId : opts.eos === null ? [] : [opts.eos].flat());
    const out = Array.from(promptIds);
    if (out.length === 0) throw new UserError('generate: the prompt is empty');
    if (maxNewTokens <= 0) return out;
    const ids64 = (xs: number[]) => BigInt64Array.from(xs.map((v) => BigInt(v)));
    const cache: Record<string, Tensor> = {};
    for (let i = 0; i < N; i++)
      for (const kind of ['key', 'value']) cache[`past.${i}.${kind}`] = tensor(new Float32Array(0), [1, kv, 0, D]);
    let fresh = out; // tokens not yet in the cache
    for (let step = 0; ; step++) {
      const start = out.length - fresh.length;
      const res = await session.run({
        input_ids: tensor(ids64(fresh), [1, fresh.length]),
        position_ids: tensor(ids64(fresh.map((_, i) => start + i)), [1, fresh.length]),
        logits_for: tensor(ids64([fresh.length - 1]), [1, 1]),
        ...cache,
      });
      const logits = res.logits.data as Float32Array;
      let best = 0;
      for (let j = 1; j < V; j++) if (logits[j] > logits[best]) best = j; // first maximum, like torch.argmax
      out.push(best);
      if (eos.has(best) || step + 1 >= maxNewTokens) break;
      for (let i = 0; i < N; i++)
        for (const kind of ['key', 'value']) cache[`past.${i}.${kind}`] = res[`present.${i}.${kind}`];
      fresh = [best];
    }
    return out;
  }

  async release(): Promise<void> {
    if (this.session) {
      const s = this.session;
      this.session = undefined;
      await s.graph.release();
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// causal-LM loss

/**
 * HF LlamaForCausalLM loss: logits[:, :-1] scored against labels[:, 1:] (labels aligned with the inputs,
 * -100 = ignored), cross-entropy in float32, token-level mean over the whole batch (sum / number of scored
 * targets). perToken is [B, L-1] (0 where ignored), as HF's token_loss.
 */
export function causalLmLoss(logits: Value, labels: Value, ignoreIndex = -100): { loss: Value; sum: Value; count: Value; perToken: Value } {
  // Shifting the labels left (and ignoring the last position) scores exactly the same pairs as slicing
  // logits[:, :-1], without copying the [B, L-1, V] logits (64 MB for Llama-3 at L=128) or padding its gradient.
  const ignored = fill(shapeVector([dimVector(labels, 0), 1]), [labels.shape[0], 1], ignoreIndex, 'int64');
  const shifted = concat([slice(labels, [1], [INT_MAX], [1]), ignored], 1); // [B, L]: shifted[t] = labels[t+1]
  const { sum, count, perToken } = maskedCrossEntropy(logits, shifted, ignoreIndex);
  return { loss: div(sum, count), sum, count, perToken: slice(perToken, [0], [-1], [1]) };
}

/**
 * The scored (position, target) pairs of HF's shifted loss, computed on the host from the labels: for each
 * row, positions t with labels[t+1] != ignoreIndex, padded to the longest row with position 0 and target
 * ignoreIndex. Feed `positions` as forward's logitsFor and take causalLmLossAt(logits, targets): the
 * lm_head then runs on the answer tokens only (EmoSLLM prompts are long, answers a few tokens), and the
 * loss equals causalLmLoss over the full logits.
 */
export function causalLmTargets(
  labels: ArrayLike<bigint | number>,
  shape: [number, number],
  ignoreIndex = -100,
): { positions: BigInt64Array; targets: BigInt64Array; shape: [number, number] } {
  const [B, L] = shape;
  const rows: Array<Array<[number, bigint]>> = [];
  for (let b = 0; b < B; b++) {
    const r: Array<[number, bigint]> = [];
    for (let t = 0; t + 1 < L; t++) {
      const y = BigInt(labels[b * L + t + 1]);
      if (y !== BigInt(ignoreIndex)) r.push([t, y]);
    }
    rows.push(r);
  }
  const K = Math.max(1, ...rows.map((r) => r.length));
  const positions = new BigInt64Array(B * K);
  const targets = new BigInt64Array(B * K).fill(BigInt(ignoreIndex));
  rows.forEach((r, b) =>
    r.forEach(([t, y], k) => {
      positions[b * K + k] = BigInt(t);
      targets[b * K + k] = y;
    }),
  );
  return { positions, targets, shape: [B, K] };
}

/** The causal-LM loss from logits at causalLmTargets' positions [B, K, V] and its targets [B, K]. */
export function causalLmLossAt(logits: Value, targets: Value, ignoreIndex = -100): { loss: Value; sum: Value; count: Value; perToken: Value } {
  const { sum, count, perToken } = maskedCrossEntropy(logits, targets, ignoreIndex);
  return { loss: div(sum, count), sum, count, perToken };
}
