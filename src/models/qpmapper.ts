/**
 * The query-pooling mapper (QPMapper) of EmoSLLM (Thimonier et al. 2025): it turns the hidden states of a
 * frozen speech encoder into n_q "audio token" embeddings in the LLM's input space.
 *
 * The math follows ../shared/fixtures/hf-parity/README.md, section "Query-pooling mapper", step by step:
 *   1. w = softmax(layer_weights);  h = Σ_l w[l] · hidden_states[l]                      [B, T, d_in]
 *   2. x = in_proj(h)                                                                      [B, T, d]
 *   3. x = concat([queries, x]) along the sequence: the n_q learned queries come first   [B, n_q+T, d]
 *   4. x += pos_emb[0 : n_q+T]   (query i at position i, frame t at position n_q+t)
 *   5. key mask: queries are always attendable, padded frames never (score -inf -> weight exactly 0)
 *   6. num_layers pre-norm transformer layers:
 *        x = x + o_proj(MHA(LN1(x)))  (separate q/k/v/o projections with biases, s = q k^T / sqrt(head_dim))
 *        x = x + fc2(gelu(fc1(LN2(x))))  (exact erf GELU)
 *   7. h_ds = out_proj(final_norm(x)[:, :n_q])                                            [B, n_q, d_llm]
 *
 * Parameters are graph inputs (trainable), so `grad` gives their gradients; B and T may be symbolic.
 *
 * Clips longer than t_max frames: they are an ERROR, not silently cropped. `pos_emb` has n_q + t_max rows, so
 * a clip with T > t_max frames has no position embedding for its last frames. `checkFrameCount` reports this
 * with a clear message and should be called before feeding a batch (training crops clips to 3 s, far below
 * t_max, which EmoSLLM sets to 30 s at its encoder's frame rate). If it is skipped, ONNX
 * Runtime fails in the Gather node named `qpmapper.frame_pos_emb` (index out of bounds).
 *
 * Padded frames: their hidden states are replaced by 0 before anything else (so even NaN/inf garbage there
 * cannot reach the outputs or the gradients), and they are masked out as attention keys. Their gradient is
 * exactly 0.
 */
import fs from 'node:fs';
import type { Graph, Shape, Value } from '../graph/ir.ts';
import { gelu, linear } from '../graph/nn.ts';
import {
  add,
  cast,
  concat,
  constant,
  dimOf,
  equal,
  expand,
  gather,
  int64s,
  layerNorm,
  matmul,
  mul,
  not,
  pad,
  range,
  reduceMean,
  reduceSum,
  reshape,
  shapeOf,
  slice,
  softmax,
  squeeze,
  sub,
  transpose,
  unsqueeze,
  where,
} from '../graph/ops.ts';
import type { Tensor } from '../graph/runtime.ts';
import { FUNCTIONALS, clipFunctionalsGraph } from './functionals.ts';
import { SafetensorsCheckpoint, type TensorInput, writeSafetensors } from '../io/safetensors.ts';
import { UserError } from '../util/errors.ts';
import { readRegularFile } from '../util/fs.ts';

/** Training-set mean and std of each stat-token input (statWidth values each). */
export interface StatNorm {
  mean: Float32Array;
  std: Float32Array;
}

export interface QPMapperConfig {
  /** channels of the encoder hidden states */
  dIn: number;
  /** how many encoder hidden states are mixed (L+1: the embedding output and every layer) */
  numHiddenStates: number;
  /** width of the mapper's transformer */
  dModel: number;
  numHeads: number;
  numLayers: number;
  /** n_q: number of learned queries = audio tokens given to the LLM */
  nQueries: number;
  /** longest clip in frames (pos_emb has nQueries + tMax rows) */
  tMax: number;
  /** the LLM's hidden size */
  dLlm: number;
  /** MLP hidden size = mlpRatio * dModel */
  mlpRatio: number;
  layerNormEps: number;
  /**
   * 0 (the paper's mapper), or the channels of one encoder frame (d_in / frames stacked per mapper frame): then
   * one extra key/value token beside the frames carries the clip's utterance functionals (functionals.ts) of the
   * un-stacked frames, standardised with the training set's statistics and projected to the mapper width
   * (stat_proj).
   */
  statChannels: number;
}

/** Encoder frame rate (wav2vec2 / HuBERT / WavLM: 20 ms hop). */
export const FRAMES_PER_SECOND = 50;

