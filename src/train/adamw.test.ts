import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { SafetensorsCheckpoint } from '../io/safetensors.ts';
import { checkLoraGradFolder } from '../models/parity/llama.ts';
import { AdamW, clipGradNorm } from './adamw.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const GRAD_DIR = path.resolve(here, '../../../shared/fixtures/hf-parity/llama_lora_grad');
const ADAPTER = path.resolve(here, '../../../shared/fixtures/hf-parity/llama_lora/adapter_model.safetensors');

function fixtures() {
  const file = path.join(GRAD_DIR, 'expected.safetensors');
  if (!fs.existsSync(file) || !fs.existsSync(ADAPTER))
    throw new Error(`hf-parity fixtures missing: need ${file} and ${ADAPTER} (../shared/fixtures/hf-parity next to the project)`);
  const exp = SafetensorsCheckpoint.open(file);
  const ad = SafetensorsCheckpoint.open(ADAPTER);
  const cfg = JSON.parse(fs.readFileSync(path.join(GRAD_DIR, 'train_config.json'), 'utf8'));
  const keys: string[] = cfg.trainable;
  const params = () => Object.fromEntries(keys.map((k) => [k, ad.readF32(k)]));
  const grads = (prefix: string) => Object.fromEntries(keys.map((k) => [k, exp.readF32(prefix + k)]));
  const opt = () =>
    new AdamW({ lr: cfg.adamw.lr, betas: cfg.adamw.betas, eps: cfg.adamw.eps, weightDecay: cfg.adamw.weight_decay });
  return { exp, keys, params, grads, opt };
}

const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);

describe('AdamW (torch 1.13 semantics)', () => {
  it('fed the stored gradients, reproduces adamw.step1 (params, exp_avg, exp_avg_sq) and adamw.step2 to ~1e-7', () => {
    const { exp, keys, params, grads, opt } = fixtures();
    const p = params();
    const o = opt();
    o.step(p, grads('grad.'));
    for (const k of keys) {
      expect(maxDiff(p[k], exp.readF32(`adamw.step1.${k}`))).toBeLessThanOrEqual(1e-7);
      expect(maxDiff(o.state().expAvg[k], exp.readF32(`adamw.step1.exp_avg.${k}`))).toBeLessThanOrEqual(1e-10);
      expect(maxDiff(o.state().expAvgSq[k], exp.readF32(`adamw.step1.exp_avg_sq.${k}`))).toBeLessThanOrEqual(1e-12);
      expect(o.state().step[k]).toBe(1);
    }
    o.step(p, grads('adamw.step2.grad.'));
    for (const k of keys) expect(maxDiff(p[k], exp.readF32(`adamw.step2.${k}`))).toBeLessThanOrEqual(1e-7);
  });

  it('weight decay is decoupled and applied first: a zero gradient only shrinks p by lr*wd', () => {
    const o = new AdamW({ lr: 1e-3, weightDecay: 0.01 });
    const p = { w: Float32Array.from([1, -2, 0.5]) };
    o.step(p, { w: new Float32Array(3) });
    expect(Array.from(p.w)).toEqual(Array.from(Float32Array.from([1, -2, 0.5].map((x) => Math.fround(x * Math.fround(1 - 1e-5))))));
  });

  it('parameters without a gradient are skipped and keep their step count', () => {
    const o = new AdamW({ lr: 1e-2 });
    const p = { a: Float32Array.from([1]), b: Float32Array.from([1]) };
    o.step(p, { a: Float32Array.from([0.5]) });
    expect(p.b[0]).toBe(1);
    expect(o.state().step).toEqual({ a: 1 });
  });

  it('a state taken with state() and restored with loadState() (as checkpoints do) continues bit-identically', () => {
    const { keys, params, grads, opt } = fixtures();
    const pa = params();
    const a = opt();
    a.step(pa, grads('grad.'));
    const b = opt();
    b.loadState(a.state());
    const pb = Object.fromEntries(keys.map((k) => [k, Float32Array.from(pa[k])]));
    a.step(pa, grads('adamw.step2.grad.'));
    b.step(pb, grads('adamw.step2.grad.'));
    for (const k of keys) expect(Array.from(pb[k])).toEqual(Array.from(pa[k]));
    expect(b.state().step[keys[0]]).toBe(2);
  });
});

describe('clipGradNorm (torch.nn.utils.clip_grad_norm_)', () => {
  it('returns the total 2-norm over all gradients and scales by max_norm / (total + 1e-6) when above', () => {
    const g = { a: Float32Array.from([3, 0]), b: Float32Array.from([0, 4]) };
    const total = clipGradNorm(g, 1);
    expect(total).toBeCloseTo(5, 6);
    const coef = Math.fround(1 / Math.fround(5 + Math.fround(1e-6)));
    expect(g.a[0]).toBe(Math.fround(3 * coef));
    expect(g.b[1]).toBe(Math.fround(4 * coef));
  });
  it('leaves gradients alone below max_norm', () => {
    const g = [Float32Array.from([0.3, 0.4])];
    expect(clipGradNorm(g, 1)).toBeCloseTo(0.5, 6);
    expect(Array.from(g[0])).toEqual(Array.from(Float32Array.from([0.3, 0.4])));
  });
});

describe('AdamW in the training-step parity check (llama_lora_grad)', () => {
  it('both AdamW steps, their moments and the losses and gradients between them match torch', async () => {
    const rows = await checkLoraGradFolder(GRAD_DIR, 'llama_lora_grad', { cacheDir: path.join(os.tmpdir(), 'emosllm-test-cache') }, (hp) => new AdamW(hp));
    const bad = rows.filter((r) => r.status !== 'pass').map((r) => `${r.tensor}: ${r.status} max abs ${r.maxAbs} ${r.note ?? ''}`);
    expect(bad).toEqual([]);
    expect(rows.filter((r) => r.tensor.startsWith('adamw.')).length).toBe(48 + 1 + 16 + 16 + 1);
    expect(rows.length).toBe(3 + 16 + 1 + 48 + 1 + 16 + 16 + 1);
  });
});
