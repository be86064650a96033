/**
 * Model benchmark (`npm run bench -- models`): the real models at their real shapes, on random weights that the
 * bench writes itself as Hugging Face checkpoint folders (config.json + model.safetensors, F32) under
 * <cacheRoot>/bench-models, reused across runs. Everything is loaded through the project's loaders
 * (loadSpeechEncoder, LlamaModel.open, lora.ts) and compiled with compile(), like the application does.
 *
 *  - wavlm_base_plus_3s_ms / wavlm_large_3s_ms: encoder forward on 3 s of 16 kHz audio, batch 1, every hidden
 *    state fetched (microsoft/wavlm-base-plus and microsoft/wavlm-large configs).
 *  - llama_1b_fwd_128_ms: Llama-3.2-1B-shaped forward on 128 tokens, logits for all 128 tokens.
 *  - llama_1b_lora_fwd_bwd_128_ms: LoRA r=8, alpha 16 on q_proj and v_proj: causal-LM loss over the 128 tokens
 *    and the gradients of every LoRA A/B matrix.
 *
 * External reference (PyTorch + transformers + PEFT, same shapes, 2 threads; measured outside this repository,
 * no script here): 900 ms, 2220 ms, 3474 ms, 7208 ms, 6.0 GB.
 * Medians of 5 timed runs after 2 warm-ups. Each measurement runs in its own process (this suite re-runs
 * `bench/main.ts models` with EMOSLLM_BENCH_MODELS_STAGE set), so peak_rss_mb is that of the largest single
 * measurement, not inflated by what earlier sessions left in the heap. The checkpoints are written first, by
 * the parent process, with bounded memory.
 *
 * Environment:
 *  - EMOSLLM_BENCH_SMALL=1: tiny shapes (seconds), for smoke tests.
 *  - EMOSLLM_BENCH_ONLY=wavlm_base_plus,llama_fwd,...: run a subset (names: wavlm_base_plus, wavlm_large,
 *    llama_fwd, llama_lora); skipped figures are reported as -1.
 *  - EMOSLLM_BENCH_LLAMA_LAYOUT / EMOSLLM_BENCH_LORA_LAYOUT = rows | columns: the activations' layout (llama.ts) of the
 *    forward / LoRA graphs (defaults below, chosen by measurement; see the constants).
 *  - EMOSLLM_BENCH_IN_PROCESS=1: run every stage in this process instead of one child process per stage (see
 *    runStageProcess for why the default is a process per stage).
 *  - EMOSLLM_BENCH_RUNS: timed runs per measurement (default 5, at least 3), each after 2 warm-up runs (the
 *    first runs of a Llama session are much slower: page faults on the mapped weights, arena growth).
 */
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { grad } from '../src/graph/autodiff.ts';
import { Graph, type Value } from '../src/graph/ir.ts';
import { type CompiledGraph, type Tensor, cacheRoot, compile, tensor } from '../src/graph/runtime.ts';
import { writeSafetensorsStreaming } from '../src/io/safetensors.ts';
import { loadSpeechEncoder } from '../src/models/encoder.ts';
import { LlamaModel, type LlamaForwardOptions, causalLmLoss } from '../src/models/llama.ts';
import { type LoraConfig, initLora, loraFeeds, loraInputs } from '../src/models/lora.ts';
import { fillRandom, log, median, peakRssMb, randomArray, round, rssMb, timeit } from './util.ts';

type LayoutMode = NonNullable<LlamaForwardOptions['layout']>;

/** Layout of the measured forward (rows: ORT prepacks every weight once, fastest products). */
const DEFAULT_FWD_LAYOUT: LayoutMode = 'rows';
/** Layout of the LoRA step (columns: one copy of the frozen weights, read in place by forward and backward). */
const DEFAULT_LORA_LAYOUT: LayoutMode = 'columns';

/** Bump when the generated checkpoints change (names, values, layout): old folders are then not reused. */
const GENERATOR_VERSION = 1;

