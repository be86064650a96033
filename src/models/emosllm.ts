/**
 * EmoSLLM (Thimonier et al. 2025) end to end: audio -> frozen speech encoder states -> QPMapper -> n_q audio
 * tokens -> Llama (+ LoRA) reading [audio tokens | chat-templated prompt (+ transcript) | answer] -> label.
 *
 * The three pieces stay separate and swappable (frame-encoders.ts, qpmapper.ts, llama.ts); this file joins
 * them into the two graphs the toolkit runs:
 *   - the training step: the causal-LM loss summed over the answer tokens of a batch, and its gradient with
 *     respect to every trainable parameter (mapper, plus LoRA matrices or the LLM's own weights), in one graph;
 *   - label scoring: log p(answer_c | audio, prompt) for every candidate label c, the shared prefix
 *     [audio | prompt] run once with a key/value cache and the candidate answers batched against it, then a
 *     softmax over the candidates.
 *
 * A trained model is a folder:
 *   emosllm.json              what to load (encoder, LLM, labels, prompt, mapper config, how the LLM was trained)
 *   mapper.safetensors        QPMapper weights (config in __metadata__)
 *   adapter/                  PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors), with LoRA
 *   llm_weights.safetensors   the trained LLM tensors, with llm_train = full
 *   feature_norm.safetensors  per-channel mean/std of the training data's encoder states, when used
 *   llm/                      the built-in tiny LLM's checkpoint (a Hugging Face folder), when it is used
 * Paths in emosllm.json are relative to the folder, so a model folder can be moved or copied as a whole.
 */
import fs from 'node:fs';
import path from 'node:path';
import { LRUCache } from 'lru-cache';
import { grad } from '../graph/autodiff.ts';
import { Graph, type Value } from '../graph/ir.ts';
import { maskedCrossEntropy } from '../graph/nn.ts';
import { add, concat, dimOf, equal, expand, gather, logSoftmax, mul, neg, not, reduceSum, reshape, shapeOf, slice, softmax, sub } from '../graph/ops.ts';
import { type CompileOptions, type CompiledGraph, type Tensor, compile, tensor } from '../graph/runtime.ts';
import type { QuantizeMode } from '../graph/quant.ts';
import { SafetensorsFile, type TensorInput, writeSafetensors } from '../io/safetensors.ts';
import { folderOrCachedHub } from '../io/hub.ts';
import { Rng } from '../util/rng.ts';
import { UserError } from '../util/errors.ts';
import { writeFileAtomic } from '../util/fs.ts';
import type { FrameEncoder } from './encoder.ts';
import { type EncoderSpec, openFrameEncoder, releaseFrameEncoder } from './frame-encoders.ts';
import { LlamaModel, causalLmLossAt } from './llama.ts';
import { type LoraConfig, type LoraTensors, initLora, loadAdapter, loraInputs, saveAdapter, checkAdapter } from './lora.ts';
import { type ChannelStats, type NormalizeMode, applyTransform, groupTransform, isNormalizeMode, statGroupAffine } from './normalize.ts';
import { type Batch, type ClipStates, IGNORE_INDEX, answerTensors } from './processor.ts';
import { DEFAULT_PROMPT, PromptBuilder, type PromptConfig, TextTokenizer } from './prompt.ts';
import {
  type QPMapperConfig,
  type StatNorm,
  buildQPMapper,
  defaultQPMapperConfig,
  initQPMapper,
  loadQPMapper,
  mapperFunctionals,
  qpmapperConfigFromJson,
  qpmapperConfigToJson,
  qpmapperParamShapes,
  saveQPMapper,
  statWidth,
} from './qpmapper.ts';

export const MODEL_FORMAT = 'emosllm-model/1';
export const MODEL_FILE = 'emosllm.json';

/** How the LLM is adapted: LoRA matrices (base frozen), every weight but the token embeddings, or not at all. */
export type LlmTrain = 'lora' | 'full' | 'frozen';

export interface EmoSLLMSpec {
  format: typeof MODEL_FORMAT;
  labels: string[];
  prompt: PromptConfig;
  encoder: EncoderSpec;
  /** Encoder hidden states fed to the mapper (indices into the encoder's hidden states). */
  encoderLayers: number[];
  /** QPMapper config (snake_case, as in its config.json). */
  mapper: Record<string, number>;
  /** The LLM checkpoint folder (relative to the model folder, or absolute). */
  /** `hub`: the pinned Hub id (org/name@commit) the LLM came from, used when `path` does not exist here */
  llm: { path: string; builtin?: 'tiny'; hub?: string };
  llmTrain: LlmTrain;
  /** quantised frozen LLM weights (LlamaModelOptions.quantize); not with llmTrain 'full' */
  quantize?: QuantizeMode;
  lora?: { r: number; alpha: number; targetModules: string[] };
  /**
   * Per-channel normalisation of the encoder states before the mapper, with statistics of the training data
   * (file in the model folder: tensors mean and std, [L, D]); absent = none.
   */
  featureNorm?: string;
  /** group normalisation the model was trained with (models/normalize.ts); absent = none */
  normalize?: NormalizeMode;
  audio: {
    /** crop length of training clips */
    trainCropSeconds: number;
    /** longest clip scored whole (longer ones: centre crop, or windows in predict) */
    maxSeconds: number;
  };
  /** Free-form provenance (data, steps, metrics of the best checkpoint...). */
  info?: Record<string, unknown>;
}

