/**
 * Parity of Llama, PEFT LoRA and the LoRA training step (loss, gradients, AdamW) against the hf-parity
 * fixtures (README.md sections "Llama", "LoRA", "Training step"). Every stored output gets a row; a stored
 * tensor that no check covers shows up as "not covered" rather than passing silently.
 */
import fs from 'node:fs';
import path from 'node:path';
import { grad } from '../../graph/autodiff.ts';
import { Graph, type Value } from '../../graph/ir.ts';
import { type CompileOptions, type Tensor, compile, tensor } from '../../graph/runtime.ts';
import { SafetensorsCheckpoint } from '../../io/safetensors.ts';
import { UserError } from '../../util/errors.ts';
import { LlamaModel, causalLmLoss } from '../llama.ts';
import { type LoraAdapter, checkAdapter, loadAdapter, loraFeeds, loraInputs, mergeLora } from '../lora.ts';
import { DEFAULT_TOL, type ParityRow, type Tolerance, compareArrays, compareGradient, notCovered } from './compare.ts';

/** AdamW parameters: weight decay alone moves a weight by 1e-5 * p (README). */
const PARAM_TOL: Tolerance = { atol: 5e-7, rtol: 0 };
/** Optimiser moments fed the stored gradients: float32 round-off only. */
const MOMENT_TOL: Tolerance = { atol: 1e-12, rtol: 1e-5 };
/** inv_freq is computed in JS with torch's float32 roundings: expect (near) bit equality. */
const INV_FREQ_TOL: Tolerance = { atol: 0, rtol: 1e-6 };
/** Merged weights: W + s*(B@A) in float32. */
const MERGED_TOL: Tolerance = { atol: 1e-6, rtol: 1e-6 };

type F32 = Float32Array;

/**
 * The optimiser the training-step folder checks. It lives in train/, above models/ in the layers, so the
 * caller passes it in (the CLI passes AdamW); without one its stored steps are reported as not covered.
 */
export interface ParityOptimizer {
  step(params: Record<string, F32>, grads: Record<string, F32>): void;
  state(): { expAvg: Record<string, F32>; expAvgSq: Record<string, F32> };
}
export type ParityOptimizerFactory = (hp: { lr: number; betas: [number, number]; eps: number; weightDecay: number }) => ParityOptimizer;

/** Opens expected.safetensors and remembers which tensors got a row. */
class Expected {
  readonly ck: SafetensorsCheckpoint;
  readonly seen = new Set<string>();
  constructor(
    dir: string,
    readonly folder: string,
    private readonly inputs: ReadonlySet<string>,
  ) {
    const file = path.join(dir, 'expected.safetensors');
    if (!fs.existsSync(file)) throw new UserError('no expected.safetensors', dir);
    this.ck = SafetensorsCheckpoint.open(file);
  }
  has(n: string) {
    return this.ck.has(n);
  }
  f32(n: string): F32 {
    return this.ck.readF32(n);
  }
  i64(n: string): BigInt64Array {
    return this.ck.readI64(n);
  }
  shape(n: string): number[] {
    return this.ck.info(n).shape;
  }
  /** Feed tensor of a stored input. */
  feed(n: string): Tensor {
    const info = this.ck.info(n);
    return info.dtype === 'I64' ? tensor(this.i64(n), info.shape) : tensor(this.f32(n), info.shape);
  }
  mark(n: string) {
    this.seen.add(n);
  }
  /** "not covered" rows for stored outputs nobody compared. */
  uncovered(): ParityRow[] {
    return this.ck
      .names()
      .filter((n) => !this.seen.has(n) && !this.inputs.has(n))
      .map((n) => ({ ...notCovered(this.folder, 'stored output without a check'), tensor: n }));
  }
  close() {
    this.ck.close();
  }
}

/** Element i of a [B, L, ...] tensor is valid when mask[b, t] != 0 (`perPos` elements per position). */
function validBy(mask: BigInt64Array, perPos: number) {
  return (i: number) => mask[Math.floor(i / perPos)] !== 0n;
}

async function runGraph(outputs: Record<string, Value>, feeds: Record<string, Tensor>, opts: CompileOptions, name: string) {
  const s = await compile(outputs, { name, ...opts });
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}

