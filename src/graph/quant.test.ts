import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Graph, topoSort } from './ir.ts';
import { mul, reduceSum, tanh, constant } from './ops.ts';
import { grad } from './autodiff.ts';
import { rng } from './gradcheck.ts';
import { compile, tensor } from './runtime.ts';
import { type QuantizeMode, dequantize, parseQuantizeMode, quantize, quantizedConstants, quantizedLinear } from './quant.ts';
import { UserError } from '../util/errors.ts';

const cacheDir = path.join(os.tmpdir(), 'emosllm-test-cache');
const rand = rng(12);
const randn = (n: number) => Float32Array.from({ length: n }, () => rand() * 2 - 1);

/** y = x W^T in float64 on the host. */
function hostLinear(x: Float32Array, w: Float32Array, m: number, k: number, n: number): Float64Array {
  const y = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
    let s = 0;
    for (let t = 0; t < k; t++) s += x[i * k + t] * w[j * k + t];
    y[i * n + j] = s;
  }
  return y;
}

const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);

describe.each<QuantizeMode>(['int8', 'int4'])('quantised linear (%s)', (mode) => {
  const [M, K, N] = [5, 72, 100]; // ragged: neither is a multiple of 32
  const w = randn(N * K);
  const q = quantize(mode, w, N, K);
  const wd = dequantize(q);

  it('dequantises close to the float32 weight (error within half a quantisation step)', () => {
    const err = maxAbs(w.map((v, i) => v - wd[i]));
    expect(err).toBeGreaterThan(0);
    expect(err).toBeLessThanOrEqual((mode === 'int8' ? 1 / 127 : 1 / 7) * 0.5 + 1e-6);
  });

  it('the ONNX Runtime product equals x times the dequantised weight', async () => {
    const g = new Graph();
    const x = g.input('x', 'float32', ['m', K]);
    const y = quantizedLinear(x, q, quantizedConstants(g, 'w', q));
    const s = await compile({ y }, { cacheDir, name: `quant-${mode}` });
    const xv = randn(M * K);
    const out = (await s.run({ x: tensor(xv, [M, K]) })).y.data as Float32Array;
    const ref = hostLinear(xv, wd, M, K, N);
    expect(out.length).toBe(M * N);
    expect(maxAbs(out.map((v, i) => v - ref[i]))).toBeLessThan(1e-4 * maxAbs(ref));
  });

  it('the gradient with respect to the activations matches central differences', async () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [M, K]);
    const r = randn(M * N);
    const y = tanh(quantizedLinear(x, q, quantizedConstants(g, 'w', q)));
    const loss = reduceSum(mul(y, constant(y, r, [M, N])), [0, 1]);
    const [dx] = grad(loss, [x]);
    const s = await compile({ loss, dx }, { cacheDir, name: `quant-grad-${mode}` });
    const xv = randn(M * K).map((v) => v * 0.2);
    const analytic = (await s.run({ x: tensor(xv, [M, K]) })).dx.data as Float32Array;
    const h = 1e-2;
    const lossAt = async (v: Float32Array) => ((await s.run({ x: tensor(v, [M, K]) })).loss.data as Float32Array)[0];
    let worst = 0;
    for (const i of [0, 7, 63, 64, 200, M * K - 1]) {
      const p = Float32Array.from(xv);
      const m = Float32Array.from(xv);
      p[i] += h;
      m[i] -= h;
      const numeric = ((await lossAt(p)) - (await lossAt(m))) / (2 * h);
      worst = Math.max(worst, Math.abs(numeric - analytic[i]));
    }
    expect(maxAbs(analytic)).toBeGreaterThan(0.1);
    expect(worst).toBeLessThan(2e-2 * maxAbs(analytic));
  });
});

describe('quantised backward memory and errors', () => {
  it('int8: the backward product dequantises the weight again instead of keeping the forward copy', () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [3, 64]);
    const q = quantize('int8', randn(32 * 64), 32, 64);
    const y = quantizedLinear(x, q, quantizedConstants(g, 'w', q));
    const [dx] = grad(reduceSum(y, [0, 1]), [x]);
    const dq = topoSort([dx]).filter((n) => n.op === 'DequantizeLinear');
    expect(dq).toHaveLength(1);
    const fwd = topoSort([y]).find((n) => n.op === 'DequantizeLinear')!;
    expect(dq[0]).not.toBe(fwd);
  });

  it('an unknown mode is a one-line UserError naming the accepted ones', () => {
    expect(() => parseQuantizeMode('int2', '--quantize')).toThrow(UserError);
    expect(() => parseQuantizeMode('int2', '--quantize')).toThrow(/unknown quantisation "int2"; expected int8 or int4/);
    expect(parseQuantizeMode('int4')).toBe('int4');
  });
});