/** The paper's mapper: 32 queries, 2 layers, 8 heads, width 768; t_max covers 30 s of 50 Hz frames. */
export function defaultQPMapperConfig(sizes: Pick<QPMapperConfig, 'dIn' | 'numHiddenStates' | 'dLlm'> & Partial<QPMapperConfig>): QPMapperConfig {
  const cfg: QPMapperConfig = {
    dModel: 768,
    numHeads: 8,
    numLayers: 2,
    nQueries: 32,
    tMax: 30 * FRAMES_PER_SECOND,
    mlpRatio: 4,
    layerNormEps: 1e-5,
    statChannels: 0,
    ...sizes,
  };
  validateConfig(cfg);
  return cfg;
}

function validateConfig(cfg: QPMapperConfig, where = 'QPMapper config'): void {
  const ints: Array<keyof QPMapperConfig> = ['dIn', 'numHiddenStates', 'dModel', 'numHeads', 'numLayers', 'nQueries', 'tMax', 'dLlm', 'mlpRatio'];
  for (const k of ints) {
    const v = cfg[k];
    if (!Number.isInteger(v) || v < 1) throw new UserError(`${k} must be a positive integer, got ${JSON.stringify(v)}`, where);
  }
  if (!Number.isInteger(cfg.statChannels) || cfg.statChannels < 0 || (cfg.statChannels > 0 && cfg.dIn % cfg.statChannels !== 0))
    throw new UserError(`statChannels must be 0 or divide dIn ${cfg.dIn}, got ${JSON.stringify(cfg.statChannels)}`, where);
  if (!(cfg.layerNormEps > 0)) throw new UserError(`layerNormEps must be > 0, got ${cfg.layerNormEps}`, where);
  if (cfg.dModel % cfg.numHeads !== 0) throw new UserError(`dModel ${cfg.dModel} is not divisible by numHeads ${cfg.numHeads}`, where);
}

// JSON form: the snake_case keys of the reference config.json (also stored in saved mappers' __metadata__).
const JSON_KEYS: Array<[keyof QPMapperConfig, string]> = [
  ['dIn', 'd_in'],
  ['numHiddenStates', 'num_hidden_states'],
  ['dModel', 'd_model'],
  ['numHeads', 'num_heads'],
  ['numLayers', 'num_layers'],
  ['nQueries', 'n_queries'],
  ['tMax', 't_max'],
  ['dLlm', 'd_llm'],
  ['mlpRatio', 'mlp_ratio'],
  ['layerNormEps', 'layer_norm_eps'],
  ['statChannels', 'stat_channels'],
];

/** Reads a config in the reference config.json form (snake_case keys; mlp_ratio, layer_norm_eps and stat_channels optional). */
export function qpmapperConfigFromJson(json: unknown, where = 'QPMapper config'): QPMapperConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new UserError('config must be a JSON object', where);
  const o = json as Record<string, unknown>;
  const cfg: Partial<Record<keyof QPMapperConfig, number>> = { mlpRatio: 4, layerNormEps: 1e-5, statChannels: 0 };
  for (const [key, jkey] of JSON_KEYS) {
    const v = o[jkey];
    if (v === undefined) {
      if (cfg[key] === undefined) throw new UserError(`missing "${jkey}"`, where);
      continue;
    }
    if (typeof v !== 'number') throw new UserError(`"${jkey}" must be a number, got ${JSON.stringify(v)}`, where);
    cfg[key] = v;
  }
  const full = cfg as QPMapperConfig;
  validateConfig(full, where);
  // A reference config lists its parameters: they must be exactly ours (catches a different architecture).
  if (o.parameters !== undefined) {
    const ours = JSON.stringify(qpmapperParamShapes(full));
    if (JSON.stringify(o.parameters) !== ours) throw new UserError(`"parameters" do not match the QPMapper of these sizes (expected ${ours})`, where);
  }
  return full;
}

export function qpmapperConfigToJson(cfg: QPMapperConfig): Record<string, number> {
  // stat_channels only when used: the paper's mapper keeps the reference config.json form
  return Object.fromEntries(JSON_KEYS.filter(([key]) => key !== 'statChannels' || cfg.statChannels).map(([key, jkey]) => [jkey, cfg[key]]));
}

