/**
 * The exported model under plain onnxruntime-node: nothing of emosllm runs on that side (the WAV is read by a
 * 16-bit PCM parser in this file), and the probabilities must equal `emosllm predict`'s within 1e-4.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, emodbDev, tempDir } from '../../test/fixtures-gen/paths.ts';
import { trainSmallModel } from '../../test/fixtures-gen/model.ts';

const tmp = tempDir('export');
const env = { ...process.env, EMOSLLM_CACHE_DIR: path.join(tmp, 'cache') };
const CLI = path.join(REPO_ROOT, 'bin/emosllm.mjs');
const cli = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env });
let model = '';
const out = path.join(tmp, 'onnx');
const clips = ['03a01Fa.wav', '08a01Wa.wav', '13a05Lc.wav', '14a01Ea.wav'].map((f) => path.join(emodbDev().wavDir, f));

/** Mono 16-bit PCM WAV -> float samples / 32768 (the clips of emodb-dev are exactly that). */
function readPcm16(file: string): Float32Array {
  const b = fs.readFileSync(file);
  let off = 12;
  while (off + 8 <= b.length) {
    const id = b.toString('ascii', off, off + 4);
    const size = b.readUInt32LE(off + 4);
    if (id === 'data') {
      const n = size / 2;
      const x = new Float32Array(n);
      for (let i = 0; i < n; i++) x[i] = b.readInt16LE(off + 8 + 2 * i) / 32768;
      return x;
    }
    off += 8 + size + (size & 1);
  }
  throw new Error(`${file}: no data chunk`);
}

/** `emosllm predict` on the clips, then the export's model.onnx on the raw samples: same labels, probabilities within 1e-4. */
async function expectOnnxMatchesPredict(modelDir: string, onnxDir: string): Promise<void> {
  const m = JSON.parse(fs.readFileSync(path.join(onnxDir, 'manifest.json'), 'utf8'));
  const r = cli('predict', '--model', modelDir, '--segment', 'whole', ...clips);
  expect(r.status, r.stderr).toBe(0);
  const want = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  const s = await ort.InferenceSession.create(path.join(onnxDir, m.model));
  try {
    let worst = 0;
    for (const [i, file] of clips.entries()) {
      const x = readPcm16(file);
      const res = await s.run({ audio: new ort.Tensor('float32', x, [1, x.length]) });
      const p = Array.from(res.probabilities.data as Float32Array);
      expect(res.probabilities.dims).toEqual([1, m.labels.length]);
      m.labels.forEach((l: string, j: number) => (worst = Math.max(worst, Math.abs(p[j] - want[i].probabilities[l]))));
      expect(m.labels[p.indexOf(Math.max(...p))]).toBe(want[i].label);
    }
    expect(worst).toBeLessThan(1e-4);
  } finally {
    await s.release();
  }
}

