import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { normalizeWaveformGraph, readPreprocessorConfig, PREPROCESSOR_DEFAULTS } from './normalize.ts';
import { Graph } from '../graph/ir.ts';
import { compile, tensor } from '../graph/runtime.ts';
import { normalizeWaveform } from '../../test/oracles/hf-normalize.ts';
import { UserError } from '../util/errors.ts';
import { hfParity, tempDir } from '../../test/fixtures-gen/paths.ts';
import { readSafetensors } from '../../test/fixtures-gen/safetensors.ts';

describe('the numpy-exact oracle (test/oracles/hf-normalize.ts) matches HF Wav2Vec2FeatureExtractor', () => {
  // The parity fixtures hold raw waveforms and the extractor's input_values (right-padded batch of 2).
  for (const model of ['wav2vec2', 'hubert', 'wavlm']) {
    it(`${model}: bit-identical input_values over valid samples, padding = padding_value`, () => {
      const dir = hfParity(model);
      const cfg = readPreprocessorConfig(dir);
      expect(cfg.doNormalize).toBe(true);
      const t = readSafetensors(path.join(dir, 'expected.safetensors'));
      const iv = t.get('input_values')!;
      const [B, L] = iv.shape as [number, number];
      for (let b = 0; b < B; b++) {
        const raw = t.get(`raw_audio.${b}`)!.data as Float32Array;
        const padded = new Float32Array(L);
        padded.set(raw);
        const y = normalizeWaveform(padded, { doNormalize: cfg.doNormalize, validLength: raw.length, paddingValue: cfg.paddingValue });
        const want = (iv.data as Float32Array).subarray(b * L, (b + 1) * L);
        let mismatches = 0;
        for (let i = 0; i < L; i++) if (y[i] !== want[i]) mismatches++;
        expect(mismatches).toBe(0);
      }
    });
  }

  it('on a long signal, agrees with a float64 computation to 1e-5 and has zero mean', () => {
    const x = new Float32Array(100_003);
    for (let i = 0; i < x.length; i++) x[i] = Math.fround(Math.sin(i * 0.01) * 0.3 + 0.01 * Math.cos(i * 1.7) + 0.05);
    const y = normalizeWaveform(x, { doNormalize: true });
    let mean = 0;
    for (const v of x) mean += v;
    mean /= x.length;
    let v2 = 0;
    for (const v of x) v2 += (v - mean) ** 2;
    const sd = Math.sqrt(v2 / x.length + 1e-7);
    let maxDiff = 0;
    for (let i = 0; i < x.length; i++) maxDiff = Math.max(maxDiff, Math.abs(y[i]! - (x[i]! - mean) / sd));
    expect(maxDiff).toBeLessThan(1e-5);
    let m = 0;
    for (const v of y) m += v;
    expect(Math.abs(m / y.length)).toBeLessThan(1e-5);
  });

  it('do_normalize false returns the input untouched; constant input maps to zeros (var + 1e-7)', () => {
    const x = new Float32Array([0.5, 0.5, 0.5, 0.5]);
    expect(normalizeWaveform(x, { doNormalize: false })).toBe(x);
    expect([...normalizeWaveform(x, { doNormalize: true })]).toEqual([0, 0, 0, 0]);
    expect(() => normalizeWaveform(x, { doNormalize: true, validLength: 5 })).toThrow(RangeError);
  });
});

/** normalizeWaveformGraph on ONNX Runtime, one clip [1, S] at a time. */
async function runGraph(clips: Float32Array[]): Promise<Float32Array[]> {
  const g = new Graph();
  const s = await compile({ y: normalizeWaveformGraph(g.input('x', 'float32', [1, 'samples'])) }, { name: 'normalize' });
  try {
    const out: Float32Array[] = [];
    for (const x of clips) out.push((await s.run({ x: tensor(x, [1, x.length]) })).y.data as Float32Array);
    return out;
  } finally {
    await s.release();
  }
}