/** Every parameter [name, shape] in definition order (= the PyTorch QPMapper.state_dict() order). */
export function qpmapperParamShapes(cfg: QPMapperConfig): Array<[string, number[]]> {
  const d = cfg.dModel;
  const dh = cfg.mlpRatio * d;
  const out: Array<[string, number[]]> = [
    ['layer_weights', [cfg.numHiddenStates]],
    ['queries', [cfg.nQueries, d]],
    ['pos_emb', [cfg.nQueries + cfg.tMax, d]],
    ['in_proj.weight', [d, cfg.dIn]],
    ['in_proj.bias', [d]],
  ];
  if (cfg.statChannels) out.push(['stat_proj.weight', [d, statWidth(cfg)]], ['stat_proj.bias', [d]]);
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `layers.${i}`;
    out.push([`${p}.norm1.weight`, [d]], [`${p}.norm1.bias`, [d]]);
    for (const proj of ['q_proj', 'k_proj', 'v_proj', 'o_proj']) out.push([`${p}.attn.${proj}.weight`, [d, d]], [`${p}.attn.${proj}.bias`, [d]]);
    out.push([`${p}.norm2.weight`, [d]], [`${p}.norm2.bias`, [d]]);
    out.push([`${p}.mlp.fc1.weight`, [dh, d]], [`${p}.mlp.fc1.bias`, [dh]]);
    out.push([`${p}.mlp.fc2.weight`, [d, dh]], [`${p}.mlp.fc2.bias`, [d]]);
  }
  out.push(['final_norm.weight', [d]], ['final_norm.bias', [d]]);
  out.push(['out_proj.weight', [cfg.dLlm, d]], ['out_proj.bias', [cfg.dLlm]]);
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// initialisation

/** A standard normal sample from a uniform [0,1) generator (Box-Muller). */
function normal(rng: () => number): number {
  const u1 = 1 - rng(); // (0, 1]: log stays finite
  const u2 = rng();
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}

/**
 * Fresh parameters, like PyTorch's defaults: Linear weight and bias U(-1/sqrt(in), 1/sqrt(in)) (kaiming-uniform
 * with a=sqrt(5)), LayerNorm weight 1 and bias 0, layer_weights 0 (an even mix of the hidden states), queries
 * and pos_emb N(0, 0.02^2). Deterministic for a given `rng` (uniform in [0, 1)).
 */
export function initQPMapper(cfg: QPMapperConfig, rng: () => number): Record<string, Float32Array> {
  validateConfig(cfg);
  const shapes = new Map(qpmapperParamShapes(cfg));
  const params: Record<string, Float32Array> = {};
  for (const [name, shape] of shapes) {
    const n = shape.reduce((a, b) => a * b, 1);
    const t = new Float32Array(n);
    if (name === 'queries' || name === 'pos_emb') for (let i = 0; i < n; i++) t[i] = 0.02 * normal(rng);
    else if (/norm\d?\.weight$/.test(name)) t.fill(1);
    else if (/norm\d?\.bias$/.test(name) || name === 'layer_weights') t.fill(0);
    else {
      // Linear: the fan-in is the weight's second dim (the bias uses its weight's fan-in)
      const fanIn = shapes.get(name.replace(/\.bias$/, '.weight'))![1];
      const bound = 1 / Math.sqrt(fanIn);
      for (let i = 0; i < n; i++) t[i] = (2 * rng() - 1) * bound;
    }
    params[name] = t;
  }
  return params;
}

// ---------------------------------------------------------------------------------------------------------
// graph

/** One graph input per parameter (trainable), named `prefix + name`; keyed by the parameter name. */
export function qpmapperInputs(g: Graph, cfg: QPMapperConfig, prefix = ''): Record<string, Value> {
  const out: Record<string, Value> = {};
  for (const [name, shape] of qpmapperParamShapes(cfg)) out[name] = g.input(prefix + name, 'float32', shape);
  return out;
}

/** Feeds for the inputs made by `qpmapperInputs` (same prefix). */
export function qpmapperFeeds(cfg: QPMapperConfig, params: Record<string, Float32Array>, prefix = ''): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [name, shape] of qpmapperParamShapes(cfg)) {
    const data = params[name];
    if (!data) throw new UserError(`missing parameter "${name}"`, 'QPMapper');
    out[prefix + name] = { dtype: 'float32', shape, data };
  }
  return out;
}

/** Throws a clear error when a clip is longer than the mapper's t_max (see the module comment). */
export function checkFrameCount(cfg: QPMapperConfig, frames: number, where = 'QPMapper'): void {
  if (frames > cfg.tMax)
    throw new UserError(
      `clip has ${frames} frames but the mapper's t_max is ${cfg.tMax} (${cfg.tMax / FRAMES_PER_SECOND} s at ${FRAMES_PER_SECOND} Hz): ` +
        `crop the clip (the training pipeline crops to 3 s) or use a mapper with a larger t_max`,
      where,
    );
}