/** Logits (and optionally hidden states) of `model` on ids/mask(/positions) inputs; symbolic batch and length. */
async function llamaOutputs(
  model: LlamaModel,
  feeds: Record<string, Tensor>,
  opts: CompileOptions,
  extra: { hidden?: boolean; adapter?: LoraAdapter } = {},
): Promise<Record<string, Tensor>> {
  const g = new Graph();
  const H = model.config.hiddenSize;
  const inputIds = feeds.input_ids ? g.input('input_ids', 'int64', ['batch', 'seq']) : undefined;
  const inputsEmbeds = feeds.inputs_embeds ? g.input('inputs_embeds', 'float32', ['batch', 'seq', H]) : undefined;
  const attentionMask = feeds.attention_mask ? g.input('attention_mask', 'int64', ['batch', 'seq']) : undefined;
  const positionIds = feeds.position_ids ? g.input('position_ids', 'int64', ['batch', 'seq']) : undefined;
  let lora;
  let allFeeds = feeds;
  if (extra.adapter) {
    lora = loraInputs(g, extra.adapter.config, model.linearModules()).params;
    allFeeds = { ...feeds, ...loraFeeds(extra.adapter.tensors) };
  }
  const out = model.forward(g, { inputIds, inputsEmbeds, attentionMask, positionIds, lora, outputHiddenStates: extra.hidden });
  const outputs: Record<string, Value> = { logits: out.logits };
  if (extra.hidden) {
    out.hiddenStates!.forEach((h, i) => (outputs[`hidden_states.${i}`] = h));
    outputs.last_layer_output_before_final_norm = out.lastLayerOutput;
  }
  return runGraph(outputs, allFeeds, opts, 'llama-parity');
}

const LLAMA_INPUTS = new Set([
  'attention_mask',
  'input_ids',
  'inputs_embeds',
  'custom.position_ids',
  'left.attention_mask',
  'left.input_ids',
  'left.position_ids',
  'generate.prompt_ids',
]);

/** llama/ and llama_untied/: forward variants, hidden states, RoPE frequencies and greedy generation. */
export async function checkLlamaFolder(dir: string, name: string, opts: CompileOptions = {}): Promise<ParityRow[]> {
  const exp = new Expected(dir, name, LLAMA_INPUTS);
  const model = LlamaModel.open(dir);
  const rows: ParityRow[] = [];
  const cmp = (tensorName: string, ours: ArrayLike<number>, valid?: (i: number) => boolean, tol: Tolerance = DEFAULT_TOL) => {
    exp.mark(tensorName);
    rows.push(compareArrays(name, tensorName, ours, exp.f32(tensorName), tol, valid));
  };
  try {
    const V = model.config.vocabSize;
    const H = model.config.hiddenSize;
    cmp('rope_inv_freq', model.invFreq, undefined, INV_FREQ_TOL);

    const mask = exp.i64('attention_mask');
    const main = await llamaOutputs(model, { input_ids: exp.feed('input_ids'), attention_mask: exp.feed('attention_mask') }, opts, { hidden: true });
    cmp('logits', main.logits.data as F32, validBy(mask, V));
    for (let i = 0; exp.has(`hidden_states.${i}`); i++) {
      const ours = main[`hidden_states.${i}`];
      if (ours) cmp(`hidden_states.${i}`, ours.data as F32, validBy(mask, H));
    }
    cmp('last_layer_output_before_final_norm', main.last_layer_output_before_final_norm.data as F32, validBy(mask, H));

    if (exp.has('logits_from_inputs_embeds')) {
      const r = await llamaOutputs(model, { inputs_embeds: exp.feed('inputs_embeds'), attention_mask: exp.feed('attention_mask') }, opts);
      cmp('logits_from_inputs_embeds', r.logits.data as F32, validBy(mask, V));
    }

    // single.{i}: row i alone, unpadded, no attention mask (right padding must not change valid positions)
    const ids = exp.i64('input_ids');
    const L = exp.shape('input_ids')[1];
    for (let i = 0; exp.has(`single.${i}.logits`); i++) {
      const len = exp.shape(`single.${i}.logits`)[1];
      const r = await llamaOutputs(model, { input_ids: tensor(ids.slice(i * L, i * L + len), [1, len]) }, opts);
      cmp(`single.${i}.logits`, r.logits.data as F32);
    }

    if (exp.has('left.logits')) {
      const r = await llamaOutputs(
        model,
        { input_ids: exp.feed('left.input_ids'), attention_mask: exp.feed('left.attention_mask'), position_ids: exp.feed('left.position_ids') },
        opts,
      );
      cmp('left.logits', r.logits.data as F32, validBy(exp.i64('left.attention_mask'), V));
    }
    if (exp.has('custom.logits')) {
      const r = await llamaOutputs(
        model,
        { input_ids: exp.feed('input_ids'), attention_mask: exp.feed('attention_mask'), position_ids: exp.feed('custom.position_ids') },
        opts,
      );
      cmp('custom.logits', r.logits.data as F32, validBy(mask, V));
    }

    if (exp.has('generate.output_ids')) {
      const prompt = Array.from(exp.i64('generate.prompt_ids'), Number);
      const ref = Array.from(exp.i64('generate.output_ids'), Number);
      const ours = await model.generate(prompt, ref.length - prompt.length, { compile: opts });
      exp.mark('generate.output_ids');
      const row = compareArrays(name, 'generate.output_ids', ours.length === ref.length ? ours : [...ours, ...ref].slice(0, ref.length), ref, { atol: 0, rtol: 0 });
      if (ours.length !== ref.length) Object.assign(row, { status: 'FAIL', note: `${ours.length} ids vs ${ref.length}` });
      rows.push(row);
    }
    rows.push(...exp.uncovered());
    return rows;
  } finally {
    exp.close();
    await model.release();
  }
}

