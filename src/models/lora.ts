/**
 * PEFT LoRA (peft 0.12.0) for the Linear modules of our models.
 *
 * Files are PEFT's: adapter_config.json and adapter_model.safetensors with keys
 * `base_model.model.<module path>.lora_A.weight` [r, in] and `...lora_B.weight` [out, r].
 * In training the adapter tensors are graph INPUTS (fed every step, differentiated by autodiff) and the
 * model computes y = x W^T + s * (x A^T) B^T with two small matmuls. For inference, mergeLora() folds
 * W' = W + s * B @ A into in-memory weights that LlamaModel takes as overrides.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Graph, Value } from '../graph/ir.ts';
import type { Tensor } from '../graph/runtime.ts';
import { openCheckpoint } from '../io/checkpoint.ts';
import { writeSafetensors } from '../io/safetensors.ts';
import { UserError } from '../util/errors.ts';
import { readRegularFile, writeFileAtomic } from '../util/fs.ts';
import type { LoraParams } from './llama.ts';
import type { Weights } from './weights.ts';

export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_LAYOUT = 'adapter_model.safetensors';
/** What PEFT wrote before it saved safetensors by default. */
const ADAPTER_LAYOUT_TORCH = 'adapter_model.bin';

export interface LoraConfig {
  r: number;
  loraAlpha: number;
  /** module-name suffixes (a set: order is meaningless), or one regex matched against the full module path */
  targetModules: string[] | string;
  useRslora: boolean;
  /** kept for the file; dropout is not applied by our graphs (PEFT's inference semantics) */
  loraDropout: number;
  baseModelNameOrPath: string | null;
  taskType: string | null;
}

/** Module path -> features of a Linear layer, e.g. llamaLinearModules(cfg). */
export type ModuleShapes = ReadonlyMap<string, { in: number; out: number }>;

/** One adapter tensor in memory (float32). */
export interface LoraTensor {
  shape: number[];
  data: Float32Array;
}
/** Adapter tensors by PEFT key. */
export type LoraTensors = Map<string, LoraTensor>;

export interface LoraAdapter {
  config: LoraConfig;
  tensors: LoraTensors;
  /** folder it was loaded from */
  dir?: string;
}

export const loraKey = (module: string, which: 'A' | 'B'): string => `base_model.model.${module}.lora_${which}.weight`;

/** PEFT's scaling: lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA. */
export const loraScaling = (c: Pick<LoraConfig, 'r' | 'loraAlpha' | 'useRslora'>): number =>
  c.useRslora ? c.loraAlpha / Math.sqrt(c.r) : c.loraAlpha / c.r;

/** Reads and validates adapter_config.json (a folder or the file). Unsupported options are one-line UserErrors. */
export function readAdapterConfig(dirOrFile: string): LoraConfig {
  const file = fs.statSync(dirOrFile, { throwIfNoEntry: false })?.isDirectory() ? path.join(dirOrFile, ADAPTER_CONFIG) : dirOrFile;
  let raw: unknown;
  try {
    raw = JSON.parse(readRegularFile(file, 'utf8'));
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new UserError(e instanceof SyntaxError ? 'not valid JSON' : `cannot read: ${(e as Error).message.split('\n')[0]}`, file);
  }
  return parseAdapterConfig(raw, file);
}

export function parseAdapterConfig(raw: unknown, where = ADAPTER_CONFIG): LoraConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new UserError('adapter config must be a JSON object', where);
  const c = raw as Record<string, unknown>;
  const bad = (key: string, msg: string): never => {
    throw new UserError(`"${key}" ${msg}`, where);
  };
  const emptyish = (v: unknown) =>
    v === undefined || v === null || (Array.isArray(v) && v.length === 0) || (typeof v === 'object' && Object.keys(v as object).length === 0);

  if (c.peft_type !== undefined && c.peft_type !== 'LORA') bad('peft_type', `is ${JSON.stringify(c.peft_type)}; only "LORA" adapters are supported`);
  const r = c.r ?? 8;
  if (typeof r !== 'number' || !Number.isInteger(r) || r <= 0) bad('r', `must be a positive integer, got ${JSON.stringify(r)}`);
  const alpha = c.lora_alpha ?? 8;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha <= 0) bad('lora_alpha', `must be a positive number, got ${JSON.stringify(alpha)}`);
  const rs = c.use_rslora ?? false;
  if (typeof rs !== 'boolean') bad('use_rslora', 'must be true or false');
  if ((c.fan_in_fan_out ?? false) !== false) bad('fan_in_fan_out', 'is true; only fan_in_fan_out=false (nn.Linear weights) is supported');
  if ((c.use_dora ?? false) !== false) bad('use_dora', 'is true; DoRA adapters are not supported');
  if ((c.bias ?? 'none') !== 'none') bad('bias', `is ${JSON.stringify(c.bias)}; only "none" is supported`);
  for (const key of ['rank_pattern', 'alpha_pattern', 'layers_to_transform', 'layer_replication', 'modules_to_save'])
    if (!emptyish(c[key])) bad(key, `is ${JSON.stringify(c[key])}; this option is not supported`);
  const drop = c.lora_dropout ?? 0;
  if (typeof drop !== 'number' || drop < 0 || drop >= 1) bad('lora_dropout', `must be a number in [0, 1), got ${JSON.stringify(drop)}`);

  let targets: string[] | string;
  const t = c.target_modules;
  if (t === undefined || t === null) targets = ['q_proj', 'v_proj']; // peft's default for llama
  else if (typeof t === 'string') {
    try {
      new RegExp(t);
    } catch {
      bad('target_modules', `is not a valid regular expression: ${JSON.stringify(t)}`);
    }
    targets = t;
  } else if (Array.isArray(t) && t.length > 0 && t.every((x) => typeof x === 'string' && x.length > 0)) targets = [...new Set(t as string[])].sort();
  else return bad('target_modules', 'must be a non-empty list of module names or a regex string');

  const base = c.base_model_name_or_path;
  return {
    r: r as number,
    loraAlpha: alpha as number,
    targetModules: targets,
    useRslora: rs as boolean,
    loraDropout: drop as number,
    baseModelNameOrPath: typeof base === 'string' ? base : null,
    taskType: typeof c.task_type === 'string' ? c.task_type : null,
  };
}

