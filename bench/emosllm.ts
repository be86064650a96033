/**
 * EmoSLLM benchmark (`npm run bench -- emosllm`): training throughput and inference latency of the whole
 * pipeline, for (a) the built-in fbank + tiny-LLM configuration and (b) a WavLM-base-plus-shaped encoder with a
 * Llama-3.2-1B-shaped LLM (random weights with the real shapes, written by the models suite's checkpoint
 * writer; LoRA r = 8 on q_proj and v_proj; the paper's 768-wide mapper), plus the feature cache's speed-up.
 *
 * Inputs are real emodb-dev clips (../shared/data/emodb-dev) made exactly 3 s long: longer clips are cut,
 * shorter ones looped (repeated from their start), never zero-padded. Keys:
 *   *_train_samples_per_s   clips per second of `train()` itself (the trainer's loop: batch building from the
 *                           feature cache, crops, augmentation, forward + backward, gradient clipping, AdamW
 *                           step), timed from the end of the first step (which compiles the session) to the
 *                           end of the last; features are cached before the first step, as in training
 *   *_infer_ms              ms per 3 s clip through predictSamples (encoder + mapper + label scoring), median
 *                           after one warm-up, on the trained model folder
 *   cache_speedup           WavLM-base-plus states computed (a miss) vs read back by a fresh cache from files
 *                           dropped from the page cache first (a cold disk hit), ms per 3 s clip
 * EMOSLLM_BENCH_SMALL=1 puts the tiny LLM in (b) (a smoke run; the JSON says "small": true).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadAudio16k } from '../src/audio/decode.ts';
import { writeWav } from '../src/audio/wav.ts';
import { toCsv } from '../src/data/csv.ts';
import { loadDataset } from '../src/data/dataset.ts';
import { predictSamples } from '../src/eval/predict.ts';
import { FeatureCache } from '../src/features/cache.ts';
import { EmoSLLM } from '../src/models/emosllm.ts';
import { openFrameEncoder, releaseFrameEncoder } from '../src/models/frame-encoders.ts';
import { builtinLlama3TokenizerDir } from '../src/models/prompt.ts';
import { writeTinyLlama } from '../src/models/tiny.ts';
import { type TrainConfig, defaultTrainConfig } from '../src/train/config.ts';
import { train } from '../src/train/trainer.ts';
import { llama1bCheckpoint, wavlmBasePlusCheckpoint } from './models.ts';
import { log, median, round } from './util.ts';

const EMODB = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../shared/data/emodb-dev');
const SR = 16000;
const CLIP = 3 * SR;

interface Clip {
  samples: Float32Array;
  label: string;
  speaker: string;
  transcript?: string;
}

/** Exactly 3 s: cut, or looped from the start. */
function exactly3s(x: Float32Array): Float32Array {
  if (x.length >= CLIP) return x.slice(0, CLIP);
  const out = new Float32Array(CLIP);
  for (let i = 0; i < CLIP; i += x.length) out.set(x.subarray(0, Math.min(x.length, CLIP - i)), i);
  return out;
}

async function clips(n: number): Promise<Clip[]> {
  if (!fs.existsSync(path.join(EMODB, 'manifest.csv'))) throw new Error(`${EMODB} is missing: the emosllm bench reads real clips from ../shared/data/emodb-dev`);
  const ds = await loadDataset(EMODB);
  const items = ds.items.filter((_, i) => i % Math.floor(ds.items.length / n) === 0).slice(0, n);
  return Promise.all(items.map(async (it) => ({ samples: exactly3s(await loadAudio16k(it.path)), label: it.label, speaker: it.speaker, transcript: it.transcript })));
}

/** The clips as 3 s WAVs with a manifest.csv, a corpus `train()` reads. */
function writeCorpus(dir: string, data: Clip[]): string {
  fs.mkdirSync(dir, { recursive: true });
  const rows = data.map((d, i) => {
    const file = path.join(dir, `clip${i}.wav`);
    writeWav(file, d.samples, SR);
    return [file, d.speaker, d.label, d.transcript ?? ''];
  });
  fs.writeFileSync(path.join(dir, 'manifest.csv'), toCsv([['path', 'speaker', 'emotion', 'transcript'], ...rows]));
  return dir;
}

