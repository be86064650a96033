import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { Graph } from '../graph/ir.ts';
import { compile } from '../graph/runtime.ts';
import { SafetensorsFile, type TensorInput, writeSafetensors } from '../io/safetensors.ts';
import { UserError } from '../util/errors.ts';
import { loadSpeechEncoder } from './encoder.ts';
import { checkEncoderFolder } from './parity/encoders.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const FIXTURES = path.resolve(here, '../../../shared/fixtures/hf-parity');
const FOLDERS = ['wav2vec2', 'wav2vec2_stable', 'hubert', 'hubert_stable', 'wavlm', 'wavlm_stable'];

function fixture(name: string): string {
  const dir = path.join(FIXTURES, name);
  if (!fs.existsSync(path.join(dir, 'expected.safetensors')))
    throw new Error(`parity fixture folder ${dir} is missing (expected ../shared/fixtures/hf-parity next to the repository)`);
  return dir;
}

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-encoders-'));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

/** A writable copy of a fixture folder (the fixtures are read-only). */
function copyFixture(name: string, tag: string): string {
  const src = fixture(name);
  const dst = path.join(tmpRoot, `${name}-${tag}`);
  fs.mkdirSync(dst);
  for (const f of fs.readdirSync(src)) {
    fs.copyFileSync(path.join(src, f), path.join(dst, f));
    fs.chmodSync(path.join(dst, f), 0o644);
  }
  return dst;
}

/** Rewrites dir/model.safetensors through `edit` (name -> tensor map). */
function editWeights(dir: string, edit: (t: Map<string, TensorInput>) => void): void {
  const file = path.join(dir, 'model.safetensors');
  const st = SafetensorsFile.open(file);
  const tensors = new Map<string, TensorInput>();
  for (const info of st.infos()) tensors.set(info.name, { dtype: info.dtype, shape: info.shape, data: st.read(info.name) });
  st.close();
  edit(tensors);
  writeSafetensors(file, Object.fromEntries(tensors), { format: 'pt' });
}

function editConfig(dir: string, edit: (c: Record<string, unknown>) => void): void {
  const file = path.join(dir, 'config.json');
  const c = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  edit(c);
  fs.writeFileSync(file, JSON.stringify(c, null, 2));
}

/** Asserts `fn` throws a one-line UserError whose message matches every pattern. */
function expectUserError(fn: () => unknown, ...patterns: RegExp[]): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, 'expected a UserError').toBeInstanceOf(UserError);
  const msg = (err as Error).message;
  expect(msg.includes('\n')).toBe(false);
  for (const p of patterns) expect(msg).toMatch(p);
}

describe('speech encoders vs Hugging Face (hf-parity fixtures)', () => {
  for (const name of FOLDERS) {
    it(`${name}: every stored output matches`, async () => {
      const rows = await checkEncoderFolder(fixture(name), name);
      const failed = rows.filter((r) => r.status !== 'pass');
      expect(failed, JSON.stringify(failed)).toEqual([]);
      const tensors = new Set(rows.map((r) => r.tensor));
      for (const t of ['frame_mask', 'conv_features', 'hidden_states.0', 'last_hidden_state', 'nomask.last_hidden_state', 'single.1.last_hidden_state'])
        expect(tensors.has(t), t).toBe(true);
      expect(tensors.has('extract_features')).toBe(!name.startsWith('hubert'));
      expect(tensors.has('wavlm.relative_position_buckets')).toBe(name.startsWith('wavlm'));
      expect(rows.some((r) => r.tensor.startsWith('input_values['))).toBe(true);
    });
  }

  it('accepts torch>=2.1 weight-norm names and a head-model key prefix', async () => {
    const dir = copyFixture('wavlm', 'renamed');
    editWeights(dir, (t) => {
      const base = 'encoder.pos_conv_embed.conv';
      t.set(`${base}.parametrizations.weight.original0`, t.get(`${base}.weight_g`)!);
      t.set(`${base}.parametrizations.weight.original1`, t.get(`${base}.weight_v`)!);
      t.delete(`${base}.weight_g`);
      t.delete(`${base}.weight_v`);
      for (const [k, v] of [...t]) {
        t.delete(k);
        t.set(`wavlm.${k}`, v);
      }
    });
    const rows = await checkEncoderFolder(dir, 'wavlm-renamed');
    expect(rows.filter((r) => r.status !== 'pass')).toEqual([]);
  });

  it('takes the feature extractor int32 mask (and bool masks) as they come', async () => {
    const dir = fixture('wavlm_stable');
    const enc = loadSpeechEncoder(dir);
    const exp = SafetensorsFile.open(path.join(dir, 'expected.safetensors'));
    const [B, S] = exp.info('input_values').shape;
    const x = exp.readF32('input_values');
    const m32 = exp.read('attention_mask') as Int32Array;
    const ref = exp.readF32('last_hidden_state');
    const fm = exp.readI64('frame_mask');
    exp.close();
    expect(m32).toBeInstanceOf(Int32Array);
    for (const dtype of ['int32', 'bool'] as const) {
      const g = new Graph();
      const out = enc.build(g, g.input('x', 'float32', ['b', 's']), g.input('m', dtype, ['b', 's']));
      const s = await compile({ y: out.lastHiddenState }, { name: `enc-mask-${dtype}` });
      try {
        const m = dtype === 'int32' ? m32 : Uint8Array.from(m32);
        const r = await s.run({ x: { dtype: 'float32', shape: [B, S], data: x }, m: { dtype, shape: [B, S], data: m } });
        const y = r.y.data as Float32Array;
        const H = r.y.shape[2];
        let maxErr = 0;
        for (let i = 0; i < y.length; i++) if (fm[Math.floor(i / H)] !== 0n) maxErr = Math.max(maxErr, Math.abs(y[i] - ref[i]));
        expect(maxErr).toBeLessThan(1e-4);
      } finally {
        await s.release();
      }
    }
  });

  it('frame lengths, sizes and symbolic shapes', async () => {
    const enc = loadSpeechEncoder(fixture('wav2vec2'));
    expect(enc.numHiddenStates).toBe(3);
    expect(enc.hiddenSize).toBe(32);
    expect(enc.preprocessor.doNormalize).toBe(true);
    expect(enc.preprocessor.returnAttentionMask).toBe(true);
    // conv (10,5) (3,3) (3,2) (3,2): 8000 -> 1599 -> 533 -> 266 -> 132; 5920 -> 97; too short -> 0
    expect(enc.frameLengths([8000, 5920, 9, 0])).toEqual([132, 97, 0, 0]);
    const g = new Graph();
    const x = g.input('x', 'float32', ['b', 's']);
    const out = enc.build(g, x, undefined, { layers: [2, 0] });
    expect(out.hiddenStates).toHaveLength(2);
    const s = await compile({ h2: out.hiddenStates[0], h0: out.hiddenStates[1], m: out.frameMask }, { name: 'enc-sym' });
    try {
      for (const [b, n] of [
        [1, 5920],
        [3, 2000],
      ]) {
        const r = await s.run({ x: { dtype: 'float32', shape: [b, n], data: new Float32Array(b * n).map((_, i) => Math.sin(i * 0.01)) } });
        const t = enc.frameLengths([n])[0];
        expect(r.h2.shape).toEqual([b, t, 32]);
        expect(r.h0.shape).toEqual([b, t, 32]);
        expect(Array.from(r.m.data as Uint8Array).every((v) => v === 1)).toBe(true);
      }
    } finally {
      await s.release();
    }
    const g2 = new Graph();
    expect(() => enc.build(g2, g2.input('x', 'float32', [1, 100]), undefined, { layers: [3] })).toThrow(/hidden state 3/);
  });
});