const SMALL = process.env.EMOSLLM_BENCH_SMALL === '1';
const SAMPLE_RATE = 16000;
const AUDIO_SECONDS = 3;
const LLAMA_TOKENS = 128;

// ---------------------------------------------------------------------------------------------------------------
// configs (HF config.json contents)

interface WavLMShape {
  hidden: number;
  layers: number;
  heads: number;
  intermediate: number;
  large: boolean;
  convDim: number;
  posConv: number;
  posGroups: number;
}

function wavlmConfig(s: WavLMShape): Record<string, unknown> {
  return {
    architectures: ['WavLMModel'],
    model_type: 'wavlm',
    hidden_size: s.hidden,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    intermediate_size: s.intermediate,
    hidden_act: 'gelu',
    layer_norm_eps: 1e-5,
    feat_extract_norm: s.large ? 'layer' : 'group',
    feat_extract_activation: 'gelu',
    do_stable_layer_norm: s.large,
    conv_bias: s.large,
    conv_dim: Array(7).fill(s.convDim),
    conv_stride: [5, 2, 2, 2, 2, 2, 2],
    conv_kernel: [10, 3, 3, 3, 3, 2, 2],
    num_feat_extract_layers: 7,
    num_conv_pos_embeddings: s.posConv,
    num_conv_pos_embedding_groups: s.posGroups,
    num_buckets: 320,
    max_bucket_distance: 800,
    add_adapter: false,
    apply_spec_augment: true,
    initializer_range: 0.02,
    torch_dtype: 'float32',
    emosllm_bench: 'random weights',
  };
}

export interface LlamaShape {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  vocab: number;
}

export function llamaConfig(s: LlamaShape): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: 128000,
    eos_token_id: 128001,
    head_dim: s.hidden / s.heads,
    hidden_act: 'silu',
    hidden_size: s.hidden,
    initializer_range: 0.02,
    intermediate_size: s.intermediate,
    max_position_embeddings: 131072,
    mlp_bias: false,
    num_attention_heads: s.heads,
    num_hidden_layers: s.layers,
    num_key_value_heads: s.kvHeads,
    pretraining_tp: 1,
    rms_norm_eps: 1e-5,
    rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
    rope_theta: 500000.0,
    tie_word_embeddings: true,
    torch_dtype: 'float32',
    use_cache: true,
    vocab_size: s.vocab,
    emosllm_bench: 'random weights',
  };
}

const WAVLM_BASE_PLUS: WavLMShape = SMALL
  ? { hidden: 64, layers: 2, heads: 4, intermediate: 128, large: false, convDim: 32, posConv: 16, posGroups: 4 }
  : { hidden: 768, layers: 12, heads: 12, intermediate: 3072, large: false, convDim: 512, posConv: 128, posGroups: 16 };
const WAVLM_LARGE: WavLMShape = SMALL
  ? { hidden: 64, layers: 2, heads: 4, intermediate: 128, large: true, convDim: 32, posConv: 16, posGroups: 4 }
  : { hidden: 1024, layers: 24, heads: 16, intermediate: 4096, large: true, convDim: 512, posConv: 128, posGroups: 16 };
const LLAMA_1B: LlamaShape = SMALL
  ? { hidden: 64, layers: 2, heads: 4, intermediate: 128, kvHeads: 2, vocab: 1024 }
  : { hidden: 2048, layers: 16, heads: 32, kvHeads: 8, intermediate: 8192, vocab: 128256 };

// ---------------------------------------------------------------------------------------------------------------
// tensors of each checkpoint, with how to initialise them (like HF _init_weights, but uniform: fast to draw)

interface TensorSpec {
  name: string;
  shape: number[];
  /** uniform in [-scale, scale), or every element = value */
  init: { scale: number } | { value: number };
}

const STD = 0.02;
const U = { scale: STD * Math.sqrt(3) }; // uniform with std 0.02
const ONES = { value: 1 };
const ZEROS = { value: 0 };