/** A path from a config file, relative to the folder holding it. */
function relativeDir(dir: string, p: unknown, key: string, file: string): string {
  if (typeof p !== 'string' || !p) throw new UserError(`"${key}" must name a local folder`, file);
  const d = path.resolve(dir, p);
  if (!fs.existsSync(d)) throw new UserError(`"${key}" points to ${d}, which does not exist`, file);
  return d;
}

/** llama_lora/: unmerged adapter logits, merged weights and logits, base logits. */
export async function checkLoraFolder(dir: string, name: string, opts: CompileOptions = {}): Promise<ParityRow[]> {
  const adapter = loadAdapter(dir);
  const baseDir = relativeDir(dir, adapter.config.baseModelNameOrPath, 'base_model_name_or_path', path.join(dir, 'adapter_config.json'));
  const exp = new Expected(dir, name, new Set(['attention_mask', 'input_ids']));
  const base = LlamaModel.open(baseDir);
  const rows: ParityRow[] = [];
  const cmp = (tensorName: string, ours: ArrayLike<number>, valid?: (i: number) => boolean, tol: Tolerance = DEFAULT_TOL) => {
    exp.mark(tensorName);
    rows.push(compareArrays(name, tensorName, ours, exp.f32(tensorName), tol, valid));
  };
  try {
    const V = base.config.vocabSize;
    const valid = validBy(exp.i64('attention_mask'), V);
    const feeds = { input_ids: exp.feed('input_ids'), attention_mask: exp.feed('attention_mask') };
    checkAdapter(adapter, base.linearModules());

    cmp('logits', (await llamaOutputs(base, feeds, opts, { adapter })).logits.data as F32, valid);
    cmp('base_logits', (await llamaOutputs(base, feeds, opts)).logits.data as F32, valid);

    const mergedWeights = mergeLora(base.weights, adapter, base.linearModules());
    for (const n of exp.ck.names()) {
      if (!n.startsWith('merged.')) continue;
      const w = mergedWeights.get(n.slice('merged.'.length));
      if (w) cmp(n, w, undefined, MERGED_TOL);
    }
    const merged = new LlamaModel(base.config, base.weights, { overrides: mergedWeights });
    cmp('merged_logits', (await llamaOutputs(merged, feeds, opts)).logits.data as F32, valid);
    rows.push(...exp.uncovered());
    return rows;
  } finally {
    exp.close();
  }
}

interface TrainConfig {
  baseDir: string;
  adapterDir: string;
  ignoreIndex: number;
  adamw: { lr: number; betas: [number, number]; eps: number; weightDecay: number };
}

function readTrainConfig(dir: string): TrainConfig {
  const file = path.join(dir, 'train_config.json');
  let c: Record<string, unknown>;
  try {
    c = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    throw new UserError('cannot read train_config.json as JSON', file);
  }
  const a = (c.adamw ?? {}) as Record<string, unknown>;
  const num = (v: unknown, key: string): number => {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new UserError(`"${key}" must be a number`, file);
    return v;
  };
  if (a.amsgrad === true || a.maximize === true) throw new UserError('"adamw": amsgrad/maximize are not supported', file);
  const betas = a.betas as unknown[];
  if (!Array.isArray(betas) || betas.length !== 2) throw new UserError('"adamw.betas" must be a pair of numbers', file);
  return {
    baseDir: relativeDir(dir, c.base_model, 'base_model', file),
    adapterDir: relativeDir(dir, c.adapter, 'adapter', file),
    ignoreIndex: c.ignore_index === undefined ? -100 : num(c.ignore_index, 'ignore_index'),
    adamw: {
      lr: num(a.lr, 'adamw.lr'),
      betas: [num(betas[0], 'adamw.betas'), num(betas[1], 'adamw.betas')],
      eps: num(a.eps, 'adamw.eps'),
      weightDecay: num(a.weight_decay, 'adamw.weight_decay'),
    },
  };
}

const copyParams = (t: LoraAdapter['tensors']): Record<string, F32> =>
  Object.fromEntries([...t].map(([k, v]) => [k, Float32Array.from(v.data)]));

