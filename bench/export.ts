/**
 * Export benchmark (`npm run bench -- export`): `emosllm export` float vs `--int8` of one trained model, on 75
 * emodb-dev clips made exactly 3 s long (cut, or looped from the start), through plain onnxruntime-node with
 * the project's session options. The model is the default configuration (fbank + tiny LLM) trained for 200
 * steps on emodb-dev, or EMOSLLM_BENCH_MODEL=<model folder>. Keys:
 *   clips                    clips compared (75)
 *   int8_same_labels         clips whose top label is the same in both exports
 *   int8_max_prob_change     max |p_int8 - p_float| over clips and labels
 *   float_ms_per_3s_clip / int8_ms_per_3s_clip   model.onnx run time per clip, median after one warm-up
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { loadAudio16k } from '../src/audio/decode.ts';
import { argmax } from '../src/audio/segments.ts';
import { loadDataset } from '../src/data/dataset.ts';
import { exportModel } from '../src/export/export.ts';
import { sessionOptions } from '../src/graph/runtime.ts';
import { defaultTrainConfig } from '../src/train/config.ts';
import { train } from '../src/train/trainer.ts';
import { log, median, round } from './util.ts';

const EMODB = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../shared/data/emodb-dev');
const CLIP = 3 * 16000;
const N = 75;

function exactly3s(x: Float32Array): Float32Array {
  if (x.length >= CLIP) return x.slice(0, CLIP);
  const out = new Float32Array(CLIP);
  for (let i = 0; i < CLIP; i += x.length) out.set(x.subarray(0, Math.min(x.length, CLIP - i)), i);
  return out;
}

/** Probabilities per clip and the median ms per clip of one export's model.onnx. */
async function runExport(dir: string, clips: Float32Array[]): Promise<{ probs: Float32Array[]; ms: number }> {
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  const s = await ort.InferenceSession.create(path.join(dir, manifest.model), sessionOptions());
  try {
    const run = async (x: Float32Array) => (await s.run({ audio: new ort.Tensor('float32', x, [1, x.length]) })).probabilities!.data as Float32Array;
    await run(clips[0]!);
    const probs: Float32Array[] = [];
    const times: number[] = [];
    for (const x of clips) {
      const t0 = performance.now();
      probs.push(Float32Array.from(await run(x)));
      times.push(performance.now() - t0);
    }
    return { probs, ms: median(times) };
  } finally {
    await s.release();
  }
}

export async function benchExport(): Promise<Record<string, number>> {
  if (!fs.existsSync(path.join(EMODB, 'manifest.csv'))) throw new Error(`${EMODB} is missing: the export bench reads real clips from ../shared/data/emodb-dev`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-bench-export-'));
  try {
    let model = process.env.EMOSLLM_BENCH_MODEL;
    if (!model) {
      model = path.join(tmp, 'model');
      log('training the default configuration on emodb-dev, 200 steps');
      await train(defaultTrainConfig({ data: EMODB, maxSteps: 200, cacheDir: path.join(tmp, 'cache') }), model, { hooks: { log: () => {} } });
    }
    const ds = await loadDataset(EMODB);
    const step = Math.floor(ds.items.length / N);
    const items = ds.items.filter((_, i) => i % step === 0).slice(0, N);
    const clips = await Promise.all(items.map(async (it) => exactly3s(await loadAudio16k(it.path))));
    await exportModel(model, path.join(tmp, 'float'), { stages: false, log: () => {} });
    await exportModel(model, path.join(tmp, 'int8'), { stages: false, quantize: 'int8', log: () => {} });
    const f = await runExport(path.join(tmp, 'float'), clips);
    const q = await runExport(path.join(tmp, 'int8'), clips);
    let same = 0;
    let maxChange = 0;
    f.probs.forEach((p, i) => {
      if (argmax(p) === argmax(q.probs[i]!)) same++;
      p.forEach((v, j) => (maxChange = Math.max(maxChange, Math.abs(v - q.probs[i]![j]!))));
    });
    log(`int8 vs float on ${clips.length} clips: same label on ${same}, max prob. change ${maxChange.toFixed(4)}; ${round(f.ms)} -> ${round(q.ms)} ms per clip`);
    return { clips: clips.length, int8_same_labels: same, int8_max_prob_change: round(maxChange, 4), float_ms_per_3s_clip: round(f.ms), int8_ms_per_3s_clip: round(q.ms) };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
