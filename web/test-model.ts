/**
 * A STAND-IN export for the browser demo's tests, until `emosllm export` of a trained model exists.
 *
 * Follows the "emosllm-onnx/1" contract (web/src/manifest.ts) exactly, built with our own graph builder:
 *   audio [1, samples] -> a fixed 16-band filterbank (Conv1d, 25 ms frames, 10 ms hop) -> mean frame energy
 *   per band -> log -> centred over bands (spectral shape, not loudness) -> a fixed random linear layer ->
 *   scores [1, 4]; probabilities = softmax(scores).
 * It knows nothing about emotions: the labels are names only. The filterbank weights (25.6 KB) go to an
 * external data file, so the page's external-data path is exercised too.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Graph, add, conv1d, emitModel, encodeModel, log, matmul, mul, reduceMean, softmax, sub, unsqueeze } from '../src/graph/index.ts';
import { EXPORT_FORMAT, type ExportManifest, INPUT_NAME, OUTPUT_PROBABILITIES, OUTPUT_SCORES } from './src/manifest.ts';

export const TEST_LABELS = ['anger', 'happiness', 'neutral', 'sadness'];

export interface TestExportOptions {
  labels?: string[];
  seed?: number;
  windowSeconds?: number;
  hopSeconds?: number;
}

/** Small deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Writes manifest.json + model.onnx (+ its external data) into `dir`; returns the manifest. */
export function makeTestExport(dir: string, opts: TestExportOptions = {}): ExportManifest {
  const labels = opts.labels ?? TEST_LABELS;
  const C = labels.length;
  const sr = 16000;
  const frame = 400; // 25 ms: the contract's shortest input is exactly one frame
  const hop = 160;
  const bands = 16;
  const rand = rng(opts.seed ?? 1234);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());

  // Hann-windowed cosines at log-spaced centre frequencies, 100 Hz .. 7 kHz.
  const fb = new Float32Array(bands * frame);
  for (let b = 0; b < bands; b++) {
    const fc = 100 * Math.pow(7000 / 100, b / (bands - 1));
    for (let k = 0; k < frame; k++) {
      const hann = 0.5 - 0.5 * Math.cos((2 * Math.PI * k) / (frame - 1));
      fb[b * frame + k] = (hann * Math.cos((2 * Math.PI * fc * k) / sr)) / Math.sqrt(frame / 4);
    }
  }
  const w = Float32Array.from({ length: bands * C }, () => 0.12 * gauss());
  const bias = Float32Array.from({ length: C }, () => 0.1 * gauss());

  const g = new Graph();
  const audio = g.input(INPUT_NAME, 'float32', [1, 'samples']);
  const x = unsqueeze(audio, [1]); // [1, 1, samples]
  const y = conv1d(x, g.constant(fb, [bands, 1, frame], 'float32', 'filterbank'), undefined, { stride: hop }); // [1, bands, frames]
  const energy = reduceMean(mul(y, y), [2]); // [1, bands]
  const logE = log(add(energy, 1e-6));
  const shape = sub(logE, reduceMean(logE, [1], true));
  const scores = add(matmul(shape, g.constant(w, [bands, C], 'float32', 'head.weight')), g.constant(bias, [1, C], 'float32', 'head.bias'));
  const probabilities = softmax(scores, -1);

  const model = emitModel({ [OUTPUT_PROBABILITIES]: probabilities, [OUTPUT_SCORES]: scores }, { graphName: 'emosllm-test-standin' });
  fs.mkdirSync(dir, { recursive: true });
  const external: string[] = [];
  for (const f of model.files) {
    if (f.kind !== 'bytes') throw new Error('test model: unexpected checkpoint-linked tensor');
    fs.writeFileSync(path.join(dir, f.location), f.data);
    external.push(f.location);
  }
  fs.writeFileSync(path.join(dir, 'model.onnx'), encodeModel(model));
  const manifest: ExportManifest = {
    format: EXPORT_FORMAT,
    labels: [...labels],
    sample_rate: sr,
    window_seconds: opts.windowSeconds ?? 3,
    hop_seconds: opts.hopSeconds ?? 1.5,
    model: 'model.onnx',
    ...(external.length ? { external_data: external } : {}),
  };
  fs.writeFileSync(path.join(dir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  return manifest;
}

/**
 * A deterministic synthetic clip (16 kHz mono, in [-1, 1]) whose spectrum changes every second or two, so
 * the windows of the stand-in model disagree: a low voiced buzz, a hiss, a high voiced buzz, a quiet rumble.
 */
export function makeTestClip(seconds = 7, sampleRate = 16000, seed = 7): Float32Array {
  const rand = rng(seed);
  const n = Math.round(seconds * sampleRate);
  const x = new Float32Array(n);
  let lp = 0;
  for (let i = 0; i < n; i++) {
    const t = i / sampleRate;
    const u = (t / seconds) * 4; // four parts
    const noise = rand() * 2 - 1;
    let v: number;
    if (u < 1) {
      const f0 = 120 + 20 * Math.sin(2 * Math.PI * 1.5 * t);
      v = 0;
      for (let h = 1; h <= 12; h++) v += Math.sin(2 * Math.PI * f0 * h * t) / h;
      v *= 0.25;
    } else if (u < 2) {
      v = 0.3 * noise;
    } else if (u < 3) {
      const f0 = 280 + 40 * Math.sin(2 * Math.PI * 2 * t);
      v = 0;
      for (let h = 1; h <= 6; h++) v += Math.sin(2 * Math.PI * f0 * h * t) / (h * h);
      v *= 0.35;
    } else {
      lp += 0.02 * (noise - lp);
      v = 1.5 * lp;
    }
    const env = 0.6 + 0.4 * Math.sin(2 * Math.PI * 3 * t) ** 2;
    x[i] = Math.max(-1, Math.min(1, v * env));
  }
  return x;
}
