/**
 * EmoSLLM benchmark (`npm run bench -- emosllm`): training throughput and inference latency of the whole
 * pipeline, for (a) the built-in fbank + tiny-LLM configuration and (b) a WavLM-base-plus-shaped encoder with a
 * Llama-3.2-1B-shaped LLM (random weights with the real shapes, written by the models suite's checkpoint
 * writer; LoRA r = 8 on q_proj and v_proj; the paper's 768-wide mapper), plus the feature cache's speed-up
 * (states from the cache vs running the WavLM encoder).
 *
 * Inputs are real emodb-dev clips (../shared/data/emodb-dev), cut to 3 s. EMOSLLM_BENCH_SMALL=1 shrinks (b).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadAudio16k } from '../src/audio/decode.ts';
import { loadDataset } from '../src/data/dataset.ts';
import { Rng } from '../src/util/rng.ts';
import { predictSamples } from '../src/eval/predict.ts';
import { EmoSLLM } from '../src/models/emosllm.ts';
import { builtinLlama3TokenizerDir } from '../src/models/prompt.ts';
import { writeTinyLlama } from '../src/models/tiny.ts';
import { buildBatch } from '../src/models/processor.ts';
import { FeatureCache } from '../src/features/cache.ts';
import { llama1bCheckpoint, wavlmBasePlusCheckpoint } from './models.ts';
import { log, median, round } from './util.ts';

const EMODB = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../shared/data/emodb-dev');

async function clips(n: number): Promise<Array<{ samples: Float32Array; label: string; transcript?: string }>> {
  if (!fs.existsSync(path.join(EMODB, 'manifest.csv'))) throw new Error(`${EMODB} is missing: the emosllm bench reads real clips from ../shared/data/emodb-dev`);
  const ds = await loadDataset(EMODB);
  const items = ds.items.filter((_, i) => i % Math.floor(ds.items.length / n) === 0).slice(0, n);
  return Promise.all(items.map(async (it) => ({ samples: (await loadAudio16k(it.path)).subarray(0, 48000), label: it.label, transcript: it.transcript })));
}

/** Samples per second of optimiser steps (features from the cache, as in training), median over `steps`. */
async function trainThroughput(m: EmoSLLM, cache: FeatureCache, data: Awaited<ReturnType<typeof clips>>, batch: number, steps: number): Promise<number> {
  const states = await cache.getMany(data.map((d) => d.samples));
  const ex = data.map((d, i) => ({ id: String(i), states: states[i], label: m.labels.indexOf(d.label), transcript: d.transcript }));
  const times: number[] = [];
  for (let s = 0; s < steps + 1; s++) {
    const part = Array.from({ length: batch }, (_, k) => ex[(s * batch + k) % ex.length]);
    const b = buildBatch(part, m.prompt(), { crop: { frames: Math.round(3 * m.frameRate), rng: new Rng(s) }, nQueries: m.mapperConfig.nQueries });
    const t0 = performance.now();
    await m.trainStep(b);
    if (s > 0) times.push(performance.now() - t0); // step 0 compiles the session
  }
  return (batch * 1000) / median(times);
}

/** ms per 3 s clip through predict (encoder + mapper + LLM scoring), median after one warm-up. */
async function inferMs(m: EmoSLLM, data: Awaited<ReturnType<typeof clips>>, n: number): Promise<number> {
  await predictSamples(m, data[0].samples, { segment: 'whole' });
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await predictSamples(m, data[i % data.length].samples, { segment: 'whole', transcript: data[i % data.length].transcript });
    times.push(performance.now() - t0);
  }
  return median(times);
}

export async function benchEmoSLLM(): Promise<Record<string, number>> {
  const labels = ['anger', 'boredom', 'disgust', 'fear', 'happiness', 'neutral', 'sadness'];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-bench-'));
  try {
    const data = await clips(64);
    // (a) fbank + tiny
    const tiny = EmoSLLM.create({ labels, encoder: { kind: 'fbank', stack: 4 }, llmDir: writeTinyLlama(path.join(tmp, 'tiny'), { seed: 0 }), llmTrain: 'full', mapper: { dModel: 256, numHeads: 4 }, seed: 0 });
    let fbankTrain: number;
    let fbankInfer: number;
    try {
      const cache = new FeatureCache(path.join(tmp, 'cache'), tiny.encoder);
      fbankTrain = await trainThroughput(tiny, cache, data, 16, 10);
      await tiny.releaseTraining();
      fbankInfer = await inferMs(tiny, data, 20);
    } finally {
      await tiny.release();
    }
    log(`fbank + tiny: ${round(fbankTrain)} training clips/s, ${round(fbankInfer)} ms per 3 s clip`);

    // (b) WavLM-base-plus + Llama-3.2-1B shapes, LoRA
    // the random 1B checkpoint plus the Llama-3 tokenizer (same vocabulary); EMOSLLM_BENCH_SMALL: the tiny LLM
    let llmDir = path.join(tmp, 'llama-1b');
    if (process.env.EMOSLLM_BENCH_SMALL === '1') llmDir = writeTinyLlama(llmDir, { seed: 1 });
    else {
      fs.mkdirSync(llmDir);
      const src = llama1bCheckpoint();
      for (const f of fs.readdirSync(src)) fs.symlinkSync(path.join(src, f), path.join(llmDir, f));
      for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(builtinLlama3TokenizerDir(), f), path.join(llmDir, f));
    }
    const big = EmoSLLM.create({ labels, encoder: { kind: 'hf', path: wavlmBasePlusCheckpoint() }, llmDir, llmTrain: 'lora', lora: { r: 8, alpha: 16, targetModules: ['q_proj', 'v_proj'] }, seed: 0 });
    let bigTrain: number;
    let bigInfer: number;
    let speedup: number;
    try {
      const cache = new FeatureCache(path.join(tmp, 'cache'), big.encoder, { layers: big.spec.encoderLayers });
      const few = data.slice(0, 8);
      // cache speed-up: encoder states computed (miss) vs read back from the cache's disk entries (hit)
      await cache.getMany([few[0].samples]); // compiles the encoder session
      const t0 = performance.now();
      await cache.getMany(few.slice(1).map((d) => d.samples));
      const miss = (performance.now() - t0) / (few.length - 1);
      const fresh = new FeatureCache(path.join(tmp, 'cache'), big.encoder, { layers: big.spec.encoderLayers });
      const t1 = performance.now();
      await fresh.getMany(few.slice(1).map((d) => d.samples));
      const hit = (performance.now() - t1) / (few.length - 1);
      speedup = miss / hit;
      log(`feature cache (WavLM-base-plus, 3 s): ${round(miss)} ms computed, ${round(hit, 2)} ms from disk: ${round(speedup)}x`);
      bigTrain = await trainThroughput(big, cache, few, 4, 2);
      await big.releaseTraining();
      bigInfer = await inferMs(big, few, 3);
    } finally {
      await big.release();
    }
    log(`WavLM-base-plus + Llama-1B (LoRA r=8): ${round(bigTrain, 2)} training clips/s, ${round(bigInfer)} ms per 3 s clip`);
    return {
      fbank_tiny_train_samples_per_s: round(fbankTrain),
      fbank_tiny_infer_ms: round(fbankInfer),
      wavlm_llama1b_train_samples_per_s: round(bigTrain, 3),
      wavlm_llama1b_infer_ms: round(bigInfer),
      cache_speedup: round(speedup),
    };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