/** Rows 0..n-1 of x [B, S, d] along the sequence axis (a Gather, so S may be symbolic and gradients flow). */
function firstRows(x: Value, n: number): Value {
  const idx = constant(x, Array.from({ length: n }, (_, i) => i), [n], 'int64');
  return transpose(gather(transpose(x, [1, 0, 2]), idx, 0), [1, 0, 2]);
}

/** Length of the stat token's input: every functional of every channel. */
export const statWidth = (cfg: Pick<QPMapperConfig, 'statChannels'>): number => FUNCTIONALS.length * cfg.statChannels;

/**
 * The stat token's input: functionals of the un-stacked frames of the layer-averaged states (constant with
 * respect to every parameter, so no gradient flows into the sort). hs [L, B, T, d_in] -> [B, statWidth].
 */
export function mapperFunctionals(cfg: QPMapperConfig, hs: Value, valid: Value): Value {
  const stack = cfg.dIn / cfg.statChannels;
  const h = reshape(reduceMean(hs, [0]), [0, -1, cfg.statChannels]); // [B, T * stack, C]: row-major stacking undone
  const v = reshape(expand(unsqueeze(valid, [2]), concat([shapeOf(valid), int64s(valid, [stack])], 0), [valid.shape[0], valid.shape[1], stack]), [0, -1]);
  return clipFunctionalsGraph(h, v);
}

/** [B, S, d] -> [B, heads, S, head_dim]: channel c belongs to head c // head_dim. */
function splitHeads(x: Value, heads: number, headDim: number): Value {
  return transpose(reshape(x, [0, 0, heads, headDim]), [0, 2, 1, 3]);
}

/**
 * The mapper's forward pass.
 * - `hiddenStates`: the stacked encoder hidden states [L+1, B, T, d_in], or a list of L+1 tensors [B, T, d_in].
 * - `frameMask` [B, T] (int64/int32: 1 = valid, or bool): right padding.
 * Returns h_ds [B, n_q, d_llm].
 */
