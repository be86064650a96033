import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ortWeb from 'onnxruntime-web';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { emodbDev } from '../../test/fixtures-gen/paths.ts';
import { loadAudio16k } from '../audio/decode.ts';
import { rng } from '../graph/gradcheck.ts';
import { Graph } from '../graph/ir.ts';
import { type CompiledGraph, compile } from '../graph/runtime.ts';
import { FBANK_LOG_FLOOR, type FbankOptions } from './fbank.ts';
import { FbankEncoder } from '../../test/oracles/fbank.ts';
import { FBANK_FRAMES_DIM, buildFbankGraph } from './fbank-graph.ts';

const cacheDir = path.join(os.tmpdir(), 'emosllm-test-cache');

/**
 * Tolerances (max |graph - JS|), float32 graph vs the float64 JS FbankEncoder.
 * Measured over all 373 emodb-dev clips: 8.6e-4 with CMVN, 5.0e-3 without. The error is float32 round-off
 * of the 400-term DFT sums, so it is absolute in energy units: it only shows in log-energies of spectral
 * near-nulls (the raw worst case is a bin at log-energy -11.5, i.e. 1e-5 on Kaldi's int16 scale), and CMVN
 * divides it by the bin's spread. Typical clips are at 1e-5 .. 3e-4.
 */
const TOL_CMVN = 1e-3;
const TOL_RAW = 1e-2;

/** The JS encoder and a compiled graph of the same configuration, on a [1, S] input with S symbolic. */
interface Pair {
  enc: FbankEncoder;
  sess: CompiledGraph;
}

async function pair(opts: FbankOptions): Promise<Pair> {
  const enc = new FbankEncoder(opts);
  const g = new Graph();
  const samples = g.input('samples', 'float32', [1, 'S']);
  const features = buildFbankGraph(g, samples, enc.options);
  expect(features.shape).toEqual([1, FBANK_FRAMES_DIM, enc.options.numMelBins]);
  const sess = await compile({ features }, { cacheDir, name: 'fbank-graph' });
  return { enc, sess };
}

async function runGraph(sess: CompiledGraph, x: Float32Array): Promise<{ frames: number; data: Float32Array }> {
  const out = await sess.run({ samples: { dtype: 'float32', shape: [1, x.length], data: x } });
  const y = out.features!;
  expect(y.shape[0]).toBe(1);
  expect(y.shape[2]).toBeGreaterThan(0);
  return { frames: y.shape[1]!, data: y.data as Float32Array };
}

/** Runs both; checks frame counts; returns the JS result, the graph result and their max |diff|. */
async function compare(p: Pair, x: Float32Array) {
  const js = p.enc.encodeOne(x);
  const gr = await runGraph(p.sess, x);
  expect(gr.frames, `frames for S=${x.length}`).toBe(js.frames);
  const ref = js.states[0]!;
  expect(gr.data.length).toBe(ref.length);
  let maxErr = 0;
  for (let i = 0; i < ref.length; i++) maxErr = Math.max(maxErr, Math.abs(ref[i]! - gr.data[i]!));
  return { js: ref, graph: gr.data, frames: js.frames, maxErr };
}

const bitEqual = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

const rand = rng(20260311);
/** Speech-like synthetic test signal: two tones plus seeded noise, peak ~0.5. */
function synth(n: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => 0.3 * Math.sin(i * 0.05) + 0.1 * Math.sin(i * 0.9 + 1) + 0.1 * (rand() - 0.5));
}

const CLIPS = ['03a01Fa.wav', '08b02Tc.wav', '14a05Wa.wav', '09b02Wd.wav']; // the last is the worst of the 373 (raw)
const LENGTHS = [1, 100, 399, 400, 401, 559, 560, 561, 16000]; // < 1 frame, exactly 1, 1 + 1 sample, 2 - 1, 2, ...