describe('normalizeWaveformGraph (the production normalisation)', () => {
  it('agrees with HF input_values (hf-parity fixtures) and the oracle to 1e-5', async () => {
    for (const model of ['wav2vec2', 'hubert', 'wavlm']) {
      const t = readSafetensors(path.join(hfParity(model), 'expected.safetensors'));
      const iv = t.get('input_values')!;
      const L = iv.shape[1] as number;
      const raws = [0, 1].map((b) => t.get(`raw_audio.${b}`)!.data as Float32Array);
      const ys = await runGraph(raws);
      raws.forEach((raw, b) => {
        const want = (iv.data as Float32Array).subarray(b * L, b * L + raw.length);
        const oracle = normalizeWaveform(raw, { doNormalize: true });
        let maxDiff = 0;
        for (let i = 0; i < raw.length; i++) maxDiff = Math.max(maxDiff, Math.abs(ys[b]![i]! - want[i]!), Math.abs(ys[b]![i]! - oracle[i]!));
        expect(maxDiff).toBeLessThan(1e-5);
      });
    }
  });

  it('on a long signal: within 1e-5 of the oracle, zero mean; constant input maps to zeros (var + 1e-7)', async () => {
    const x = new Float32Array(100_003);
    for (let i = 0; i < x.length; i++) x[i] = Math.fround(Math.sin(i * 0.01) * 0.3 + 0.01 * Math.cos(i * 1.7) + 0.05);
    const [y, flat] = await runGraph([x, new Float32Array(400).fill(0.5)]);
    const oracle = normalizeWaveform(x, { doNormalize: true });
    let maxDiff = 0;
    let m = 0;
    for (let i = 0; i < x.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(y![i]! - oracle[i]!));
      m += y![i]!;
    }
    expect(maxDiff).toBeLessThan(1e-5);
    expect(Math.abs(m / x.length)).toBeLessThan(1e-5);
    expect([...flat!].every((v) => v === 0)).toBe(true);
  });
});

describe('readPreprocessorConfig', () => {
  const dir = tempDir('preproc');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, text: string) => {
    const d = path.join(dir, name);
    fs.mkdirSync(d, { recursive: true });
    fs.writeFileSync(path.join(d, 'preprocessor_config.json'), text);
    return d;
  };

  it('reads the fixture configs', () => {
    const cfg = readPreprocessorConfig(hfParity('wav2vec2'));
    expect(cfg).toEqual({ doNormalize: true, samplingRate: 16000, returnAttentionMask: true, paddingValue: 0, featureSize: 1, paddingSide: 'right' });
  });

  it('fills HF defaults for missing keys (base checkpoints: no attention mask)', () => {
    expect(readPreprocessorConfig(write('min', '{"feature_extractor_type": "Wav2Vec2FeatureExtractor"}'))).toEqual(PREPROCESSOR_DEFAULTS);
    expect(readPreprocessorConfig(write('nonorm', '{"do_normalize": false, "return_attention_mask": false}')).doNormalize).toBe(false);
  });

  it('rejects bad configs with one line naming the file', () => {
    const bad: Array<[string, string, RegExp]> = [
      ['json', '{"do_normalize": tru', /invalid JSON/],
      ['array', '[1,2]', /expected a JSON object/],
      ['type', '{"feature_extractor_type": "WhisperFeatureExtractor"}', /not supported/],
      ['bool', '{"do_normalize": "yes"}', /do_normalize must be true or false/],
      ['rate', '{"sampling_rate": 0}', /sampling_rate must be/],
      ['size', '{"feature_size": 80}', /feature_size must be 1/],
    ];
    for (const [name, text, re] of bad) {
      const d = write(name, text);
      let err: unknown;
      try {
        readPreprocessorConfig(d);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(UserError);
      const msg = (err as Error).message;
      expect(msg).toMatch(re);
      expect(msg.startsWith(path.join(d, 'preprocessor_config.json') + ': ')).toBe(true);
      expect(msg).not.toContain('\n');
    }
    expect(() => readPreprocessorConfig(path.join(dir, 'nope'))).toThrow(/preprocessor_config.json: file not found/);
  });
});