export function buildQPMapper(
  g: Graph,
  cfg: QPMapperConfig,
  params: Record<string, Value>,
  hiddenStates: Value | Value[],
  frameMask: Value,
  opts: {
    statNorm?: StatNorm;
    /** [B|1, statWidth] z -> z * scale + shift on the standardised stat inputs: a group's own standardisation (models/normalize.ts) */
    statAffine?: { scale: Value; shift: Value };
    /** [B, statWidth] factors on the standardised stat inputs (training dropout) */
    statKeep?: Value;
  } = {},
): Value {
  validateConfig(cfg);
  for (const [name, shape] of qpmapperParamShapes(cfg)) {
    const p = params[name];
    if (!p) throw new Error(`buildQPMapper: missing parameter "${name}"`);
    if (p.graph !== g) throw new Error(`buildQPMapper: parameter "${name}" belongs to another graph`);
    if (p.dtype !== 'float32' || p.rank !== shape.length || p.shape.some((d, i) => d !== shape[i]))
      throw new Error(`buildQPMapper: parameter "${name}" is ${p}, expected float32[${shape.join(', ')}]`);
  }
  const P = (name: string) => params[name];
  const nQ = cfg.nQueries;
  const d = cfg.dModel;
  const headDim = d / cfg.numHeads;
  const eps = cfg.layerNormEps;

  return g.scope('qpmapper', () => {
    // Inputs: [L+1, B, T, d_in] and the validity of each frame.
    const hs = Array.isArray(hiddenStates) ? concat(hiddenStates.map((h) => unsqueeze(h, [0])), 0) : hiddenStates;
    const want: Shape = [cfg.numHiddenStates, '*', '*', cfg.dIn];
    if (hs.rank !== 4 || hs.shape[0] !== cfg.numHiddenStates || hs.shape[3] !== cfg.dIn)
      throw new Error(`buildQPMapper: hidden states are [${hs.shape.join(', ')}], expected [${want.join(', ')}]`);
    if (frameMask.rank !== 2) throw new Error(`buildQPMapper: frame mask is [${frameMask.shape.join(', ')}], expected [B, T]`);
    const valid = frameMask.dtype === 'bool' ? frameMask : not(equal(frameMask, 0)); // [B, T]

    // Padded frames hold garbage: zero them first, so nothing (not even NaN) leaks into outputs or gradients.
    const clean = where(unsqueeze(valid, [0, 3]), hs, 0);

    // 1. softmax-weighted mix of the encoder's hidden states.
    const w = reshape(softmax(P('layer_weights'), 0), [cfg.numHiddenStates, 1, 1, 1]);
    const h = reduceSum(mul(clean, w), [0]); // [B, T, d_in]

    // 2. projection to the mapper width.
    const frames = linear(h, P('in_proj.weight'), P('in_proj.bias')); // [B, T, d]

    // 3 + 4. queries first, then frames; position p gets pos_emb[p]. (Adding the position embeddings to each
    // part before concatenating is the same sum; it lets T stay symbolic.)
    const posEmb = P('pos_emb');
    const queries = add(P('queries'), slice(posEmb, [0], [nQ], [0])); // [n_q, d]
    const T = frames.shape[1];
    const framePos = g.scope('frame_pos_emb', () => {
      // rows n_q .. n_q+T-1 of pos_emb (a Gather: fails at run time if T > t_max, see checkFrameCount)
      const idx =
        typeof T === 'number'
          ? constant(frames, Array.from({ length: T }, (_, t) => nQ + t), [T], 'int64')
          : range(constant(frames, [nQ], [], 'int64'), add(squeeze(dimOf(frames, 1), [0]), nQ), constant(frames, [1], [], 'int64'));
      return gather(posEmb, idx, 0); // [T, d]
    });
    const batch = frameMask.shape[0];
    const queriesB = expand(unsqueeze(queries, [0]), concat([dimOf(frames, 0), int64s(frames, [nQ, d])], 0), [batch, nQ, d]);
    const parts = [queriesB];
    if (cfg.statChannels) {
      if (!opts.statNorm) throw new Error('buildQPMapper: a mapper with a stat token needs the statistics that standardise it');
      const { mean, std } = opts.statNorm;
      parts.push(
        g.scope('stat_token', () => {
          const f = mapperFunctionals(cfg, clean, valid);
          let z = mul(sub(f, g.constant(mean, [statWidth(cfg)], 'float32', 'stat_norm.mean')), g.constant(Float32Array.from(std, (s) => 1 / s), [statWidth(cfg)], 'float32', 'stat_norm.inv_std'));
          if (opts.statAffine) z = add(mul(z, opts.statAffine.scale), opts.statAffine.shift);
          if (opts.statKeep) z = mul(z, opts.statKeep);
          return unsqueeze(linear(z, P('stat_proj.weight'), P('stat_proj.bias')), [1]);
        }),
      );
    }
    parts.push(add(frames, unsqueeze(framePos, [0])));
    let x = concat(parts, 1); // [B, n_q (+1) + T, d]
    const nPre = nQ + (cfg.statChannels ? 1 : 0); // rows before the frames

    // 5. key mask [B, 1, 1, n_q (+1) + T]: true = masked (a padded frame); queries and the stat token never are.
    const padded = cast(pad(cast(not(valid), 'float32'), [0, nPre, 0, 0]), 'bool');
    const maskedKey = unsqueeze(padded, [1, 2]);

    // 6. pre-norm transformer layers. Only the query rows leave the mapper, so the last layer computes the
    // query rows alone (keys and values still come from every position): same result, less work.
    for (let i = 0; i < cfg.numLayers; i++) {
      const p = `layers.${i}`;
      const last = i === cfg.numLayers - 1;
      x = g.scope(p, () => {
        const a = layerNorm(x, P(`${p}.norm1.weight`), P(`${p}.norm1.bias`), eps);
        const rows = last ? firstRows(x, nQ) : x; // the rows whose outputs are needed
        const aRows = last ? firstRows(a, nQ) : a;
        const q = splitHeads(linear(aRows, P(`${p}.attn.q_proj.weight`), P(`${p}.attn.q_proj.bias`)), cfg.numHeads, headDim);
        const k = splitHeads(linear(a, P(`${p}.attn.k_proj.weight`), P(`${p}.attn.k_proj.bias`)), cfg.numHeads, headDim);
        const v = splitHeads(linear(a, P(`${p}.attn.v_proj.weight`), P(`${p}.attn.v_proj.bias`)), cfg.numHeads, headDim);
        const scores = mul(matmul(q, k, { transB: true }), 1 / Math.sqrt(headDim)); // [B, heads, rows, n_q+T]
        const probs = softmax(where(maskedKey, -Infinity, scores), -1); // masked keys: weight exactly 0
        const ctx = reshape(transpose(matmul(probs, v), [0, 2, 1, 3]), [0, 0, d]); // concat heads
        const y = add(rows, linear(ctx, P(`${p}.attn.o_proj.weight`), P(`${p}.attn.o_proj.bias`)));
        const m = layerNorm(y, P(`${p}.norm2.weight`), P(`${p}.norm2.bias`), eps);
        const mlp = linear(gelu(linear(m, P(`${p}.mlp.fc1.weight`), P(`${p}.mlp.fc1.bias`))), P(`${p}.mlp.fc2.weight`), P(`${p}.mlp.fc2.bias`));
        return add(y, mlp);
      });
    }
    // 7. final norm of the query rows, projection to the LLM's embedding width.
    const out = layerNorm(x, P('final_norm.weight'), P('final_norm.bias'), eps);
    return linear(out, P('out_proj.weight'), P('out_proj.bias')); // [B, n_q, d_llm]
  });
}

