/**
 * Scale benchmark (`npm run bench -- scale`): Llama-3.2-3B shapes (hidden 3072, 28 layers, 24 heads, 8 KV heads,
 * intermediate 8192, vocab 128256, tied embeddings) on random weights (an F32 checkpoint the bench writes under
 * <cacheRoot>/bench-models, see bench/models.ts), with the frozen base in float32, int8 or int4
 * (LlamaModelOptions.quantize, src/graph/quant.ts).
 *
 *  - llama_3b_lora_fwd_bwd_128_ms_{mode}: LoRA r=8, alpha 16 on q_proj/v_proj, causal-LM loss over 128 tokens and
 *    every LoRA gradient; llama_3b_lora_peak_rss_mb_{mode}: the peak RSS of that measurement's process
 *    (quantising the checkpoint included).
 *  - llama_3b_fwd_128_ms_{mode}: the forward on 128 tokens, logits for all of them.
 *  - lora_grad_cosine_{int8,int4}: cosine of the LoRA gradients (A and B, B initialised non-zero so A's gradient is
 *    not zero) against the float32 base on the same batch: every LoRA stage saves its gradients beside the
 *    checkpoint, and a run with the fp32 LoRA stage compares them (so fp32 can run alone, after the others).
 *
 * Each measurement runs in its own process (the quantised and float32 sessions must not share a heap).
 * Environment: EMOSLLM_BENCH_MODES=int4,int8,fp32 (default all; fp32 needs ~13 GB), EMOSLLM_BENCH_ONLY=lora,fwd,
 * EMOSLLM_BENCH_RUNS (timed runs, default 3, after 1 warm-up), EMOSLLM_BENCH_SMALL=1 (tiny shapes, a smoke test).
 * Figures not measured are absent from the JSON line.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { grad } from '../src/graph/autodiff.ts';
import { cosine } from '../src/graph/gradcheck.ts';
import { Graph, type Value } from '../src/graph/ir.ts';
import type { QuantizeMode } from '../src/graph/quant.ts';
import { type Tensor, cacheRoot, compile, tensor } from '../src/graph/runtime.ts';
import { LlamaModel, causalLmLoss } from '../src/models/llama.ts';
import { type LoraConfig, initLora, loraFeeds, loraInputs } from '../src/models/lora.ts';
import { type LlamaShape, checkpointFolder, finiteCheck, llamaConfig, llamaTensors, measure, tokenIds } from './models.ts';
import { log, round } from './util.ts';

type Mode = 'fp32' | QuantizeMode;
const SMALL = process.env.EMOSLLM_BENCH_SMALL === '1';
const TOKENS = 128;
const LLAMA_3B: LlamaShape = SMALL
  ? { hidden: 64, layers: 2, heads: 4, intermediate: 128, kvHeads: 2, vocab: 1024 }
  : { hidden: 3072, layers: 28, heads: 24, kvHeads: 8, intermediate: 8192, vocab: 128256 };
const STAGE_ENV = 'EMOSLLM_BENCH_SCALE_STAGE';
const runs = () => Math.max(3, Number(process.env.EMOSLLM_BENCH_RUNS) || 3);
const checkpoint = () => checkpointFolder('llama-3.2-3b', llamaConfig(LLAMA_3B), llamaTensors(LLAMA_3B));
/** LoRA gradients of one mode on the bench batch (seeded: they depend on the checkpoint and the mode only). */
const gradFile = (mode: Mode) => path.join(cacheRoot(), 'bench-models', `${path.basename(checkpoint())}-lora-grads-${mode}.f32`);