/** Trainable parameters by graph input name: `mapper.<name>`, PEFT LoRA keys, or `llm.<tensor>`. */
export type Params = Record<string, Float32Array>;

const MAPPER_PREFIX = 'mapper.';
const LLM_PREFIX = 'llm.';

/**
 * LLM tensors trained with llm_train = full: every weight but the token embedding matrix (with tied embeddings
 * also the output layer). It is most of a small model (16.4M of the tiny LLM's 16.8M parameters: 128k
 * vocabulary rows), triples the step time when trained, and a label set needs only a handful of its rows.
 */
function fullTrainTensors(llm: LlamaModel): Map<string, number[]> {
  const t = llm.expectedTensors();
  t.delete('model.embed_tokens.weight');
  t.delete('lm_head.weight');
  return t;
}

export interface ScoreResult {
  labels: string[];
  /** log p(answer | audio, prompt) per label */
  scores: number[];
  /** softmax of the scores */
  probabilities: number[];
}

export interface CreateOptions {
  labels: string[];
  encoder: EncoderSpec;
  /** LLM checkpoint folder (absolute, or relative to the cwd) */
  llmDir: string;
  llmBuiltin?: 'tiny';
  /** the pinned Hub id (org/name@commit) llmDir was fetched from */
  llmHub?: string;
  llmTrain: LlmTrain;
  /** quantised frozen LLM weights (LlamaModelOptions.quantize); not with llmTrain 'full' */
  quantize?: QuantizeMode;
  lora?: { r: number; alpha: number; targetModules: string[] };
  /** overrides of the paper's mapper defaults (camelCase QPMapperConfig keys) */
  mapper?: Partial<QPMapperConfig>;
  encoderLayers?: number[];
  prompt?: PromptConfig;
  trainCropSeconds?: number;
  maxSeconds?: number;
  normalize?: NormalizeMode;
  /** a stat token of utterance functionals in the mapper (qpmapper.ts statChannels) */
  statToken?: boolean;
  seed: number;
  compile?: CompileOptions;
}

export class EmoSLLM {
  private trainSession?: Promise<CompiledGraph>;
  private scoreSession?: Promise<CompiledGraph>;
  private functionalsSession?: Promise<CompiledGraph>;
  /** per-channel statistics of the training data's encoder states, [L * D] each (see setFeatureNorm) */
  featureNorm?: { mean: Float32Array; std: Float32Array };
  /** statistics of the stat token's inputs on the training clips (a mapper with statChannels; see setStatNorm) */
  statNorm?: StatNorm;
  /** bounded: a server's clients may send any number of label sets */
  private readonly prompts = new LRUCache<string, PromptBuilder>({ max: 64 });
  readonly shapes: Record<string, number[]> = {};

  private constructor(
    readonly spec: EmoSLLMSpec,
    /** folder paths in the spec are relative to */
    readonly baseDir: string,
    readonly encoder: FrameEncoder,
    readonly llm: LlamaModel,
    readonly tokenizer: TextTokenizer,
    readonly mapperConfig: QPMapperConfig,
    readonly loraConfig: LoraConfig | undefined,
    /** trainable parameters, updated in place by the optimiser */
    readonly params: Params,
    readonly compileOptions: CompileOptions = {},
  ) {
    for (const [n, s] of qpmapperParamShapes(mapperConfig)) this.shapes[MAPPER_PREFIX + n] = s;
    if (spec.llmTrain === 'full') for (const [n, s] of fullTrainTensors(llm)) this.shapes[LLM_PREFIX + n] = s;
    if (loraConfig) for (const k of Object.keys(params)) if (!k.startsWith(MAPPER_PREFIX)) this.shapes[k] = this.loraShape(k);
    for (const k of Object.keys(params)) if (!(k in this.shapes)) throw new Error(`EmoSLLM: unexpected parameter ${k}`);
    for (const k of Object.keys(this.shapes)) if (!params[k]) throw new Error(`EmoSLLM: missing parameter ${k}`);
  }

  get labels(): string[] {
    return this.spec.labels;
  }

  /** The trainable parameter names, in a fixed order (gradients and optimiser state follow it). */
  get paramNames(): string[] {
    return Object.keys(this.shapes);
  }