/** llama_lora_grad/: loss, LoRA and input gradients, then two AdamW steps (README "Training step"). */
export async function checkLoraGradFolder(dir: string, name: string, opts: CompileOptions = {}, optimizer?: ParityOptimizerFactory): Promise<ParityRow[]> {
  const tc = readTrainConfig(dir);
  const model = LlamaModel.open(tc.baseDir);
  const adapter = loadAdapter(tc.adapterDir);
  checkAdapter(adapter, model.linearModules());
  const exp = new Expected(dir, name, new Set(['attention_mask', 'embed_source_ids', 'inputs_embeds', 'labels']));
  const rows: ParityRow[] = [];
  const cmp = (tensorName: string, ours: ArrayLike<number>, tol: Tolerance = DEFAULT_TOL, valid?: (i: number) => boolean) => {
    exp.mark(tensorName);
    rows.push(compareArrays(name, tensorName, ours, exp.f32(tensorName), tol, valid));
  };
  const cmpGrad = (tensorName: string, ours: ArrayLike<number>) => {
    exp.mark(tensorName);
    rows.push(compareGradient(name, tensorName, ours, exp.f32(tensorName)));
  };

  // one training graph: loss, per-token loss, logits and d loss / d (inputs_embeds, every LoRA tensor)
  const g = new Graph();
  const H = model.config.hiddenSize;
  const V = model.config.vocabSize;
  const embeds = g.input('inputs_embeds', 'float32', ['batch', 'seq', H]);
  const attentionMask = g.input('attention_mask', 'int64', ['batch', 'seq']);
  const labels = g.input('labels', 'int64', ['batch', 'seq']);
  const { params, inputs } = loraInputs(g, adapter.config, model.linearModules());
  const out = model.forward(g, { inputsEmbeds: embeds, attentionMask, lora: params, layout: 'columns' });
  const { loss, perToken } = causalLmLoss(out.logits, labels, tc.ignoreIndex);
  const keys = [...inputs.keys()];
  const grads = grad(loss, [embeds, ...inputs.values()]);
  const outputs: Record<string, Value> = { loss, token_loss: perToken, logits: out.logits, 'grad.inputs_embeds': grads[0] };
  keys.forEach((k, i) => (outputs[`grad.${k}`] = grads[i + 1]));
  const session = await compile(outputs, { name: 'llama-lora-train', ...opts });

  try {
    const data = { inputs_embeds: exp.feed('inputs_embeds'), attention_mask: exp.feed('attention_mask'), labels: exp.feed('labels') };
    const step = async (p: Record<string, F32>) => {
      const feeds: Record<string, Tensor> = { ...data };
      for (const k of keys) feeds[k] = tensor(p[k], adapter.tensors.get(k)!.shape);
      return session.run(feeds);
    };
    const mask = exp.i64('attention_mask');

    // 1. loss and gradients at the saved adapter
    const params0 = copyParams(adapter.tensors);
    const r0 = await step(params0);
    cmp('loss', r0.loss.data as F32);
    if (exp.has('token_loss')) cmp('token_loss', r0.token_loss.data as F32);
    if (exp.has('logits')) cmp('logits', r0.logits.data as F32, DEFAULT_TOL, validBy(mask, V));
    for (const k of keys) cmpGrad(`grad.${k}`, r0[`grad.${k}`].data as F32);
    cmpGrad('grad.inputs_embeds', r0['grad.inputs_embeds'].data as F32);

    // 2. AdamW step 1, fed the stored gradients (the optimiser in isolation, as the README advises)
    if (optimizer) {
      const opt = optimizer(tc.adamw);
      const p = copyParams(adapter.tensors);
      const storedGrads = (prefix: string) => Object.fromEntries(keys.map((k) => [k, exp.f32(prefix + k)]));
      opt.step(p, storedGrads('grad.'));
      for (const k of keys) {
        cmp(`adamw.step1.${k}`, p[k], PARAM_TOL);
        cmp(`adamw.step1.exp_avg.${k}`, opt.state().expAvg[k], MOMENT_TOL);
        cmp(`adamw.step1.exp_avg_sq.${k}`, opt.state().expAvgSq[k], MOMENT_TOL);
      }

      // 3. forward + backward at our step-1 weights
      const r1 = await step(p);
      cmp('adamw.step2.loss', r1.loss.data as F32);
      for (const k of keys) cmpGrad(`adamw.step2.grad.${k}`, r1[`grad.${k}`].data as F32);

      // 4. AdamW step 2 (stored step-2 gradients), 5. loss at the step-2 weights
      opt.step(p, storedGrads('adamw.step2.grad.'));
      for (const k of keys) cmp(`adamw.step2.${k}`, p[k], PARAM_TOL);
      const r2 = await step(p);
      cmp('adamw.loss_after_step2', r2.loss.data as F32);
    }

    rows.push(...exp.uncovered());
    return rows;
  } finally {
    await session.release();
    exp.close();
  }
}