/** PEFT's check_target_module_exists: a list matches by suffix (".name" or the whole path), a string is a full regex match. */
export function isTargeted(cfg: Pick<LoraConfig, 'targetModules'>, modulePath: string): boolean {
  const t = cfg.targetModules;
  if (typeof t === 'string') return new RegExp(`^(?:${t})$`).test(modulePath);
  return t.some((name) => modulePath === name || modulePath.endsWith(`.${name}`));
}

/** The targeted modules among `modules`; a config that targets none of them is a UserError. */
export function targetedModules(cfg: LoraConfig, modules: ModuleShapes, where = ADAPTER_CONFIG): Map<string, { in: number; out: number }> {
  const out = new Map<string, { in: number; out: number }>();
  for (const [m, s] of modules) if (isTargeted(cfg, m)) out.set(m, s);
  if (out.size === 0) throw new UserError(`"target_modules" ${JSON.stringify(cfg.targetModules)} matches no Linear module of the model`, where);
  return out;
}

/** Loads adapter_config.json + adapter_model.safetensors, or the older adapter_model.bin (tensors as float32). */
export function loadAdapter(dir: string): LoraAdapter {
  const config = readAdapterConfig(dir);
  const file = [ADAPTER_LAYOUT, ADAPTER_LAYOUT_TORCH].map((f) => path.join(dir, f)).find((f) => fs.existsSync(f));
  if (!file) throw new UserError(`no ${ADAPTER_LAYOUT} (or ${ADAPTER_LAYOUT_TORCH}) in the adapter folder`, dir);
  const ck = openCheckpoint(file);
  try {
    const tensors: LoraTensors = new Map();
    for (const info of ck.infos()) {
      if (!/^base_model\.model\..+\.lora_[AB]\.weight$/.test(info.name))
        throw new UserError(`tensor "${info.name}" is not a PEFT LoRA key (base_model.model.<module>.lora_A.weight / lora_B.weight)`, file);
      if (info.shape.length !== 2) throw new UserError(`tensor "${info.name}" has shape [${info.shape.join(', ')}]; LoRA weights are 2-D`, file);
      tensors.set(info.name, { shape: info.shape, data: ck.readF32(info.name) });
    }
    return { config, tensors, dir };
  } finally {
    ck.close();
  }
}

/**
 * Checks adapter tensors against the model's modules: every targeted module needs lora_A [r, in] and
 * lora_B [out, r]; keys for modules that are not targeted are an error (they would be silently ignored).
 */
export function checkAdapter(adapter: LoraAdapter, modules: ModuleShapes): Map<string, { in: number; out: number }> {
  const where = adapter.dir ? path.join(adapter.dir, ADAPTER_LAYOUT) : ADAPTER_LAYOUT;
  const targets = targetedModules(adapter.config, modules, adapter.dir ? path.join(adapter.dir, ADAPTER_CONFIG) : ADAPTER_CONFIG);
  const r = adapter.config.r;
  const expected = new Set<string>();
  for (const [m, s] of targets) {
    for (const [which, shape] of [
      ['A', [r, s.in]],
      ['B', [s.out, r]],
    ] as const) {
      const key = loraKey(m, which);
      expected.add(key);
      const t = adapter.tensors.get(key);
      if (!t) throw new UserError(`missing tensor "${key}"`, where);
      if (t.shape.length !== 2 || t.shape[0] !== shape[0] || t.shape[1] !== shape[1])
        throw new UserError(`tensor "${key}" has shape [${t.shape.join(', ')}], the model and r=${r} imply [${shape.join(', ')}]`, where);
    }
  }
  for (const key of adapter.tensors.keys())
    if (!expected.has(key)) throw new UserError(`tensor "${key}" belongs to no targeted Linear module of the model`, where);
  return targets;
}