/** Clips per second of `train()` over `steps` timed steps (one more runs first: it compiles the session); the trained model folder. */
async function trainThroughput(config: TrainConfig, out: string, steps: number): Promise<number> {
  const ends: number[] = [];
  await train({ ...config, maxSteps: steps + 1, validFraction: 0, checkpointEvery: steps + 1, evalEvery: steps + 1 }, out, {
    hooks: { log: () => {}, onStep: () => ends.push(performance.now()) },
  });
  return (steps * config.batchSize * config.gradAccum * 1000) / (ends[ends.length - 1]! - ends[0]!);
}

/** ms per 3 s clip through predict (encoder + mapper + LLM scoring), median after one warm-up. */
async function inferMs(modelDir: string, data: Clip[], n: number): Promise<number> {
  const m = EmoSLLM.load(modelDir);
  try {
    await predictSamples(m, data[0]!.samples, { segment: 'whole' });
    const times: number[] = [];
    for (let i = 0; i < n; i++) {
      const d = data[i % data.length]!;
      const t0 = performance.now();
      await predictSamples(m, d.samples, { segment: 'whole', transcript: d.transcript });
      times.push(performance.now() - t0);
    }
    return median(times);
  } finally {
    await m.release();
  }
}

/** Flushes every file under `dir` and drops it from the page cache (GNU dd's nocache: POSIX_FADV_DONTNEED). */
function dropFromPageCache(dir: string): void {
  for (const e of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const file = path.join(e.parentPath, e.name);
    const fd = fs.openSync(file, 'r');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    const r = spawnSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
    if (r.status !== 0) throw new Error(`dd could not drop ${file} from the page cache: ${r.stderr}`);
  }
}

export async function benchEmoSLLM(): Promise<Record<string, number>> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-bench-'));
  try {
    const data = await clips(64);
    const cacheDir = path.join(tmp, 'cache');
    // (a) fbank + tiny, the defaults
    const corpus = writeCorpus(path.join(tmp, 'corpus'), data);
    const tinyOut = path.join(tmp, 'tiny');
    const fbankTrain = await trainThroughput(defaultTrainConfig({ data: corpus, batchSize: 16, cacheDir }), tinyOut, 10);
    const fbankInfer = await inferMs(tinyOut, data, 20);
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
    const encoder = wavlmBasePlusCheckpoint();
    const few = data.slice(0, 8);

    // cache speed-up: encoder states computed (miss) vs read back from disk by a fresh cache (cold hit)
    const wavlm = openFrameEncoder({ kind: 'hf', path: encoder });
    let miss: number;
    let hit: number;
    try {
      const speedDir = path.join(tmp, 'cache-speed');
      const cache = new FeatureCache(speedDir, wavlm);
      await cache.getMany([few[0]!.samples]); // compiles the encoder session
      const t0 = performance.now();
      await cache.getMany(few.slice(1).map((d) => d.samples));
      miss = (performance.now() - t0) / (few.length - 1);
      dropFromPageCache(path.join(speedDir, 'features'));
      const fresh = new FeatureCache(speedDir, wavlm);
      const t1 = performance.now();
      await fresh.getMany(few.slice(1).map((d) => d.samples));
      hit = (performance.now() - t1) / (few.length - 1);
    } finally {
      await releaseFrameEncoder(wavlm);
    }
    const speedup = miss / hit;
    log(`feature cache (WavLM-base-plus, 3 s): ${round(miss)} ms computed, ${round(hit, 2)} ms from disk (cold page cache): ${round(speedup)}x`);

    const bigOut = path.join(tmp, 'big');
    const bigCorpus = writeCorpus(path.join(tmp, 'corpus-big'), few);
    const bigTrain = await trainThroughput(defaultTrainConfig({ data: bigCorpus, encoder, llm: llmDir, batchSize: 4, cacheDir }), bigOut, 2);
    const bigInfer = await inferMs(bigOut, few, 3);
    log(`WavLM-base-plus + Llama-1B (LoRA r=8): ${round(bigTrain, 2)} training clips/s, ${round(bigInfer)} ms per 3 s clip`);
    return {
      fbank_tiny_train_samples_per_s: round(fbankTrain),
      fbank_tiny_infer_ms: round(fbankInfer),
      wavlm_llama1b_train_samples_per_s: round(bigTrain, 3),
      wavlm_llama1b_infer_ms: round(bigInfer),
      cache_speedup: round(speedup),
      cache_miss_ms: round(miss),
      cache_cold_hit_ms: round(hit, 2),
    };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