describe('malformed speech encoder folders', () => {
  it('a missing tensor is named', () => {
    const dir = copyFixture('wav2vec2', 'missing');
    editWeights(dir, (t) => t.delete('encoder.layers.1.attention.k_proj.weight'));
    expectUserError(() => loadSpeechEncoder(dir), /missing tensor "encoder\.layers\.1\.attention\.k_proj\.weight"/);
  });

  it('a missing positional conv weight is named', () => {
    const dir = copyFixture('hubert', 'nopos');
    editWeights(dir, (t) => t.delete('encoder.pos_conv_embed.conv.weight_g'));
    expectUserError(() => loadSpeechEncoder(dir), /encoder\.pos_conv_embed\.conv\.weight_g/);
  });

  it('a wrong shape is named', () => {
    const dir = copyFixture('wavlm_stable', 'shape');
    editWeights(dir, (t) => t.set('encoder.layers.0.feed_forward.intermediate_dense.weight', { dtype: 'F32', shape: [63, 32], data: new Float32Array(63 * 32) }));
    expectUserError(() => loadSpeechEncoder(dir), /"encoder\.layers\.0\.feed_forward\.intermediate_dense\.weight" has shape \[63, 32\].*\[64, 32\]/);
  });

  it('an unknown model_type is named', () => {
    const dir = copyFixture('wav2vec2', 'type');
    editConfig(dir, (c) => (c.model_type = 'whisper'));
    expectUserError(() => loadSpeechEncoder(dir), /config\.json/, /"model_type" is "whisper"/);
  });

  it('unsupported options are named', () => {
    const cases: Array<[string, (c: Record<string, unknown>) => void, RegExp]> = [
      ['act', (c) => (c.feat_extract_activation = 'relu'), /"feat_extract_activation" is "relu"/],
      ['hact', (c) => (c.hidden_act = 'swish'), /"hidden_act" is "swish"/],
      ['norm', (c) => (c.feat_extract_norm = 'batch'), /"feat_extract_norm" is "batch"/],
      ['groups', (c) => (c.num_conv_pos_embedding_groups = 5), /"num_conv_pos_embedding_groups" \(5\) must divide hidden_size \(32\)/],
      ['heads', (c) => (c.num_attention_heads = 3), /"num_attention_heads" \(3\) must divide hidden_size/],
      ['kernel', (c) => (c.conv_kernel = [10, 3, 3]), /"conv_kernel" has 3 entries but conv_dim has 4/],
      ['adapter', (c) => (c.add_adapter = true), /"add_adapter" is true/],
      ['stable', (c) => (c.do_stable_layer_norm = 'yes'), /"do_stable_layer_norm" must be true or false/],
      ['buckets', (c) => (c.num_buckets = 161), /"num_buckets" must be even/],
    ];
    for (const [tag, edit, re] of cases) {
      const dir = copyFixture('wavlm', tag);
      editConfig(dir, edit);
      expectUserError(() => loadSpeechEncoder(dir), /config\.json/, re);
    }
  });
});