  /** A fresh model: the mapper (and LoRA) initialised from `seed`, the LLM's own weights as in its checkpoint. */
  static create(o: CreateOptions): EmoSLLM {
    const labels = o.labels;
    if (labels.length < 2) throw new UserError(`need at least two labels, got [${labels.join(', ')}]`);
    if (o.quantize && o.llmTrain === 'full')
      throw new UserError(`--quantize ${o.quantize} freezes the LLM's weights; it cannot be combined with --llm-train full (use lora or frozen)`);
    const llmDir = path.resolve(o.llmDir);
    const llm = LlamaModel.open(llmDir, { quantize: o.quantize });
    const tokenizer = TextTokenizer.load(llmDir);
    const encoder = openFrameEncoder(o.encoder, process.cwd(), o.compile);
    const layers = o.encoderLayers ?? Array.from({ length: encoder.numHiddenStates }, (_, i) => i);
    for (const l of layers)
      if (!Number.isInteger(l) || l < 0 || l >= encoder.numHiddenStates)
        throw new UserError(`encoder layer ${l} is out of range: the encoder has hidden states 0..${encoder.numHiddenStates - 1}`);
    const maxSeconds = o.maxSeconds ?? 30;
    const mapperConfig = defaultQPMapperConfig({
      dIn: encoder.hiddenSize,
      numHiddenStates: layers.length,
      dLlm: llm.config.hiddenSize,
      tMax: Math.ceil(maxSeconds * encoder.frameRate),
      // the functionals are taken over the encoder's own frames: a built-in encoder's stacking is undone
      statChannels: o.statToken ? encoder.hiddenSize / (o.encoder.kind === 'fbank' ? o.encoder.stack : 1) : 0,
      ...o.mapper,
    });
    const rng = new Rng(`emosllm:${o.seed}`);
    const params: Params = {};
    for (const [n, v] of Object.entries(initQPMapper(mapperConfig, () => rng.next()))) params[MAPPER_PREFIX + n] = v;
    let loraConfig: LoraConfig | undefined;
    if (o.llmTrain === 'lora') {
      const l = o.lora ?? { r: 8, alpha: 16, targetModules: ['q_proj', 'v_proj'] };
      loraConfig = { r: l.r, loraAlpha: l.alpha, targetModules: l.targetModules, useRslora: false, loraDropout: 0, baseModelNameOrPath: null, taskType: 'CAUSAL_LM' };
      for (const [k, t] of initLora(loraConfig, llm.linearModules(), () => rng.next())) params[k] = t.data;
    } else if (o.llmTrain === 'full') {
      for (const name of fullTrainTensors(llm).keys()) params[LLM_PREFIX + name] = llm.weights.read(name);
    }
    const spec: EmoSLLMSpec = {
      format: MODEL_FORMAT,
      labels: [...labels],
      prompt: o.prompt ?? DEFAULT_PROMPT,
      encoder: o.encoder.kind === 'hf' ? { ...o.encoder, path: path.resolve(o.encoder.path) } : o.encoder,
      encoderLayers: layers,
      mapper: qpmapperConfigToJson(mapperConfig),
      llm: { path: llmDir, ...(o.llmBuiltin ? { builtin: o.llmBuiltin } : {}), ...(o.llmHub ? { hub: o.llmHub } : {}) },
      llmTrain: o.llmTrain,
      ...(o.llmTrain === 'lora' ? { lora: o.lora ?? { r: 8, alpha: 16, targetModules: ['q_proj', 'v_proj'] } } : {}),
      normalize: o.normalize ?? 'none',
      audio: { trainCropSeconds: o.trainCropSeconds ?? 3, maxSeconds },
    };
    const m = new EmoSLLM(spec, process.cwd(), encoder, llm, tokenizer, mapperConfig, loraConfig, params, o.compile);
    m.prompt(labels); // label set problems (duplicates, labels that tokenise alike) fail now, not mid-training
    return m;
  }