function wavlmTensors(s: WavLMShape): TensorSpec[] {
  const t: TensorSpec[] = [];
  const add = (name: string, shape: number[], init: TensorSpec['init']) => t.push({ name, shape, init });
  const kernels = [10, 3, 3, 3, 3, 2, 2];
  let cin = 1;
  kernels.forEach((k, i) => {
    const p = `feature_extractor.conv_layers.${i}`;
    // kaiming-normal-like scale, so the conv stack neither explodes nor vanishes
    add(`${p}.conv.weight`, [s.convDim, cin, k], { scale: Math.sqrt(3 / (cin * k)) });
    if (s.large) add(`${p}.conv.bias`, [s.convDim], ZEROS);
    if (s.large || i === 0) {
      add(`${p}.layer_norm.weight`, [s.convDim], ONES);
      add(`${p}.layer_norm.bias`, [s.convDim], ZEROS);
    }
    cin = s.convDim;
  });
  add('feature_projection.layer_norm.weight', [s.convDim], ONES);
  add('feature_projection.layer_norm.bias', [s.convDim], ZEROS);
  add('feature_projection.projection.weight', [s.hidden, s.convDim], U);
  add('feature_projection.projection.bias', [s.hidden], ZEROS);
  add('masked_spec_embed', [s.hidden], { scale: 0.5 });
  add('encoder.pos_conv_embed.conv.weight_g', [1, 1, s.posConv], { scale: 1 });
  add('encoder.pos_conv_embed.conv.weight_v', [s.hidden, s.hidden / s.posGroups, s.posConv], U);
  add('encoder.pos_conv_embed.conv.bias', [s.hidden], ZEROS);
  add('encoder.layer_norm.weight', [s.hidden], ONES);
  add('encoder.layer_norm.bias', [s.hidden], ZEROS);
  const hd = s.hidden / s.heads;
  for (let i = 0; i < s.layers; i++) {
    const p = `encoder.layers.${i}`;
    for (const m of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) {
      add(`${p}.attention.${m}.weight`, [s.hidden, s.hidden], U);
      add(`${p}.attention.${m}.bias`, [s.hidden], ZEROS);
    }
    add(`${p}.attention.gru_rel_pos_const`, [1, s.heads, 1, 1], ONES);
    add(`${p}.attention.gru_rel_pos_linear.weight`, [8, hd], U);
    add(`${p}.attention.gru_rel_pos_linear.bias`, [8], ZEROS);
    if (i === 0) add(`${p}.attention.rel_attn_embed.weight`, [320, s.heads], { scale: 1 });
    add(`${p}.layer_norm.weight`, [s.hidden], ONES);
    add(`${p}.layer_norm.bias`, [s.hidden], ZEROS);
    add(`${p}.feed_forward.intermediate_dense.weight`, [s.intermediate, s.hidden], U);
    add(`${p}.feed_forward.intermediate_dense.bias`, [s.intermediate], ZEROS);
    add(`${p}.feed_forward.output_dense.weight`, [s.hidden, s.intermediate], U);
    add(`${p}.feed_forward.output_dense.bias`, [s.hidden], ZEROS);
    add(`${p}.final_layer_norm.weight`, [s.hidden], ONES);
    add(`${p}.final_layer_norm.bias`, [s.hidden], ZEROS);
  }
  return t;
}

export function llamaTensors(s: LlamaShape): TensorSpec[] {
  const hd = s.hidden / s.heads;
  const t: TensorSpec[] = [{ name: 'model.embed_tokens.weight', shape: [s.vocab, s.hidden], init: U }];
  for (let i = 0; i < s.layers; i++) {
    const p = `model.layers.${i}`;
    t.push(
      { name: `${p}.input_layernorm.weight`, shape: [s.hidden], init: ONES },
      { name: `${p}.self_attn.q_proj.weight`, shape: [s.heads * hd, s.hidden], init: U },
      { name: `${p}.self_attn.k_proj.weight`, shape: [s.kvHeads * hd, s.hidden], init: U },
      { name: `${p}.self_attn.v_proj.weight`, shape: [s.kvHeads * hd, s.hidden], init: U },
      { name: `${p}.self_attn.o_proj.weight`, shape: [s.hidden, s.heads * hd], init: U },
      { name: `${p}.post_attention_layernorm.weight`, shape: [s.hidden], init: ONES },
      { name: `${p}.mlp.gate_proj.weight`, shape: [s.intermediate, s.hidden], init: U },
      { name: `${p}.mlp.up_proj.weight`, shape: [s.intermediate, s.hidden], init: U },
      { name: `${p}.mlp.down_proj.weight`, shape: [s.hidden, s.intermediate], init: U },
    );
  }
  t.push({ name: 'model.norm.weight', shape: [s.hidden], init: ONES });
  return t;
}