/** Writes adapter_config.json and adapter_model.safetensors (each atomically), loadable by PEFT. */
export function saveAdapter(dir: string, tensors: LoraTensors, config: LoraConfig): void {
  fs.mkdirSync(dir, { recursive: true });
  const st: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const [k, t] of tensors) st[k] = { dtype: 'F32', shape: t.shape, data: t.data };
  writeSafetensors(path.join(dir, ADAPTER_LAYOUT), st, { format: 'pt' });
  const json = {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: config.baseModelNameOrPath,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: config.loraAlpha,
    lora_dropout: config.loraDropout,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    peft_type: 'LORA',
    r: config.r,
    rank_pattern: {},
    revision: null,
    target_modules: config.targetModules,
    task_type: config.taskType ?? 'CAUSAL_LM',
    use_dora: false,
    use_rslora: config.useRslora,
  };
  writeFileAtomic(path.join(dir, ADAPTER_CONFIG), `${JSON.stringify(json, null, 2)}\n`);
}

/**
 * Fresh adapter tensors like PEFT's default init: A ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)),
 * B = 0 (so the adapted model starts equal to the base model). `rng` returns uniforms in [0, 1).
 */
export function initLora(config: LoraConfig, modules: ModuleShapes, rng: () => number): LoraTensors {
  const out: LoraTensors = new Map();
  const r = config.r;
  for (const [m, s] of targetedModules(config, modules)) {
    const bound = 1 / Math.sqrt(s.in);
    const a = new Float32Array(r * s.in);
    for (let i = 0; i < a.length; i++) a[i] = (2 * rng() - 1) * bound;
    out.set(loraKey(m, 'A'), { shape: [r, s.in], data: a });
    out.set(loraKey(m, 'B'), { shape: [s.out, r], data: new Float32Array(s.out * r) });
  }
  return out;
}

/**
 * Graph inputs for the adapter (trainable: fed every step), named by PEFT key, and the LoraParams the model
 * builder takes. `inputs` is in module order (A then B), the order gradients are usually requested in.
 */
export function loraInputs(g: Graph, config: LoraConfig, modules: ModuleShapes): { params: LoraParams; inputs: Map<string, Value> } {
  const inputs = new Map<string, Value>();
  const mods = new Map<string, { A: Value; B: Value }>();
  for (const [m, s] of targetedModules(config, modules)) {
    const A = g.input(loraKey(m, 'A'), 'float32', [config.r, s.in]);
    const B = g.input(loraKey(m, 'B'), 'float32', [s.out, config.r]);
    inputs.set(A.name, A);
    inputs.set(B.name, B);
    mods.set(m, { A, B });
  }
  return { params: { scaling: loraScaling(config), modules: mods }, inputs };
}

/** Feeds for loraInputs() from adapter tensors. */
export function loraFeeds(tensors: LoraTensors): Record<string, Tensor> {
  const f: Record<string, Tensor> = {};
  for (const [k, t] of tensors) f[k] = { dtype: 'float32', shape: t.shape, data: t.data };
  return f;
}

/**
 * Merged weights W' = W + s * (B @ A) for every targeted module, in float32 the way peft's merge does it
 * (delta = (B @ A) * scaling, then W += delta). Returns `<module>.weight` -> W', ready as LlamaModel overrides.
 */
export function mergeLora(weights: Weights, adapter: LoraAdapter, modules: ModuleShapes): Map<string, Float32Array> {
  const targets = checkAdapter(adapter, modules);
  const s = Math.fround(loraScaling(adapter.config));
  const r = adapter.config.r;
  const out = new Map<string, Float32Array>();
  for (const [m, sh] of targets) {
    const W = weights.read(`${m}.weight`, [sh.out, sh.in]);
    const A = adapter.tensors.get(loraKey(m, 'A'))!.data;
    const B = adapter.tensors.get(loraKey(m, 'B'))!.data;
    const merged = new Float32Array(W.length);
    const row = new Float32Array(sh.in);
    for (let o = 0; o < sh.out; o++) {
      row.fill(0);
      for (let k = 0; k < r; k++) {
        const b = B[o * r + k];
        const aOff = k * sh.in;
        for (let i = 0; i < sh.in; i++) row[i] += b * A[aOff + i]; // float32 accumulation over k, as a float32 GEMM
      }
      const wOff = o * sh.in;
      for (let i = 0; i < sh.in; i++) merged[wOff + i] = W[wOff + i] + Math.fround(row[i] * s);
    }
    out.set(`${m}.weight`, merged);
  }
  return out;
}