  /** Opens a trained model folder (see the file comment). Every problem is a one-line UserError naming the file. */
  static load(dir: string, opts: CompileOptions = {}): EmoSLLM {
    const file = path.join(dir, MODEL_FILE);
    if (!fs.existsSync(file)) throw new UserError(`not an emosllm model folder (no ${MODEL_FILE})`, dir);
    let spec: EmoSLLMSpec;
    try {
      spec = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (e) {
      throw new UserError(`not valid JSON: ${(e as Error).message}`, file);
    }
    if (spec.format !== MODEL_FORMAT) throw new UserError(`format is ${JSON.stringify(spec.format)}, expected "${MODEL_FORMAT}"`, file);
    if (!Array.isArray(spec.labels) || spec.labels.length < 2 || spec.labels.some((l) => typeof l !== 'string'))
      throw new UserError('"labels" must list at least two label strings', file);
    if (spec.normalize !== undefined && !isNormalizeMode(spec.normalize)) throw new UserError(`"normalize" must be none, speaker or recording, got ${JSON.stringify(spec.normalize)}`, file);
    if (spec.normalize !== undefined && spec.normalize !== 'none' && !spec.featureNorm) throw new UserError(`"normalize" ${spec.normalize} needs "featureNorm" (the training statistics)`, file);
    if (!['lora', 'full', 'frozen'].includes(spec.llmTrain)) throw new UserError(`"llmTrain" must be lora, full or frozen, got ${JSON.stringify(spec.llmTrain)}`, file);
    const llmDir = folderOrCachedHub(path.resolve(dir, spec.llm?.path ?? ''), spec.llm?.hub);
    if (!fs.existsSync(path.join(llmDir, 'config.json'))) throw new UserError(`the LLM folder ${llmDir} has no config.json`, file);
    const llm = LlamaModel.open(llmDir);
    const tokenizer = TextTokenizer.load(llmDir);
    const encoder = openFrameEncoder(spec.encoder, dir, opts);
    const { config: mapperConfig, params: mp } = loadQPMapper(path.join(dir, 'mapper.safetensors'));
    const want = qpmapperConfigFromJson(spec.mapper, `${file}: mapper`);
    if (JSON.stringify(qpmapperConfigToJson(want)) !== JSON.stringify(qpmapperConfigToJson(mapperConfig)))
      throw new UserError('mapper.safetensors does not hold the mapper emosllm.json describes', dir);
    if (mapperConfig.dIn !== encoder.hiddenSize || mapperConfig.numHiddenStates !== spec.encoderLayers.length)
      throw new UserError(`the mapper reads ${mapperConfig.numHiddenStates} x ${mapperConfig.dIn} encoder states, the encoder gives ${spec.encoderLayers.length} x ${encoder.hiddenSize}`, file);
    if (mapperConfig.dLlm !== llm.config.hiddenSize) throw new UserError(`the mapper outputs width ${mapperConfig.dLlm}, the LLM's hidden size is ${llm.config.hiddenSize}`, file);
    const params: Params = {};
    for (const [n, v] of Object.entries(mp)) params[MAPPER_PREFIX + n] = v;
    let loraConfig: LoraConfig | undefined;
    if (spec.llmTrain === 'lora') {
      const adapter = loadAdapter(path.join(dir, 'adapter'));
      checkAdapter(adapter, llm.linearModules());
      loraConfig = adapter.config;
      for (const [k, t] of adapter.tensors) params[k] = t.data;
    } else if (spec.llmTrain === 'full') {
      const wfile = path.join(dir, 'llm_weights.safetensors');
      const f = SafetensorsFile.open(wfile);
      try {
        for (const [name, shape] of fullTrainTensors(llm)) {
          if (!f.has(name)) throw new UserError(`missing tensor "${name}"`, wfile);
          const info = f.info(name);
          if (info.shape.join(',') !== shape.join(',')) throw new UserError(`tensor "${name}" has shape [${info.shape}], the LLM needs [${shape}]`, wfile);
          params[LLM_PREFIX + name] = f.readF32(name);
        }
      } finally {
        f.close();
      }
    }
    const m = new EmoSLLM(spec, dir, encoder, llm, tokenizer, mapperConfig, loraConfig, params, opts);
    if (spec.featureNorm) {
      const file = path.join(dir, spec.featureNorm);
      const f = SafetensorsFile.open(file);
      try {
        const n = mapperConfig.numHiddenStates * mapperConfig.dIn;
        for (const k of ['mean', 'std']) if (!f.has(k) || f.info(k).shape.reduce((a, b) => a * b, 1) !== n) throw new UserError(`needs tensors mean and std of ${n} values`, file);
        m.setFeatureNorm(f.readF32('mean'), f.readF32('std'));
        if (mapperConfig.statChannels) {
          const w = statWidth(mapperConfig);
          for (const k of ['stat_mean', 'stat_std']) if (!f.has(k) || f.info(k).shape.reduce((a, b) => a * b, 1) !== w) throw new UserError(`the mapper's stat token needs tensors stat_mean and stat_std of ${w} values`, file);
          m.setStatNorm(f.readF32('stat_mean'), f.readF32('stat_std'));
        }
      } finally {
        f.close();
      }
    }
    m.prompt(spec.labels);
    return m;
  }

  /** Writes the model folder (each file atomically); the LLM is referenced, never copied (see the file comment). */
  save(dir: string, info?: Record<string, unknown>): void {
    fs.mkdirSync(dir, { recursive: true });
    const abs = path.resolve(dir);
    const mapper: Params = {};
    for (const [k, v] of Object.entries(this.params)) if (k.startsWith(MAPPER_PREFIX)) mapper[k.slice(MAPPER_PREFIX.length)] = v;
    saveQPMapper(path.join(dir, 'mapper.safetensors'), this.mapperConfig, mapper);
    if (this.loraConfig) {
      const t: LoraTensors = new Map();
      for (const k of this.paramNames) if (!k.startsWith(MAPPER_PREFIX)) t.set(k, { shape: this.shapes[k], data: this.params[k] });
      saveAdapter(path.join(dir, 'adapter'), t, { ...this.loraConfig, baseModelNameOrPath: this.spec.llm.hub?.split('@')[0] ?? (path.relative(path.join(abs, 'adapter'), this.llmDir()) || '.') }); // PEFT names a Hub base model by its id
    }
    if (this.spec.llmTrain === 'full') {
      writeSafetensors(
        path.join(dir, 'llm_weights.safetensors'),
        this.paramNames.filter((k) => k.startsWith(LLM_PREFIX)).map((k) => ({ name: k.slice(LLM_PREFIX.length), dtype: 'F32' as const, shape: this.shapes[k], data: this.params[k] })),
        { format: 'pt' },
      );
    }
    if (this.featureNorm) {
      const shape = [this.mapperConfig.numHiddenStates, this.mapperConfig.dIn];
      const stats: Record<string, TensorInput> = this.statNorm
        ? { stat_mean: { dtype: 'F32' as const, shape: [this.statNorm.mean.length], data: this.statNorm.mean }, stat_std: { dtype: 'F32' as const, shape: [this.statNorm.std.length], data: this.statNorm.std } }
        : {};
      writeSafetensors(path.join(dir, 'feature_norm.safetensors'), { mean: { dtype: 'F32', shape, data: this.featureNorm.mean }, std: { dtype: 'F32', shape, data: this.featureNorm.std }, ...stats });
    }
    const rel = (p: string) => {
      const r = path.relative(abs, p);
      return r === '' ? '.' : r;
    };
    const spec: EmoSLLMSpec = {
      ...this.spec,
      encoder: this.spec.encoder.kind === 'hf' ? { ...this.spec.encoder, path: rel(path.resolve(this.baseDir, this.spec.encoder.path)) } : this.spec.encoder,
      llm: { ...this.spec.llm, path: rel(this.llmDir()) },
      ...(this.featureNorm ? { featureNorm: 'feature_norm.safetensors' } : {}),
      ...(info ? { info } : {}),
    };
    writeFileAtomic(path.join(dir, MODEL_FILE), `${JSON.stringify(spec, null, 2)}\n`);
  }

  llmDir(): string {
    return folderOrCachedHub(path.resolve(this.baseDir, this.spec.llm.path), this.spec.llm.hub);
  }

  private loraShape(key: string): number[] {
    const m = /^base_model\.model\.(.+)\.lora_([AB])\.weight$/.exec(key);
    const mod = m && this.llm.linearModules().get(m[1]);
    if (!m || !mod || !this.loraConfig) throw new Error(`not a LoRA key: ${key}`);
    return m[2] === 'A' ? [this.loraConfig.r, mod.in] : [mod.out, this.loraConfig.r];
  }

  /** The prompt for a label set (an LRU of 64); the label set is the model's own unless the user passes one. */
  prompt(labels: string[] = this.spec.labels): PromptBuilder {
    const key = JSON.stringify(labels);
    let p = this.prompts.get(key);
    if (!p) {
      p = new PromptBuilder(this.tokenizer, labels, this.spec.prompt);
      this.prompts.set(key, p);
    }
    return p;
  }

  /** Sets the per-channel normalisation of encoder states ([L * D] mean and std); before the first graph is built. */
  setFeatureNorm(mean: Float32Array, std: Float32Array): void {
    const n = this.mapperConfig.numHiddenStates * this.mapperConfig.dIn;
    if (mean.length !== n || std.length !== n) throw new Error(`setFeatureNorm: ${mean.length}/${std.length} values, need ${n}`);
    if (this.trainSession || this.scoreSession || this.functionalsSession) throw new Error('setFeatureNorm: graphs are already built');
    if (std.some((x) => !(x > 0))) throw new Error('setFeatureNorm: std must be > 0');
    this.featureNorm = { mean, std };
  }

  /** Sets the standardisation of the stat token's inputs (statWidth values each); before the first graph is built. */
  setStatNorm(mean: Float32Array, std: Float32Array): void {
    const n = statWidth(this.mapperConfig);
    if (!n) throw new Error('setStatNorm: the mapper has no stat token');
    if (mean.length !== n || std.length !== n) throw new Error(`setStatNorm: ${mean.length}/${std.length} values, need ${n}`);
    if (this.trainSession || this.scoreSession) throw new Error('setStatNorm: graphs are already built');
    if (std.some((x) => !(x > 0))) throw new Error('setStatNorm: std must be > 0');
    this.statNorm = { mean, std };
  }

  /**
   * The stat token's inputs (utterance functionals of the normalised states, mapperFunctionals) of each clip,
   * whole: the trainer's statistics for setStatNorm. Built after setFeatureNorm.
   */
  async clipFunctionals(clips: ClipStates[]): Promise<Float32Array[]> {
    const cfg = this.mapperConfig;
    if (!cfg.statChannels) throw new Error('clipFunctionals: the mapper has no stat token');
    this.functionalsSession ??= (() => {
      const g = new Graph();
      const hs = g.input('hidden_states', 'float32', [cfg.numHiddenStates, 1, 'T', cfg.dIn]);
      const fm = g.input('frame_mask', 'int64', [1, 'T']);
      return compile({ functionals: mapperFunctionals(cfg, this.normalizeStates(hs), not(equal(fm, 0))) }, { name: 'emosllm clip functionals', ...this.compileOptions });
    })();
    const s = await this.functionalsSession;
    const out: Float32Array[] = [];
    for (const c of clips) {
      const T = Math.max(1, c.frames);
      const x = new Float32Array(cfg.numHiddenStates * T * cfg.dIn);
      c.states.forEach((st, l) => x.set(st.subarray(0, c.frames * cfg.dIn), l * T * cfg.dIn));
      const mask = new BigInt64Array(T).fill(c.frames > 0 ? 1n : 0n);
      const r = await s.run({ hidden_states: tensor(x, [cfg.numHiddenStates, 1, T, cfg.dIn]), frame_mask: tensor(mask, [1, T]) });
      out.push(Float32Array.from(r.functionals.data as Float32Array));
    }
    return out;
  }

  /**
   * The mapper on raw encoder states: normalisation, stat token (when the mapper has one), audio tokens [B, n_q, H].
   * `stat`: the stat token's group standardisation and training dropout (buildQPMapper's statAffine, statKeep).
   */
  audioTokens(g: Graph, params: Record<string, Value>, hs: Value, frameMask: Value, stat: { affine?: { scale: Value; shift: Value }; keep?: Value } = {}): Value {
    return buildQPMapper(g, this.mapperConfig, params, this.normalizeStates(hs), frameMask, { statNorm: this.statNorm, statAffine: stat.affine, statKeep: stat.keep });
  }

  /** Graph inputs stat_scale / stat_shift [rows, statWidth] (a mapper with a stat token; see statAffineFeeds). */
  private statAffineInputs(g: Graph, rows: number | string): { scale: Value; shift: Value } | undefined {
    const w = statWidth(this.mapperConfig);
    if (!w) return undefined;
    return { scale: g.input('stat_scale', 'float32', [rows, w]), shift: g.input('stat_shift', 'float32', [rows, w]) };
  }

  /** Feeds for statAffineInputs: each row's group standardisation (statGroupAffine), identity without a group. */
  private statAffineFeeds(groups: Array<ChannelStats | undefined>): Record<string, Tensor> {
    const w = statWidth(this.mapperConfig);
    if (!w) return {};
    const scale = new Float32Array(groups.length * w).fill(1);
    const shift = new Float32Array(groups.length * w);
    groups.forEach((group, b) => {
      if (!group) return;
      const t = statGroupAffine(group, this.statNorm!);
      scale.set(t.scale, b * w);
      shift.set(t.shift, b * w);
    });
    return { stat_scale: tensor(scale, [groups.length, w]), stat_shift: tensor(shift, [groups.length, w]) };
  }

  /** hidden_states [L, B, T, D] -> (x - mean) / std per layer and channel (identity without statistics). */
  normalizeStates(hs: Value): Value {
    if (!this.featureNorm) return hs;
    const { numHiddenStates: L, dIn: D } = this.mapperConfig;
    const g = hs.graph;
    const inv = Float32Array.from(this.featureNorm.std, (x) => 1 / x);
    return g.scope('feature_norm', () =>
      mul(sub(hs, g.constant(this.featureNorm!.mean, [L, 1, 1, D], 'float32', 'feature_norm.mean')), g.constant(inv, [L, 1, 1, D], 'float32', 'feature_norm.inv_std')),
    );
  }

  /** The group normalisation the model was trained with (emosllm.json "normalize"). */
  get normalize(): NormalizeMode {
    return this.spec.normalize ?? 'none';
  }

  /**
   * States normalised with a group's statistics (a speaker's clips, a recording's windows): models/normalize.ts.
   * `functionals`: the group's statistics of the stat token's inputs (functionalGroupStats of the normalised clips).
   */
  normalizeGroup(states: ClipStates, group: ChannelStats, functionals?: ChannelStats): ClipStates {
    const out = applyTransform(states, groupTransform(group, this.featureNorm));
    return functionals && this.statNorm ? { ...out, statGroup: functionals } : out;
  }

  /** Frames per second of the encoder states. */
  get frameRate(): number {
    return this.encoder.frameRate;
  }

  // -------------------------------------------------------------------------------------------------------
  // graphs

  /** Graph inputs for every trainable parameter, wired into the mapper and the LLM. */
  private paramInputs(g: Graph): { mapper: Record<string, Value>; all: Value[]; lora?: ReturnType<typeof loraInputs>['params'] } {
    const mapper: Record<string, Value> = {};
    for (const [n, s] of qpmapperParamShapes(this.mapperConfig)) mapper[n] = g.input(MAPPER_PREFIX + n, 'float32', s);
    const all = Object.values(mapper);
    let lora: ReturnType<typeof loraInputs>['params'] | undefined;
    if (this.loraConfig) {
      const li = loraInputs(g, this.loraConfig, this.llm.linearModules());
      lora = li.params;
      all.push(...li.inputs.values());
    } else if (this.spec.llmTrain === 'full') {
      const bound = new Map<string, Value>();
      for (const [name, shape] of fullTrainTensors(this.llm)) {
        const v = g.input(LLM_PREFIX + name, 'float32', shape);
        bound.set(name, v);
        all.push(v);
      }
      this.llm.bindWeights(g, bound);
    }
    // The graph's inputs must be exactly our parameters, in paramNames order.
    const names = all.map((v) => v.name).sort();
    if (names.join('\n') !== [...this.paramNames].sort().join('\n')) throw new Error('EmoSLLM: graph parameters differ from the model parameters');
    return { mapper, all, lora };
  }

  private paramFeeds(): Record<string, Tensor> {
    const f: Record<string, Tensor> = {};
    for (const k of this.paramNames) f[k] = { dtype: 'float32', shape: this.shapes[k], data: this.params[k] };
    return f;
  }

  /**
   * The training step graph. Inputs: parameters, hidden_states [L, B, T, D], frame_mask [B, T], text_ids [B, P],
   * attention_mask [B, n_q + P], loss_positions / loss_targets [B, K] (see processor.ts). Outputs: the summed
   * answer-token loss `sum`, the number of scored tokens `count`, and `grad.<param>` = d sum / d param. Sums, not
   * means: accumulated over micro-batches and divided by the total count, the step equals one big batch.
   */
  private buildTrainGraph(): Promise<CompiledGraph> {
    const g = new Graph();
    const { mapper, all, lora } = this.paramInputs(g);
    const cfg = this.mapperConfig;
    const hs = g.input('hidden_states', 'float32', [cfg.numHiddenStates, 'B', 'T', cfg.dIn]);
    const fm = g.input('frame_mask', 'int64', ['B', 'T']);
    const textIds = g.input('text_ids', 'int64', ['B', 'P']);
    const attentionMask = g.input('attention_mask', 'int64', ['B', 'S']);
    const lossPositions = g.input('loss_positions', 'int64', ['B', 'K']);
    const lossTargets = g.input('loss_targets', 'int64', ['B', 'K']);
    const statKeep = cfg.statChannels ? g.input('stat_keep', 'float32', ['B', statWidth(cfg)]) : undefined;
    const audioTokens = this.audioTokens(g, mapper, hs, fm, { affine: this.statAffineInputs(g, 'B'), keep: statKeep }); // [B, n_q, H]
    const embeds = concat([audioTokens, this.llm.embed(g, textIds)], 1); // audio tokens first
    const out = this.llm.forward(g, { inputsEmbeds: embeds, attentionMask, lora, logitsFor: lossPositions, layout: 'columns' });
    const { sum, count } = causalLmLossAt(out.logits, lossTargets, IGNORE_INDEX);
    const grads = grad(sum, all);
    const outputs: Record<string, Value> = { sum, count };
    all.forEach((p, i) => (outputs[`grad.${p.name}`] = grads[i]));
    return compile(outputs, { name: 'emosllm train step', ...this.compileOptions });
  }

  /**
   * The label-scoring graph (one clip). Inputs: parameters, hidden_states [L, 1, T, D], frame_mask [1, T],
   * prompt_ids [1, P], and the C candidate answers: first_targets [C] (each answer's first token),
   * answer_ids [C, A] (the answer without its last token, right-padded) and answer_next [C, A] (the token each
   * position predicts, IGNORE_INDEX on padding). Outputs scores [C] = log p(answer_c | audio, prompt) and
   * probabilities [C] (softmax over the candidates).
   */
  private buildScoreGraph(): Promise<CompiledGraph> {
    const g = new Graph();
    const { mapper, lora } = this.paramInputs(g);
    const cfg = this.mapperConfig;
    const hs = g.input('hidden_states', 'float32', [cfg.numHiddenStates, 1, 'T', cfg.dIn]);
    const fm = g.input('frame_mask', 'int64', [1, 'T']);
    const promptIds = g.input('prompt_ids', 'int64', [1, 'P']);
    const firstTargets = g.input('first_targets', 'int64', ['C']);
    const answerIds = g.input('answer_ids', 'int64', ['C', 'A']);
    const answerNext = g.input('answer_next', 'int64', ['C', 'A']);
    const outputs = scoreLabels(g, this.llm, this.audioTokens(g, mapper, hs, fm, { affine: this.statAffineInputs(g, 1) }), promptIds, firstTargets, answerIds, answerNext, lora);
    return compile(outputs, { name: 'emosllm score', ...this.compileOptions });
  }

  // -------------------------------------------------------------------------------------------------------
  // running

  /** Loss sum, scored-token count and gradients of one (micro-)batch. */
  async trainStep(b: Batch): Promise<{ sum: number; count: number; grads: Params }> {
    this.trainSession ??= this.buildTrainGraph();
    const s = await this.trainSession;
    const L = this.mapperConfig.numHiddenStates;
    const res = await s.run({
      ...this.paramFeeds(),
      hidden_states: tensor(b.hiddenStates, [L, b.size, b.frames, this.mapperConfig.dIn]),
      ...(this.mapperConfig.statChannels ? { stat_keep: tensor(b.statKeep ?? new Float32Array(b.size * statWidth(this.mapperConfig)).fill(1), [b.size, statWidth(this.mapperConfig)]) } : {}),
      ...this.statAffineFeeds(b.statGroups),
      frame_mask: tensor(b.frameMask, [b.size, b.frames]),
      text_ids: tensor(b.textIds, [b.size, b.textLen]),
      attention_mask: tensor(b.attentionMask, [b.size, this.mapperConfig.nQueries + b.textLen]),
      loss_positions: tensor(b.lossPositions, [b.size, b.answerLen]),
      loss_targets: tensor(b.lossTargets, [b.size, b.answerLen]),
    });
    const grads: Params = {};
    for (const k of this.paramNames) grads[k] = res[`grad.${k}`].data as Float32Array;
    return { sum: (res.sum.data as Float32Array)[0], count: (res.count.data as Float32Array)[0], grads };
  }

  /** The frame window scored for a clip of `frames` frames: whole up to the mapper's t_max, else the centre. */
  scoreWindow(frames: number): { start: number; length: number } {
    const max = this.mapperConfig.tMax;
    if (frames <= max) return { start: 0, length: frames };
    return { start: Math.floor((frames - max) / 2), length: max };
  }

  /** Scores every label for one clip's encoder states (already selected layers, see selectLayers). */
  async scoreStates(states: ClipStates, opts: { transcript?: string; labels?: string[] } = {}): Promise<ScoreResult> {
    this.scoreSession ??= this.buildScoreGraph();
    const s = await this.scoreSession;
    const labels = opts.labels ?? this.spec.labels;
    const prompt = this.prompt(labels);
    const { start, length } = this.scoreWindow(states.frames);
    const T = Math.max(1, length);
    const L = this.mapperConfig.numHiddenStates;
    const D = this.mapperConfig.dIn;
    if (states.states.length !== L || states.dim !== D) throw new Error(`scoreStates: states are ${states.states.length} x ${states.dim}, the mapper reads ${L} x ${D}`);
    const hs = new Float32Array(L * T * D);
    states.states.forEach((x, l) => hs.set(x.subarray(start * D, (start + length) * D), l * T * D));
    const mask = new BigInt64Array(T).fill(1n);
    if (length === 0) mask[0] = 0n;
    const ids = prompt.promptIds(opts.transcript);
    const ans = answerTensors(prompt.answerIds);
    const res = await s.run({
      ...this.paramFeeds(),
      hidden_states: tensor(hs, [L, 1, T, D]),
      frame_mask: tensor(mask, [1, T]),
      ...this.statAffineFeeds([states.statGroup]),
      prompt_ids: tensor(BigInt64Array.from(ids, BigInt), [1, ids.length]),
      ...ans,
    });
    return { labels, scores: Array.from(res.scores.data as Float32Array), probabilities: Array.from(res.probabilities.data as Float32Array) };
  }

  /** Encoder states of clips (16 kHz mono), the mapper's layers only; uncached (the trainer uses the feature cache). */
  async encode(clips: Float32Array[]): Promise<ClipStates[]> {
    const outs = await this.encoder.encode(clips);
    return outs.map((o) => selectLayers(o, this.spec.encoderLayers, this.encoder.hiddenSize));
  }

  /** Frees the training-step session (a real LLM's is several GB) when only scoring follows. */
  async releaseTraining(): Promise<void> {
    const s = this.trainSession;
    this.trainSession = undefined;
    if (s) await (await s).release();
  }

  async release(): Promise<void> {
    for (const s of [this.trainSession, this.scoreSession, this.functionalsSession]) if (s) await (await s).release();
    this.trainSession = this.scoreSession = this.functionalsSession = undefined;
    await this.llm.release();
    await releaseFrameEncoder(this.encoder);
  }
}

/** The selected hidden states of an encoder output. */
export function selectLayers(o: { states: Float32Array[]; frames: number }, layers: number[], dim: number): ClipStates {
  return { states: layers.map((l) => o.states[l]), frames: o.frames, dim };
}

/**
 * Label scoring from the audio tokens: [audio | prompt] once with a KV cache, then the C answers against copies
 * of that cache (Expand: a view, not C forward passes of the prefix). Returns scores and probabilities [C].
 */
export function scoreLabels(
  g: Graph,
  llm: LlamaModel,
  audioTokens: Value,
  promptIds: Value,
  firstTargets: Value,
  answerIds: Value,
  answerNext: Value,
  lora?: ReturnType<typeof loraInputs>['params'],
): { scores: Value; probabilities: Value } {
  const V = llm.config.vocabSize;
  const prefix = concat([audioTokens, llm.embed(g, promptIds)], 1); // [1, n_q + P, H]
  const last = reshape(sub(dimOf(prefix, 1), 1), [1, 1]); // the prefix's last position predicts each answer's first token
  const head = llm.forward(g, { inputsEmbeds: prefix, useCache: true, logitsFor: last, lora });
  const C = dimOf(answerIds, 0);
  const past = head.presentKeyValues!.map((kv) => {
    const shape = concat([C, slice(shapeOf(kv.key), [1], [4], [0])], 0);
    const hint = ['C', ...kv.key.shape.slice(1)];
    return { key: expand(kv.key, shape, hint), value: expand(kv.value, shape, hint) };
  });
  const tail = llm.forward(g, { inputIds: answerIds, pastKeyValues: past, lora }); // [C, A, V]
  const first = gather(reshape(logSoftmax(head.logits, -1), [V]), firstTargets, 0); // [C]
  const { perToken } = maskedCrossEntropy(tail.logits, answerNext, IGNORE_INDEX); // [C, A], -log p (0 on padding)
  const scores = add(first, neg(reduceSum(perToken, [1]))); // [C]
  return { scores, probabilities: softmax(scores, 0) };
}
