import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { grad } from '../graph/autodiff.ts';
import { rng } from '../graph/gradcheck.ts';
import { Graph, type Value } from '../graph/ir.ts';
import { mul, reduceSum } from '../graph/ops.ts';
import { type CompiledGraph, type Tensor, compile } from '../graph/runtime.ts';
import { SafetensorsCheckpoint } from '../io/safetensors.ts';
import { checkQPMapperFolder } from './parity/qpmapper.ts';
import {
  type QPMapperConfig,
  buildQPMapper,
  checkFrameCount,
  defaultQPMapperConfig,
  initQPMapper,
  loadQPMapper,
  qpmapperFeeds,
  qpmapperInputs,
  qpmapperParamShapes,
  saveQPMapper,
} from './qpmapper.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');
const fixture = path.resolve(repo, '../shared/fixtures/hf-parity/qpmapper_ref');
const cacheDir = path.join(os.tmpdir(), 'emosllm-test-cache');

function requireFixture(): void {
  if (!fs.existsSync(path.join(fixture, 'expected.safetensors')))
    throw new Error(`QPMapper parity fixture missing: ${fixture} (expected ../shared/fixtures/hf-parity/qpmapper_ref next to the repo)`);
}

describe('QPMapper parity with the PyTorch reference (qpmapper_ref/)', () => {
  it('every row passes', async () => {
    requireFixture();
    const rows = await checkQPMapperFolder(fixture, 'qpmapper_ref', { cacheDir });
    expect(rows.filter((r) => r.status !== 'pass')).toEqual([]); // no FAIL, and no stored tensor left unchecked
    const tensors = rows.map((r) => r.tensor);
    expect(tensors).toContain('h_ds');
    expect(tensors).toContain('loss');
    expect(tensors).toContain('grad.hidden_states');
    expect(tensors).toContain('grad.hidden_states[padded frames] == 0');
    for (const [n] of qpmapperParamShapes(loadQPMapper(fixture).config)) expect(tensors).toContain(`grad.${n}`);
    // the end-to-end step through Llama + LoRA: logits, loss, d/d h_ds, and one grad call for mapper + LoRA
    for (const t of ['e2e.h_ds', 'e2e.logits', 'e2e.loss', 'e2e.grad.h_ds', 'e2e.grad.queries', 'e2e.grad.queries (mapper VJP)'])
      expect(tensors).toContain(t);
    expect(tensors.filter((t) => /^e2e\.grad\.base_model\.model\..*\.lora_[AB]\.weight$/.test(t)).length).toBeGreaterThan(0);
  });
});