// ---------------------------------------------------------------------------------------------------------
// files

const METADATA_KEY = 'qpmapper_config';

/** Writes the parameters (reference key names) with the config as JSON in __metadata__, atomically. */
export function saveQPMapper(file: string, cfg: QPMapperConfig, params: Record<string, Float32Array>): void {
  validateConfig(cfg);
  const tensors: Record<string, TensorInput> = {};
  for (const [name, shape] of qpmapperParamShapes(cfg)) {
    const data = params[name];
    if (!data) throw new UserError(`missing parameter "${name}"`, file);
    const n = shape.reduce((a, b) => a * b, 1);
    if (data.length !== n) throw new UserError(`parameter "${name}" has ${data.length} values, shape [${shape.join(', ')}] needs ${n}`, file);
    tensors[name] = { dtype: 'F32', shape, data };
  }
  const extra = Object.keys(params).filter((k) => !(k in tensors));
  if (extra.length) throw new UserError(`not QPMapper parameters: ${extra.join(', ')}`, file);
  writeSafetensors(file, tensors, { format: 'pt', [METADATA_KEY]: JSON.stringify(qpmapperConfigToJson(cfg)) });
}

/**
 * Reads a mapper written by `saveQPMapper` (config from __metadata__), or a folder with config.json +
 * model.safetensors (the reference layout). Every parameter must be present with its shape, and nothing else.
 */
export function loadQPMapper(fileOrDir: string): { config: QPMapperConfig; params: Record<string, Float32Array> } {
  let file = fileOrDir;
  let config: QPMapperConfig | undefined;
  if (fs.existsSync(fileOrDir) && fs.statSync(fileOrDir).isDirectory()) {
    const cfgFile = `${fileOrDir}/config.json`;
    file = `${fileOrDir}/model.safetensors`;
    if (fs.existsSync(cfgFile)) {
      let json: unknown;
      const text = readRegularFile(cfgFile, 'utf8');
      try {
        json = JSON.parse(text);
      } catch (e) {
        throw new UserError(`not valid JSON: ${(e as Error).message}`, cfgFile);
      }
      config = qpmapperConfigFromJson(json, cfgFile);
    }
  }
  const ckpt = SafetensorsCheckpoint.open(file);
  try {
    if (!config) {
      const meta = ckpt.metadata[METADATA_KEY];
      if (meta === undefined) throw new UserError(`no "${METADATA_KEY}" in __metadata__ (not written by saveQPMapper?)`, file);
      let json: unknown;
      try {
        json = JSON.parse(meta);
      } catch (e) {
        throw new UserError(`__metadata__.${METADATA_KEY} is not valid JSON: ${(e as Error).message}`, file);
      }
      config = qpmapperConfigFromJson(json, `${file}: __metadata__.${METADATA_KEY}`);
    }
    const params: Record<string, Float32Array> = {};
    const expected = qpmapperParamShapes(config);
    for (const [name, shape] of expected) {
      if (!ckpt.has(name)) throw new UserError(`missing tensor "${name}"`, file);
      const info = ckpt.info(name);
      if (info.shape.length !== shape.length || info.shape.some((dd, i) => dd !== shape[i]))
        throw new UserError(`tensor "${name}" has shape [${info.shape.join(', ')}], the config implies [${shape.join(', ')}]`, file);
      params[name] = ckpt.readF32(name);
    }
    const names = new Set(expected.map(([n]) => n));
    const extra = ckpt.names().filter((n) => !names.has(n));
    if (extra.length) throw new UserError(`unexpected tensors (not QPMapper parameters): ${extra.slice(0, 5).join(', ')}${extra.length > 5 ? ', ...' : ''}`, file);
    return { config, params };
  } finally {
    ckpt.close();
  }
}