describe('buildFbankGraph vs FbankEncoder.encodeOne', () => {
  let cm: Pair; // default encoder: CMVN on
  let raw: Pair; // plain log-mel
  const clips = new Map<string, Float32Array>();

  beforeAll(async () => {
    [cm, raw] = await Promise.all([pair({}), pair({ cmvn: false })]);
    const dir = emodbDev().wavDir;
    for (const name of CLIPS) clips.set(name, await loadAudio16k(path.join(dir, name)));
  });
  afterAll(async () => {
    await cm?.sess.release();
    await raw?.sess.release();
  });

  it(`real emodb clips, CMVN (max |diff| <= ${TOL_CMVN})`, async () => {
    for (const [name, x] of clips) {
      const r = await compare(cm, x);
      expect(r.frames).toBe(1 + Math.floor((x.length - 400) / 160));
      expect(r.maxErr, name).toBeLessThanOrEqual(TOL_CMVN);
    }
  });

  it(`real emodb clips, no CMVN (max |diff| <= ${TOL_RAW})`, async () => {
    for (const [name, x] of clips) {
      const r = await compare(raw, x);
      expect(r.maxErr, name).toBeLessThanOrEqual(TOL_RAW);
      // the large errors are isolated near-null bins: 99.9% of values agree to 1e-4
      let close = 0;
      for (let i = 0; i < r.js.length; i++) if (Math.abs(r.js[i]! - r.graph[i]!) <= 1e-4) close++;
      expect(close / r.js.length, name).toBeGreaterThan(0.999);
    }
  });

  it('edge lengths around one frame and one shift, with one session for every S', async () => {
    for (const n of LENGTHS) {
      const x = synth(n);
      const want = n < 400 ? 1 : 1 + Math.floor((n - 400) / 160); // clips shorter than a frame are zero-padded
      const a = await compare(cm, x);
      const b = await compare(raw, x);
      expect(a.frames, `S=${n}`).toBe(want);
      expect(a.maxErr, `S=${n} cmvn`).toBeLessThanOrEqual(TOL_CMVN);
      expect(b.maxErr, `S=${n} raw`).toBeLessThanOrEqual(TOL_RAW);
    }
  });

  it('an empty clip gives one frame of silence, like the JS encoder', async () => {
    for (const p of [cm, raw]) {
      const r = await compare(p, new Float32Array(0));
      expect(r.frames).toBe(1);
      expect(bitEqual(r.graph, r.js)).toBe(true);
    }
  });

  it('a reused session gives the same bits for a length it has seen before', async () => {
    const long = clips.get('03a01Fa.wav')!;
    const first = await runGraph(cm.sess, long);
    await runGraph(cm.sess, synth(123));
    await runGraph(cm.sess, long.subarray(0, 20000));
    const again = await runGraph(cm.sess, long);
    expect(again.frames).toBe(first.frames);
    expect(bitEqual(again.data, first.data)).toBe(true);
  });

  it('digital silence hits the log floor exactly as in JS; CMVN maps it to exactly 0', async () => {
    const floor = Math.fround(Math.log(FBANK_LOG_FLOOR));
    for (const n of [100, 400, 4000]) {
      const z = new Float32Array(n);
      const r = await compare(raw, z);
      expect(r.graph.every((v) => v === floor), `S=${n}`).toBe(true);
      expect(bitEqual(r.graph, r.js)).toBe(true);
      const c = await compare(cm, z);
      expect(c.graph.every((v) => v === 0), `S=${n}`).toBe(true);
      expect(bitEqual(c.graph, c.js)).toBe(true);
    }
    // a constant (DC) clip is silence too once each frame's mean is removed
    const dc = new Float32Array(4000).fill(0.25);
    expect(bitEqual((await compare(raw, dc)).graph, raw.enc.encodeOne(dc).states[0]!)).toBe(true);
    expect((await compare(cm, dc)).graph.every((v) => v === 0)).toBe(true);
  });

  it('speech after leading digital silence: silent frames are exact, the rest within tolerance', async () => {
    const speech = clips.get('08b02Tc.wav')!;
    const x = new Float32Array(3000 + speech.length);
    x.set(speech, 3000);
    const r = await compare(raw, x);
    expect(r.maxErr).toBeLessThanOrEqual(TOL_RAW);
    const silentFrames = 1 + Math.floor((3000 - 400) / 160); // frames that lie entirely in the zeros
    const floor = Math.fround(Math.log(FBANK_LOG_FLOOR));
    const head = r.graph.subarray(0, silentFrames * 80);
    expect(head.every((v) => v === floor)).toBe(true);
    expect(bitEqual(head, r.js.subarray(0, silentFrames * 80))).toBe(true);
    expect((await compare(cm, x)).maxErr).toBeLessThanOrEqual(TOL_CMVN);
  });

  it('follows non-default options (bins, window, pre-emphasis, DC removal, input scale)', async () => {
    const x = clips.get('14a05Wa.wav')!.subarray(0, 16000);
    const configs: FbankOptions[] = [
      { numMelBins: 40, windowType: 'hamming', preemphasis: 0 },
      { removeDcOffset: false, inputScale: 1, lowFreq: 60, highFreq: -400 },
    ];
    for (const opts of configs) {
      const p = await pair(opts);
      try {
        expect((await compare(p, x)).maxErr, JSON.stringify(opts)).toBeLessThanOrEqual(TOL_CMVN);
      } finally {
        await p.sess.release();
      }
    }
  });

  it('the emitted model runs unchanged in onnxruntime-web (WASM), with the same tolerances', async () => {
    ortWeb.env.wasm.numThreads = 1; // no worker threads inside the test process
    for (const p of [cm, raw]) {
      // the model folder compile() wrote: model.onnx plus the DFT and mel matrices as external data
      const dir = p.sess.modelDir;
      const externalData = fs
        .readdirSync(dir)
        .filter((f) => f !== 'model.onnx')
        .map((f) => ({ path: f, data: new Uint8Array(fs.readFileSync(path.join(dir, f))) }));
      const web = await ortWeb.InferenceSession.create(new Uint8Array(fs.readFileSync(path.join(dir, 'model.onnx'))), {
        executionProviders: ['wasm'],
        externalData,
      });
      try {
        const tol = p.enc.options.cmvn ? TOL_CMVN : TOL_RAW;
        for (const x of [clips.get('09b02Wd.wav')!, synth(100), synth(560), new Float32Array(4000)]) {
          const out = (await web.run({ samples: new ortWeb.Tensor('float32', x, [1, x.length]) })).features!;
          const ref = p.enc.encodeOne(x);
          expect(out.dims).toEqual([1, ref.frames, 80]);
          const y = out.data as Float32Array;
          let maxErr = 0;
          for (let i = 0; i < y.length; i++) maxErr = Math.max(maxErr, Math.abs(y[i]! - ref.states[0]![i]!));
          expect(maxErr, `S=${x.length} cmvn=${p.enc.options.cmvn}`).toBeLessThanOrEqual(tol);
        }
      } finally {
        await web.release();
      }
    }
  });
});