beforeAll(async () => {
  model = await trainSmallModel(tmp, { cacheDir: env.EMOSLLM_CACHE_DIR });
  const r = cli('export', model, '--onnx', out);
  if (r.status !== 0) throw new Error(`export failed: ${r.stderr}`);
}, 300_000);
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('emosllm export', () => {
  it('writes model.onnx, the three stages and a manifest', () => {
    const m = JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    expect(m.format).toBe('emosllm-onnx/1');
    expect(m.labels).toEqual(JSON.parse(fs.readFileSync(path.join(model, 'emosllm.json'), 'utf8')).labels);
    expect(m.sample_rate).toBe(16000);
    expect(m.window_seconds).toBe(3);
    for (const f of [m.model, m.stages.encoder, m.stages.mapper, m.stages.llm]) expect(fs.existsSync(path.join(out, f)), f).toBe(true);
    expect(m.answers.first_targets).toHaveLength(m.labels.length);
  });

  it('manifest.json is meant for a public page: no value in it names a local path', () => {
    const text = fs.readFileSync(path.join(out, 'manifest.json'), 'utf8');
    expect(text).not.toContain(path.resolve(model));
    expect(text).not.toContain(os.tmpdir());
    const strings: string[] = [];
    JSON.parse(text, (_k, v) => (typeof v === 'string' && strings.push(v), v));
    for (const s of strings) expect(s.startsWith('/') || s.includes('..'), s).toBe(false);
  });

  it('model.onnx under plain onnxruntime-node reproduces emosllm predict within 1e-4', async () => {
    await expectOnnxMatchesPredict(model, out);
  });

  it('the built-in paralinguistic encoder (fbank+mfcc+prosody) exports too, and matches predict within 1e-4', async () => {
    const joined = await trainSmallModel(tmp, { cacheDir: env.EMOSLLM_CACHE_DIR, encoder: 'fbank+mfcc+prosody', name: 'model-prosody' });
    expect(JSON.parse(fs.readFileSync(path.join(joined, 'emosllm.json'), 'utf8')).encoder.features).toEqual(['fbank', 'mfcc', 'prosody']);
    const dir = path.join(tmp, 'onnx-prosody');
    const r = cli('export', joined, '--onnx', dir, '--no-stages');
    expect(r.status, r.stderr).toBe(0);
    await expectOnnxMatchesPredict(joined, dir);
  }, 300_000);

  it('the stages chained (encoder -> mapper -> llm with the manifest prompt and answers) equal model.onnx', async () => {
    const m = JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    const open = (f: string) => ort.InferenceSession.create(path.join(out, f));
    const [all, enc, map, llm] = await Promise.all([open(m.model), open(m.stages.encoder), open(m.stages.mapper), open(m.stages.llm)]);
    try {
      const x = readPcm16(clips[0]);
      const audio = new ort.Tensor('float32', x, [1, x.length]);
      const direct = (await all.run({ audio })).probabilities.data as Float32Array;
      const hs = (await enc.run({ audio })).hidden_states;
      const tokens = (await map.run({ hidden_states: hs })).audio_tokens;
      const i64 = (a: number[], dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(a.map(BigInt)), dims);
      const C = m.labels.length;
      const A = m.answers.answer_ids[0].length;
      const res = await llm.run({
        audio_tokens: tokens,
        prompt_ids: i64(m.prompt_ids, [1, m.prompt_ids.length]),
        first_targets: i64(m.answers.first_targets, [C]),
        answer_ids: i64(m.answers.answer_ids.flat(), [C, A]),
        answer_next: i64(m.answers.answer_next.flat(), [C, A]),
      });
      const chained = res.probabilities.data as Float32Array;
      for (let j = 0; j < C; j++) expect(Math.abs(chained[j] - direct[j])).toBeLessThan(1e-5);
    } finally {
      for (const s of [all, enc, map, llm]) await s.release();
    }
  });

  it('--int8: the LLM Gemms run in int8 under plain onnxruntime-node, close to the float export', async () => {
    const q = path.join(tmp, 'onnx-int8');
    const r = cli('export', model, '--onnx', q, '--int8', '--no-stages');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/\d+ Gemms in int8/);
    const m = JSON.parse(fs.readFileSync(path.join(q, 'manifest.json'), 'utf8'));
    expect(m.quantization).toBe('int8');
    const [f32, i8] = await Promise.all([ort.InferenceSession.create(path.join(out, 'model.onnx')), ort.InferenceSession.create(path.join(q, 'model.onnx'))]);
    try {
      for (const file of clips) {
        const x = readPcm16(file);
        const audio = new ort.Tensor('float32', x, [1, x.length]);
        const a = (await f32.run({ audio })).probabilities.data as Float32Array;
        const b = (await i8.run({ audio })).probabilities.data as Float32Array;
        expect(Math.abs(b.reduce((s, v) => s + v, 0) - 1)).toBeLessThan(1e-5);
        for (let j = 0; j < a.length; j++) expect(Math.abs(a[j] - b[j])).toBeLessThan(0.05);
        expect(a.some((v, j) => v !== b[j])).toBe(true); // really a different (quantised) computation
      }
    } finally {
      await f32.release();
      await i8.release();
    }
  });

  it('a folder that is not a model: one line, exit 1', () => {
    const r = cli('export', tmp, '--onnx', path.join(tmp, 'x'));
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/not an emosllm model folder/);
  });
});