describe('QPMapper', () => {
  let cfg: QPMapperConfig;
  let params: Record<string, Float32Array>;
  let hidden: Float32Array;
  let mask: BigInt64Array;
  let hsShape: number[];
  let fwd: CompiledGraph;

  beforeAll(async () => {
    requireFixture();
    ({ config: cfg, params } = loadQPMapper(fixture));
    const exp = SafetensorsCheckpoint.open(path.join(fixture, 'expected.safetensors'));
    hidden = exp.readF32('hidden_states');
    hsShape = exp.info('hidden_states').shape;
    mask = exp.readI64('frame_mask');
    exp.close();
    // forward + the gradients of a fixed projection, B and T symbolic
    const g = new Graph();
    const p = qpmapperInputs(g, cfg);
    const hs = g.input('hidden_states', 'float32', [cfg.numHiddenStates, 'B', 'T', cfg.dIn]);
    const fm = g.input('frame_mask', 'int64', ['B', 'T']);
    const r = g.input('R', 'float32', ['B', cfg.nQueries, cfg.dLlm]);
    const h = buildQPMapper(g, cfg, p, hs, fm);
    const names = qpmapperParamShapes(cfg).map(([n]) => n);
    const grads = grad(reduceSum(mul(h, r), [0, 1, 2]), names.map((n) => p[n]));
    const outs: Record<string, Value> = { h_ds: h };
    names.forEach((n, i) => (outs[`grad.${n}`] = grads[i]));
    fwd = await compile(outs, { cacheDir, name: 'qpmapper test' });
  });

  const R = (B: number) => {
    const rand = rng(7);
    return Float32Array.from({ length: B * cfg.nQueries * cfg.dLlm }, () => rand() * 2 - 1);
  };
  const run = (hs: Float32Array, shape: number[], m: BigInt64Array) =>
    fwd.run({
      ...qpmapperFeeds(cfg, params),
      hidden_states: { dtype: 'float32', shape, data: hs },
      frame_mask: { dtype: 'int64', shape: [shape[1], shape[2]], data: m },
      R: { dtype: 'float32', shape: [shape[1], cfg.nQueries, cfg.dLlm], data: R(shape[1]) },
    });

  /** hidden states with the padded frames overwritten by `value(i)` */
  function withGarbage(value: (i: number) => number): Float32Array {
    const [L1, B, T, D] = hsShape;
    const out = hidden.slice();
    let k = 0;
    for (let l = 0; l < L1; l++)
      for (let b = 0; b < B; b++)
        for (let t = 0; t < T; t++)
          if (mask[b * T + t] === 0n) for (let c = 0; c < D; c++) out[((l * B + b) * T + t) * D + c] = value(k++);
    return out;
  }

  it('padded frames never change h_ds or the gradients, whatever they hold', async () => {
    expect(mask.some((m) => m === 0n)).toBe(true); // the fixture has padding
    const rand = rng(3);
    const a = await run(withGarbage(() => rand() * 2 - 1), hsShape, mask);
    const b = await run(withGarbage(() => 1e4 * (rand() - 0.5)), hsShape, mask);
    const c = await run(withGarbage((i) => (i % 3 === 0 ? NaN : i % 3 === 1 ? Infinity : -Infinity)), hsShape, mask);
    for (const k of Object.keys(a)) {
      expect(Array.from(b[k].data as Float32Array), k).toEqual(Array.from(a[k].data as Float32Array));
      expect(Array.from(c[k].data as Float32Array), k).toEqual(Array.from(a[k].data as Float32Array));
      expect((a[k].data as Float32Array).every(Number.isFinite), k).toBe(true);
    }
  });

  it('symbolic T: one session runs clips of different lengths; a padded row equals the clip alone', async () => {
    const [L1, B, T, D] = hsShape;
    const batch = await run(hidden, hsShape, mask);
    // row 1 alone, cropped to its valid frames
    const b1 = 1;
    const len = Number(mask.slice(b1 * T, (b1 + 1) * T).reduce((s, m) => s + m, 0n));
    expect(len).toBeLessThan(T);
    const single = new Float32Array(L1 * len * D);
    for (let l = 0; l < L1; l++) single.set(hidden.subarray(((l * B + b1) * T) * D, ((l * B + b1) * T + len) * D), l * len * D);
    const alone = await run(single, [L1, 1, len, D], new BigInt64Array(len).fill(1n));
    const n = cfg.nQueries * cfg.dLlm;
    const ref = (batch.h_ds.data as Float32Array).subarray(b1 * n, (b1 + 1) * n);
    const got = alone.h_ds.data as Float32Array;
    expect(alone.h_ds.shape).toEqual([1, cfg.nQueries, cfg.dLlm]);
    let maxDiff = 0;
    for (let i = 0; i < n; i++) maxDiff = Math.max(maxDiff, Math.abs(got[i] - ref[i]));
    expect(maxDiff).toBeLessThan(1e-5);
  });

  it('takes the hidden states as a list of [B, T, d_in] as well', async () => {
    const [L1, B, T, D] = hsShape;
    const g = new Graph();
    const p = qpmapperInputs(g, cfg);
    const list = Array.from({ length: L1 }, (_, l) => g.input(`hs${l}`, 'float32', ['B', 'T', D]));
    const fm = g.input('frame_mask', 'int64', ['B', 'T']);
    const s = await compile({ h_ds: buildQPMapper(g, cfg, p, list, fm) }, { cacheDir });
    const feeds: Record<string, Tensor> = { ...qpmapperFeeds(cfg, params), frame_mask: { dtype: 'int64', shape: [B, T], data: mask } };
    for (let l = 0; l < L1; l++) feeds[`hs${l}`] = { dtype: 'float32', shape: [B, T, D], data: hidden.slice(l * B * T * D, (l + 1) * B * T * D) };
    const got = (await s.run(feeds)).h_ds.data as Float32Array;
    const ref = (await run(hidden, hsShape, mask)).h_ds.data as Float32Array;
    let maxDiff = 0;
    for (let i = 0; i < ref.length; i++) maxDiff = Math.max(maxDiff, Math.abs(got[i] - ref[i]));
    expect(maxDiff).toBeLessThan(1e-6);
  });

  it('bool frame masks work like int64 ones', async () => {
    const [, B, T] = hsShape;
    const g = new Graph();
    const p = qpmapperInputs(g, cfg);
    const hs = g.input('hidden_states', 'float32', [cfg.numHiddenStates, 'B', 'T', cfg.dIn]);
    const fm = g.input('frame_mask', 'bool', ['B', 'T']);
    const s = await compile({ h_ds: buildQPMapper(g, cfg, p, hs, fm) }, { cacheDir });
    const got = await s.run({
      ...qpmapperFeeds(cfg, params),
      hidden_states: { dtype: 'float32', shape: hsShape, data: hidden },
      frame_mask: { dtype: 'bool', shape: [B, T], data: Uint8Array.from(mask, Number) },
    });
    // another session (forward only): equal up to float round-off
    const ref = (await run(hidden, hsShape, mask)).h_ds.data as Float32Array;
    const g2 = got.h_ds.data as Float32Array;
    let maxDiff = 0;
    for (let i = 0; i < ref.length; i++) maxDiff = Math.max(maxDiff, Math.abs(g2[i] - ref[i]));
    expect(maxDiff).toBeLessThan(1e-6);
  });

  it('save/load round trip keeps every parameter and the config', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qpmapper-'));
    try {
      const file = path.join(dir, 'mapper.safetensors');
      const p = initQPMapper(cfg, rng(11));
      saveQPMapper(file, cfg, p);
      const back = loadQPMapper(file);
      expect(back.config).toEqual(cfg);
      expect(Object.keys(back.params).sort()).toEqual(Object.keys(p).sort());
      for (const k of Object.keys(p)) expect(Buffer.from(back.params[k].buffer).equals(Buffer.from(p[k].buffer)), k).toBe(true);
      // self-describing: the config is JSON in __metadata__, keys are the reference names
      const ck = SafetensorsCheckpoint.open(file);
      expect(JSON.parse(ck.metadata.qpmapper_config).n_queries).toBe(cfg.nQueries);
      expect(ck.names()).toEqual(qpmapperParamShapes(cfg).map(([n]) => n).sort());
      ck.close();
      // a missing parameter is refused with its name
      const { ['out_proj.bias']: _drop, ...partial } = p;
      expect(() => saveQPMapper(path.join(dir, 'bad.safetensors'), cfg, partial)).toThrow(/out_proj\.bias/);
      expect(fs.readdirSync(dir)).toEqual(['mapper.safetensors']); // nothing half-written
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('init: shapes in definition order, PyTorch-like values, deterministic per seed', () => {
    const big = defaultQPMapperConfig({ dIn: 64, numHiddenStates: 5, dLlm: 96, dModel: 64, tMax: 200 });
    const a = initQPMapper(big, rng(5));
    const b = initQPMapper(big, rng(5));
    const c = initQPMapper(big, rng(6));
    const shapes = qpmapperParamShapes(big);
    expect(Object.keys(a)).toEqual(shapes.map(([n]) => n));
    for (const [n, s] of shapes) {
      expect(a[n].length, n).toBe(s.reduce((x, y) => x * y, 1));
      expect(Array.from(a[n]), n).toEqual(Array.from(b[n]));
    }
    expect(Array.from(a['queries'])).not.toEqual(Array.from(c['queries']));
    expect(a['layer_weights'].every((v) => v === 0)).toBe(true);
    expect(a['layers.0.norm1.weight'].every((v) => v === 1)).toBe(true);
    expect(a['final_norm.bias'].every((v) => v === 0)).toBe(true);
    const bound = 1 / Math.sqrt(64 * 4); // fc2's fan-in
    const fc2 = a['layers.1.mlp.fc2.weight'];
    expect(Math.max(...fc2.map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...fc2.map(Math.abs))).toBeGreaterThan(0.9 * bound);
    expect(Math.max(...a['in_proj.bias'].map(Math.abs))).toBeLessThanOrEqual(1 / 8);
    const pe = a['pos_emb'];
    const std = Math.sqrt(pe.reduce((s, v) => s + v * v, 0) / pe.length);
    expect(std).toBeGreaterThan(0.018);
    expect(std).toBeLessThan(0.022);
  });

  it('paper defaults, and clips longer than t_max are an error with a clear message', () => {
    const d = defaultQPMapperConfig({ dIn: 768, numHiddenStates: 13, dLlm: 2048 });
    expect(d).toMatchObject({ nQueries: 32, numLayers: 2, numHeads: 8, dModel: 768, mlpRatio: 4, layerNormEps: 1e-5 });
    expect(d.tMax).toBeGreaterThanOrEqual(1500); // 30 s at 50 Hz
    expect(() => checkFrameCount(d, 1500)).not.toThrow();
    expect(() => checkFrameCount(d, 1501)).toThrow(/1501 frames.*t_max is 1500.*crop/);
    expect(qpmapperParamShapes(d).find(([n]) => n === 'pos_emb')![1]).toEqual([32 + 1500, 768]);
  });
});