const LORA: LoraConfig = { r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj'], useRslora: false, loraDropout: 0, baseModelNameOrPath: null, taskType: 'CAUSAL_LM' };

function seeded(seed: number) {
  let s = seed;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}

async function session(dir: string, mode: Mode, build: (model: LlamaModel, g: Graph) => { outputs: Record<string, Value>; feeds: Record<string, Tensor> }) {
  const t0 = performance.now();
  const model = LlamaModel.open(dir, { quantize: mode === 'fp32' ? undefined : mode });
  try {
    const { outputs, feeds } = build(model, new Graph());
    log(`llama-3b ${mode}: graph built in ${round((performance.now() - t0) / 1000, 1)} s (quantising included)`);
    return { session: await compile(outputs, { name: `bench-scale-${mode}` }), feeds };
  } finally {
    model.weights.ckpt.close();
  }
}

async function lora(dir: string, mode: Mode): Promise<number> {
  const ids = tokenIds(TOKENS, LLAMA_3B.vocab, 22);
  let keys: string[] = [];
  let last: Record<string, Tensor> = {};
  const ms = await measure(
    `llama-3b LoRA fwd+bwd 128 (${mode})`,
    () =>
      session(dir, mode, (model, g) => {
        const inputIds = g.input('input_ids', 'int64', ['batch', 'seq']);
        const labels = g.input('labels', 'int64', ['batch', 'seq']);
        const { params, inputs } = loraInputs(g, LORA, model.linearModules());
        const { loss } = causalLmLoss(model.forward(g, { inputIds, lora: params, layout: 'columns' }).logits, labels);
        keys = [...inputs.keys()];
        const grads = grad(loss, [...inputs.values()]);
        const outputs: Record<string, Value> = { loss };
        keys.forEach((k, i) => (outputs[`grad.${k}`] = grads[i]));
        const tensors = initLora(LORA, model.linearModules(), seeded(12345));
        // B drawn non-zero (PEFT starts it at 0, which would make every A gradient 0 and the cosine meaningless)
        const rand = seeded(777);
        for (const [k, t] of tensors) if (k.includes('lora_B')) for (let i = 0; i < t.data.length; i++) t.data[i] = (rand() - 0.5) * 0.02;
        return { outputs, feeds: { input_ids: tensor(ids, [1, TOKENS]), labels: tensor(ids, [1, TOKENS]), ...loraFeeds(tensors) } };
      }),
    runs(),
    1,
    (o) => {
      last = o;
      return `loss ${round((o.loss.data as Float32Array)[0], 4)}, ${finiteCheck(o)}`;
    },
  );
  const flat = new Float32Array(keys.reduce((a, k) => a + last[`grad.${k}`].data.length, 0));
  let off = 0;
  for (const k of keys) {
    flat.set(last[`grad.${k}`].data as Float32Array, off);
    off += last[`grad.${k}`].data.length;
  }
  fs.writeFileSync(gradFile(mode), flat);
  return ms;
}

async function forward(dir: string, mode: Mode): Promise<number> {
  const ids = tokenIds(TOKENS, LLAMA_3B.vocab, 21);
  return measure(
    `llama-3b forward 128 (${mode})`,
    () =>
      session(dir, mode, (model, g) => {
        const inputIds = g.input('input_ids', 'int64', ['batch', 'seq']);
        return { outputs: { logits: model.forward(g, { inputIds, layout: mode === 'fp32' ? 'rows' : 'columns' }).logits }, feeds: { input_ids: tensor(ids, [1, TOKENS]) } };
      }),
    runs(),
    1,
    (o) => `logits [${o.logits.shape.join(', ')}], ${finiteCheck(o)}`,
  );
}

function runStage(stage: string): Promise<{ ms: number; peak: number }> {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(root, 'bin', 'run-ts.mjs'), path.join(root, 'bench', 'main.ts'), 'scale'], {
      env: { ...process.env, [STAGE_ENV]: stage },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => (out += d));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code !== 0) return reject(new Error(`bench scale stage ${stage} failed (${signal ?? `exit code ${code}`})`));
      const j = JSON.parse(out.trim().split('\n').pop() ?? '{}') as Record<string, number>;
      resolve({ ms: j.ms, peak: j.peak_rss_mb });
    });
  });
}


export async function benchScale(): Promise<Record<string, number>> {
  const single = process.env[STAGE_ENV];
  if (single) {
    const [kind, mode] = single.split(':') as ['lora' | 'fwd', Mode];
    const dir = checkpoint();
    return { ms: round(kind === 'lora' ? await lora(dir, mode) : await forward(dir, mode)) };
  }
  const modes = (process.env.EMOSLLM_BENCH_MODES ?? 'int4,int8,fp32').split(',').map((m) => m.trim()) as Mode[];
  for (const m of modes) if (!['fp32', 'int8', 'int4'].includes(m)) throw new Error(`EMOSLLM_BENCH_MODES: unknown mode "${m}" (fp32, int8, int4)`);
  const only = new Set((process.env.EMOSLLM_BENCH_ONLY ?? 'lora,fwd').split(',').map((s) => s.trim()));
  checkpoint(); // written by the parent, so a stage process only reads it
  const result: Record<string, number> = {};
  let peak = 0;
  for (const mode of modes) {
    if (only.has('lora')) {
      const r = await runStage(`lora:${mode}`);
      result[`llama_3b_lora_fwd_bwd_128_ms_${mode}`] = r.ms;
      result[`llama_3b_lora_peak_rss_mb_${mode}`] = r.peak;
      peak = Math.max(peak, r.peak);
    }
    if (only.has('fwd')) {
      const r = await runStage(`fwd:${mode}`);
      result[`llama_3b_fwd_128_ms_${mode}`] = r.ms;
      peak = Math.max(peak, r.peak);
    }
  }
  // the float32 gradients of this run against each quantised mode's gradients on the same checkpoint and batch
  // (from this run, or an earlier one: fp32 needs ~13 GB and is best run alone)
  if (only.has('lora') && modes.includes('fp32')) {
    const ref = new Float32Array(fs.readFileSync(gradFile('fp32')).buffer.slice(0));
    for (const m of ['int8', 'int4'] as const)
      if (fs.existsSync(gradFile(m))) result[`lora_grad_cosine_${m}`] = round(cosine(new Float32Array(fs.readFileSync(gradFile(m)).buffer.slice(0)), ref), 5);
  }
  result.peak_rss_mb = peak;
  return result;
}