// ---------------------------------------------------------------------------------------------------------------
// writing a checkpoint folder without holding the weights in memory

/** 32-bit FNV-1a, to give every tensor its own random stream. */
function seedOf(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h || 1;
}

const CHUNK = 1 << 22; // floats per chunk (16 MB)

/** The spec's values as F32 chunks, generated as they are written (the 1B model's 5 GB never sit in memory). */
function* specChunks(t: TensorSpec): Generator<Uint8Array> {
  const n = t.shape.reduce((a, b) => a * b, 1);
  const buf = new Float32Array(Math.min(CHUNK, n));
  let state = seedOf(t.name);
  for (let done = 0; done < n; done += CHUNK) {
    const chunk = buf.subarray(0, Math.min(CHUNK, n - done));
    if ('value' in t.init) chunk.fill(t.init.value);
    else state = fillRandom(chunk, t.init.scale, state);
    yield new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  }
}

/**
 * The checkpoint folder for `config` + `tensors` under <cacheRoot>/bench-models, written (into a temp folder,
 * then renamed) unless a complete one is already there. The folder name hashes everything that determines it.
 */
export function checkpointFolder(name: string, config: Record<string, unknown>, tensors: TensorSpec[]): string {
  const key = crypto
    .createHash('sha256')
    .update(JSON.stringify({ v: GENERATOR_VERSION, config, tensors }))
    .digest('hex')
    .slice(0, 16);
  const root = path.join(cacheRoot(), 'bench-models');
  const dir = path.join(root, `${name}-${key}`);
  if (fs.existsSync(path.join(dir, 'config.json')) && fs.existsSync(path.join(dir, 'model.safetensors'))) {
    if (!process.env[STAGE_ENV] && !process.env.EMOSLLM_BENCH_SCALE_STAGE) log(`${name}: reusing ${dir}`);
    return dir;
  }
  const bytes = tensors.reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1) * 4, 0);
  log(`${name}: writing random F32 checkpoint (${round(bytes / 2 ** 20)} MiB) to ${dir}`);
  const t0 = performance.now();
  fs.mkdirSync(root, { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  fs.mkdirSync(tmp);
  try {
    writeSafetensorsStreaming(path.join(tmp, 'model.safetensors'), tensors.map((t) => ({ name: t.name, dtype: 'F32', shape: t.shape, chunks: () => specChunks(t) })), { format: 'pt' });
    fs.writeFileSync(path.join(tmp, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
    try {
      fs.renameSync(tmp, dir);
    } catch (e) {
      if (!fs.existsSync(path.join(dir, 'model.safetensors'))) throw e; // another run won the race
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  log(`${name}: written in ${round((performance.now() - t0) / 1000, 1)} s`);
  return dir;
}

// ---------------------------------------------------------------------------------------------------------------
// measurements

const runsFor = (dflt: number) => Math.max(3, Number(process.env.EMOSLLM_BENCH_RUNS) || dflt);

const mem = () => {
  const r = rssMb();
  return `rss ${Math.round(r.total)} MB (anon ${Math.round(r.anon)}, files ${Math.round(r.file)}), peak ${Math.round(peakRssMb())} MB`;
};

function layoutMode(env: string, dflt: LayoutMode): LayoutMode {
  const v = process.env[env];
  if (v === undefined || v === '') return dflt;
  if (v !== 'rows' && v !== 'columns') throw new Error(`${env} must be "rows" or "columns", got "${v}"`);
  return v;
}

/** Opens the session and makes its feeds (timed), runs warm-up + timed runs, releases it. Returns the median in ms. */
export async function measure(
  label: string,
  open: () => Promise<{ session: CompiledGraph; feeds: Record<string, Tensor> }>,
  runs: number,
  warmups: number,
  check: (out: Record<string, Tensor>) => string,
): Promise<number> {
  let t0 = performance.now();
  const { session: s, feeds } = await open();
  log(`${label}: graph built, session open in ${round((performance.now() - t0) / 1000, 1)} s (${mem()})`);
  try {
    for (let i = 0; i < warmups; i++) {
      t0 = performance.now();
      const out = await s.run(feeds);
      log(`${label}: warm-up run ${round(performance.now() - t0)} ms${i === 0 ? `; ${check(out)}` : ''} (${mem()})`);
    }
    const times = await timeit(() => s.run(feeds), runs, 0);
    const ms = median(times);
    log(`${label}: ${round(ms)} ms median of ${runs} [${times.map((x) => round(x)).join(', ')}] (${mem()})`);
    return ms;
  } finally {
    await s.release();
    log(`${label}: session released (${mem()})`);
  }
}

/** "finite" or how many values are not, over every float output. */
export function finiteCheck(out: Record<string, Tensor>): string {
  let bad = 0;
  let n = 0;
  for (const t of Object.values(out)) {
    if (!(t.data instanceof Float32Array)) continue;
    for (const v of t.data) if (!Number.isFinite(v)) bad++;
    n += t.data.length;
  }
  return bad ? `${bad} of ${n} output values NOT finite` : `${n} output values, all finite`;
}

async function benchWavLM(name: string, dir: string): Promise<number> {
  const samples = SAMPLE_RATE * AUDIO_SECONDS;
  return measure(
    `${name} 3 s`,
    async () => {
      const enc = loadSpeechEncoder(dir);
      const g = new Graph();
      const x = g.input('input_values', 'float32', ['batch', 'samples']);
      const out = enc.build(g, x);
      const outputs: Record<string, Value> = {};
      out.hiddenStates.forEach((h, i) => (outputs[`hidden_states.${i}`] = h));
      const session = await compile(outputs, { name });
      // the encoder itself holds no session: its checkpoint file is read by ONNX Runtime only
      return { session, feeds: { input_values: tensor(randomArray(samples, Math.sqrt(3), 11), [1, samples]) } }; // unit variance
    },
    runsFor(5),
    2,
    (o) => `${Object.keys(o).length} hidden states [${o['hidden_states.0'].shape.join(', ')}], ${finiteCheck(o)}`,
  );
}

export function tokenIds(n: number, vocab: number, seed: number): BigInt64Array {
  const u = randomArray(n, 0.5, seed);
  return BigInt64Array.from(u, (x) => BigInt(Math.min(vocab - 1, Math.floor((x + 0.5) * vocab))));
}

/** Opens the model, builds a graph with `build`, compiles it; the checkpoint file stays open only while building. */
async function llamaSession(
  dir: string,
  name: string,
  build: (model: LlamaModel, g: Graph) => { outputs: Record<string, Value>; feeds: Record<string, Tensor> },
): Promise<{ session: CompiledGraph; feeds: Record<string, Tensor> }> {
  const model = LlamaModel.open(dir);
  try {
    const { outputs, feeds } = build(model, new Graph());
    return { session: await compile(outputs, { name }), feeds };
  } finally {
    model.weights.ckpt.close();
  }
}

async function benchLlamaForward(dir: string, layout: LayoutMode): Promise<number> {
  const ids = tokenIds(LLAMA_TOKENS, LLAMA_1B.vocab, 21);
  return measure(
    `llama-1b forward 128 (${layout})`,
    () =>
      llamaSession(dir, 'bench-llama-fwd', (model, g) => {
        const inputIds = g.input('input_ids', 'int64', ['batch', 'seq']);
        return { outputs: { logits: model.forward(g, { inputIds, layout }).logits }, feeds: { input_ids: tensor(ids, [1, LLAMA_TOKENS]) } };
      }),
    runsFor(5),
    2,
    (o) => `logits [${o.logits.shape.join(', ')}], ${finiteCheck(o)}`,
  );
}

async function benchLlamaLora(dir: string, layout: LayoutMode): Promise<number> {
  const config: LoraConfig = {
    r: 8,
    loraAlpha: 16,
    targetModules: ['q_proj', 'v_proj'],
    useRslora: false,
    loraDropout: 0,
    baseModelNameOrPath: null,
    taskType: 'CAUSAL_LM',
  };
  const ids = tokenIds(LLAMA_TOKENS, LLAMA_1B.vocab, 22);
  let rngState = 12345;
  const rng = () => {
    rngState ^= rngState << 13;
    rngState ^= rngState >>> 17;
    rngState ^= rngState << 5;
    return (rngState >>> 0) / 4294967296;
  };
  let gradNames: string[] = [];
  const ms = await measure(
    `llama-1b LoRA fwd+bwd 128 (${layout})`,
    () =>
      llamaSession(dir, 'bench-llama-lora', (model, g) => {
        const inputIds = g.input('input_ids', 'int64', ['batch', 'seq']);
        const labels = g.input('labels', 'int64', ['batch', 'seq']);
        const { params, inputs } = loraInputs(g, config, model.linearModules());
        const out = model.forward(g, { inputIds, lora: params, layout });
        const { loss } = causalLmLoss(out.logits, labels);
        const keys = [...inputs.keys()];
        const grads = grad(loss, [...inputs.values()]);
        const outputs: Record<string, Value> = { loss };
        keys.forEach((k, i) => (outputs[`grad.${k}`] = grads[i]));
        gradNames = keys;
        // PEFT's init (B = 0): every A gradient is then 0, but computed all the same
        const tensors = initLora(config, model.linearModules(), rng);
        const feeds = { input_ids: tensor(ids, [1, LLAMA_TOKENS]), labels: tensor(ids, [1, LLAMA_TOKENS]), ...loraFeeds(tensors) };
        return { outputs, feeds };
      }),
    runsFor(5),
    2,
    (o) => `loss ${round((o.loss.data as Float32Array)[0], 4)} (ln V = ${round(Math.log(LLAMA_1B.vocab), 4)}), ${gradNames.length} gradients, ${finiteCheck(o)}`,
  );
  return ms;
}

interface Stage {
  id: string;
  /** the figure's key in the JSON line */
  key: string;
  /** the checkpoint folder (written on first use) */
  checkpoint: () => string;
  run: (dir: string) => Promise<number>;
}

const llamaCheckpoint = () => checkpointFolder('llama-3.2-1b', llamaConfig(LLAMA_1B), llamaTensors(LLAMA_1B));

const STAGES: Stage[] = [
  {
    id: 'wavlm_base_plus',
    key: 'wavlm_base_plus_3s_ms',
    checkpoint: () => checkpointFolder('wavlm-base-plus', wavlmConfig(WAVLM_BASE_PLUS), wavlmTensors(WAVLM_BASE_PLUS)),
    run: (dir) => benchWavLM('wavlm-base-plus', dir),
  },
  {
    id: 'wavlm_large',
    key: 'wavlm_large_3s_ms',
    checkpoint: () => checkpointFolder('wavlm-large', wavlmConfig(WAVLM_LARGE), wavlmTensors(WAVLM_LARGE)),
    run: (dir) => benchWavLM('wavlm-large', dir),
  },
  {
    id: 'llama_fwd',
    key: 'llama_1b_fwd_128_ms',
    checkpoint: llamaCheckpoint,
    run: (dir) => benchLlamaForward(dir, layoutMode('EMOSLLM_BENCH_LLAMA_LAYOUT', DEFAULT_FWD_LAYOUT)),
  },
  {
    id: 'llama_lora',
    key: 'llama_1b_lora_fwd_bwd_128_ms',
    checkpoint: llamaCheckpoint,
    run: (dir) => benchLlamaLora(dir, layoutMode('EMOSLLM_BENCH_LORA_LAYOUT', DEFAULT_LORA_LAYOUT)),
  },
];

const STAGE_ENV = 'EMOSLLM_BENCH_MODELS_STAGE';

/**
 * Runs one stage in a fresh `npm run bench -- models` process (STAGE_ENV set) and returns its figure and peak RSS.
 * Why a process per stage: ONNX Runtime's freed memory is not returned to the OS after session.release()
 * (glibc's dynamic mmap threshold keeps it in the heap: 1.5 GB after WavLM-large, 1.4 GB after the Llama
 * forward), so in one process every stage's peak would include what the earlier ones left behind.
 */
function runStageProcess(stage: Stage): Promise<{ ms: number; peak: number }> {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const args = [path.join(root, 'bin', 'run-ts.mjs'), path.join(root, 'bench', 'main.ts'), 'models'];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { env: { ...process.env, [STAGE_ENV]: stage.id }, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => (out += d));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code !== 0) return reject(new Error(`bench stage ${stage.id} failed (${signal ?? `exit code ${code}`})`));
      const last = out.trim().split('\n').pop() ?? '';
      try {
        const j = JSON.parse(last) as Record<string, number>;
        resolve({ ms: j[stage.key], peak: j.peak_rss_mb });
      } catch {
        reject(new Error(`bench stage ${stage.id}: no JSON result line in its output: ${JSON.stringify(last.slice(0, 200))}`));
      }
    });
  });
}

export async function benchModels(): Promise<Record<string, number>> {
  const single = process.env[STAGE_ENV];
  if (single) {
    // child: one stage, in this process; main.ts adds this process's peak RSS
    const stage = STAGES.find((s) => s.id === single);
    if (!stage) throw new Error(`${STAGE_ENV}: unknown stage "${single}"`);
    return { [stage.key]: round(await stage.run(stage.checkpoint())) };
  }
  const t0 = performance.now();
  const only = process.env.EMOSLLM_BENCH_ONLY ? new Set(process.env.EMOSLLM_BENCH_ONLY.split(',').map((s) => s.trim())) : undefined;
  for (const id of only ?? []) if (!STAGES.some((s) => s.id === id)) throw new Error(`EMOSLLM_BENCH_ONLY: unknown stage "${id}" (${STAGES.map((s) => s.id).join(', ')})`);
  const inProcess = process.env.EMOSLLM_BENCH_IN_PROCESS === '1';
  log(`models suite${SMALL ? ' (EMOSLLM_BENCH_SMALL: tiny shapes)' : ''}; cache ${path.join(cacheRoot(), 'bench-models')}`);

  const result: Record<string, number> = {};
  let peak = 0;
  for (const stage of STAGES) {
    result[stage.key] = -1;
    if (only && !only.has(stage.id)) continue;
    const dir = stage.checkpoint(); // written here, by the parent, so a stage process only reads it
    if (inProcess) {
      result[stage.key] = round(await stage.run(dir));
      continue;
    }
    const r = await runStageProcess(stage);
    result[stage.key] = r.ms;
    peak = Math.max(peak, r.peak);
    log(`${stage.id}: ${r.ms} ms, peak RSS of its process ${r.peak} MB`);
  }
  log(`models suite done in ${round((performance.now() - t0) / 1000)} s`);
  // the largest stage process's peak; main.ts keeps the larger of this and its own
  if (!inProcess) result.peak_rss_mb = peak;
  return result;
}

/** The random-weight checkpoint folders, for other suites (bench/emosllm.ts). */
export const wavlmBasePlusCheckpoint = (): string => checkpointFolder('wavlm-base-plus', wavlmConfig(WAVLM_BASE_PLUS), wavlmTensors(WAVLM_BASE_PLUS));
export const llama1bCheckpoint = (): string => llamaCheckpoint();
