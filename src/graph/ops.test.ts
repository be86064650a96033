import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Graph, type Value } from './ir.ts';
import * as O from './ops.ts';
import { OPS, INT_MAX } from './ops.ts';
import { gelu, linear, maskedCrossEntropy, rmsNorm, silu } from './nn.ts';
import { type GradcheckInput, gradcheck, rng } from './gradcheck.ts';
import { grad, vjp } from './autodiff.ts';
import { compile } from './runtime.ts';
import { topoSort } from './ir.ts';
import type { Tensor } from './runtime.ts';

const cacheDir = path.join(os.tmpdir(), 'emosllm-test-cache');
const rand = rng(20261124);
/** A random dim in [lo, hi] (seeded): shapes vary per case but reproduce. */
const rd = (lo = 2, hi = 4) => lo + Math.floor(rand() * (hi - lo + 1));

const pos = (shape: number[]): GradcheckInput => {
  const n = shape.reduce((a, b) => a * b, 1);
  return { shape, values: Float64Array.from({ length: n }, () => 0.5 + rand()) };
};
/** Values kept away from 0 (for Abs, Relu, Sign kinks). */
const awayFromZero = (shape: number[]): GradcheckInput => {
  const n = shape.reduce((a, b) => a * b, 1);
  return { shape, values: Float64Array.from({ length: n }, () => (rand() < 0.5 ? -1 : 1) * (0.1 + rand())) };
};
/** Distinct values (no ties for Max/Min/ReduceMax). */
const distinct = (shape: number[], offset = 0): GradcheckInput => {
  const n = shape.reduce((a, b) => a * b, 1);
  const vals = Array.from({ length: n }, (_, i) => (i + offset * 0.37) * 0.13);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [vals[i], vals[j]] = [vals[j], vals[i]];
  }
  return { shape, values: Float64Array.from(vals, (v) => v - n * 0.06) };
};
const ints = (shape: number[], values: number[]): GradcheckInput => ({
  shape,
  fixed: { dtype: 'int64', shape, data: BigInt64Array.from(values.map(BigInt)) } as Tensor,
});
const bools = (shape: number[], values: boolean[]): GradcheckInput => ({
  shape,
  fixed: { dtype: 'bool', shape, data: Uint8Array.from(values.map(Number)) } as Tensor,
});

interface Case {
  name: string;
  inputs: GradcheckInput[];
  build: (xs: Value[]) => Value;
  h?: number;
  tol?: number;
}

const B = rd();
const T = rd();
const D = rd(3, 5);
const cases: Case[] = [];
const unaryCases: Array<[string, (x: Value) => Value, (s: number[]) => GradcheckInput]> = [
  ['Neg', O.neg, (s) => ({ shape: s })],
  ['Exp', O.exp, (s) => ({ shape: s })],
  ['Log', O.log, pos],
  ['Sqrt', O.sqrt, pos],
  ['Reciprocal', O.reciprocal, pos],
  ['Tanh', O.tanh, (s) => ({ shape: s })],
  ['Sigmoid', O.sigmoid, (s) => ({ shape: s })],
  ['Sin', O.sin, (s) => ({ shape: s })],
  ['Cos', O.cos, (s) => ({ shape: s })],
  ['Abs', O.abs, awayFromZero],
  ['Relu', O.relu, awayFromZero],
  ['Identity', O.identity, (s) => ({ shape: s })],
];
for (const [name, f, gen] of unaryCases) cases.push({ name, inputs: [gen([B, D])], build: ([x]) => f(x) });
// Erf on both sides of the float64 series/tail switch at |x| = 3.5
cases.push({
  name: 'Erf',
  inputs: [{ shape: [8], values: Float64Array.from([-4.2, -3.6, -2.5, -0.7, 0.05, 1.3, 3.0, 3.9]) }],
  build: ([x]) => O.erf(x),
});

// binary ops with broadcasting in both directions (leading dims, size-1 dims)
cases.push({ name: 'Add broadcast', inputs: [{ shape: [B, T, D] }, { shape: [T, 1] }], build: ([a, b]) => O.add(a, b) });
cases.push({ name: 'Sub broadcast', inputs: [{ shape: [T, 1] }, { shape: [B, T, D] }], build: ([a, b]) => O.sub(a, b) });
cases.push({ name: 'Mul broadcast', inputs: [{ shape: [B, 1, D] }, { shape: [1, T, 1] }], build: ([a, b]) => O.mul(a, b) });
cases.push({ name: 'Div broadcast', inputs: [{ shape: [D] }, pos([B, T, D])], build: ([a, b]) => O.div(a, b) });
cases.push({ name: 'Pow', inputs: [pos([B, D]), { shape: [D] }], build: ([a, b]) => O.pow(a, b) });
cases.push({ name: 'Pow constant exponent', inputs: [pos([B, D])], build: ([a]) => O.pow(a, 3) });
cases.push({ name: 'Max', inputs: [distinct([B, D]), distinct([D], 1)], build: ([a, b]) => O.maximum(a, b) });
cases.push({ name: 'Min', inputs: [distinct([B, D]), distinct([1, D], 2)], build: ([a, b]) => O.minimum(a, b) });
cases.push({
  name: 'Where broadcast',
  inputs: [bools([B, D], Array.from({ length: B * D }, (_, i) => i % 3 !== 0)), { shape: [B, D] }, { shape: [D] }],
  build: ([c, a, b]) => O.where(c, a, b),
});
cases.push({
  name: 'Cast round trip',
  inputs: [{ shape: [B, D] }],
  build: ([x]) => O.cast(O.cast(x, 'float32'), 'float64'),
  h: 1e-2,
  tol: 1e-5,
});

// matrix products: weight-style [.., K] x [K, N], batched with broadcast, transposed operands
const K = rd(2, 5);
const N = rd(2, 4);
cases.push({ name: 'MatMul weight', inputs: [{ shape: [B, T, K] }, { shape: [K, N] }], build: ([a, b]) => O.matmul(a, b) });
cases.push({ name: 'MatMul batch broadcast', inputs: [{ shape: [B, 1, T, K] }, { shape: [3, K, N] }], build: ([a, b]) => O.matmul(a, b) });
cases.push({ name: 'MatMul lhs 2-D', inputs: [{ shape: [T, K] }, { shape: [B, K, N] }], build: ([a, b]) => O.matmul(a, b) });
cases.push({ name: 'MatMul transB', inputs: [{ shape: [B, T, K] }, { shape: [N, K] }], build: ([a, b]) => O.matmul(a, b, { transB: true }) });
cases.push({ name: 'MatMul transA', inputs: [{ shape: [B, K, T] }, { shape: [B, K, N] }], build: ([a, b]) => O.matmul(a, b, { transA: true }) });
// Gemm: every transpose combination, alpha/beta, bias broadcast from [N] (linear layers: A [M, K], B [N, K] with transB)
for (const [tA, tB] of [[false, false], [false, true], [true, false], [true, true]])
  cases.push({
    name: `Gemm transA=${+tA} transB=${+tB}`,
    inputs: [{ shape: tA ? [5, 3] : [3, 5] }, { shape: tB ? [2, 5] : [5, 2] }, { shape: [2] }], // M=3, K=5, N=2: distinct
    build: ([a, b, c]) => O.gemm(a, b, c, { transA: tA, transB: tB, alpha: 0.7, beta: 1.3 }),
  });

// reductions
cases.push({ name: 'ReduceSum keepdims', inputs: [{ shape: [B, T, D] }], build: ([x]) => O.reduceSum(x, [1], true) });
cases.push({ name: 'ReduceSum', inputs: [{ shape: [B, T, D] }], build: ([x]) => O.reduceSum(x, [0, 2]) });
cases.push({ name: 'ReduceMean', inputs: [{ shape: [B, T, D] }], build: ([x]) => O.reduceMean(x, [-1]) });
cases.push({ name: 'ReduceMax', inputs: [distinct([B, T, D])], build: ([x]) => O.reduceMax(x, [1], true) });
cases.push({ name: 'Softmax', inputs: [{ shape: [B, T, D] }], build: ([x]) => O.softmax(x, -1) });
cases.push({ name: 'Softmax axis 1', inputs: [{ shape: [B, T, D] }], build: ([x]) => O.softmax(x, 1) });
cases.push({ name: 'LogSoftmax', inputs: [{ shape: [B, D] }], build: ([x]) => O.logSoftmax(x, -1) });
cases.push({
  name: 'LayerNormalization',
  inputs: [{ shape: [B, T, D] }, { shape: [D] }, { shape: [D] }],
  build: ([x, s, b]) => O.layerNorm(x, s, b, 1e-5),
});
cases.push({ name: 'LayerNormalization no bias', inputs: [{ shape: [B, D] }, { shape: [D] }], build: ([x, s]) => O.layerNorm(x, s, undefined, 1e-3) });

// shape and data movement
cases.push({ name: 'Reshape', inputs: [{ shape: [B, T, 6] }], build: ([x]) => O.reshape(x, [0, -1, 2, 3]) });
cases.push({ name: 'Transpose', inputs: [{ shape: [B, T, D] }], build: ([x]) => O.transpose(x, [2, 0, 1]) });
cases.push({ name: 'Concat', inputs: [{ shape: [B, 1, D] }, { shape: [B, T, D] }, { shape: [B, 2, D] }], build: (xs) => O.concat(xs, 1) });
cases.push({
  name: 'Split',
  inputs: [{ shape: [B, 5] }],
  build: ([x]) => {
    const [a, b] = O.splitInto(x, [2, 3], 1);
    return O.concat([O.mul(b, 2), O.exp(a)], 1);
  },
});
cases.push({ name: 'Slice', inputs: [{ shape: [B, 6, D] }], build: ([x]) => O.slice(x, [1, 1], [-1, INT_MAX], [1, 2]) });
cases.push({ name: 'Slice negative start', inputs: [{ shape: [6, D] }], build: ([x]) => O.slice(x, [-4], [5], [0]) });
cases.push({ name: 'Pad', inputs: [{ shape: [B, D] }], build: ([x]) => O.pad(x, [1, 0, 0, 2]) });
cases.push({
  name: 'Gather (repeated rows)',
  inputs: [{ shape: [5, D] }, ints([2, 3], [0, 4, 0, 2, 2, 2])],
  build: ([e, i]) => O.gather(e, i, 0),
});
cases.push({
  name: 'GatherElements',
  inputs: [{ shape: [B, D] }, ints([B, 2], Array.from({ length: 2 * B }, (_, i) => (i * 7) % D))],
  build: ([x, i]) => O.gatherElements(x, i, 1),
});
cases.push({ name: 'Expand', inputs: [{ shape: [T, 1] }], build: ([x]) => O.expand(x, [B, T, D]) });
cases.push({ name: 'Unsqueeze', inputs: [{ shape: [B, D] }], build: ([x]) => O.unsqueeze(x, [0, 2]) });
cases.push({ name: 'Squeeze', inputs: [{ shape: [B, 1, D] }], build: ([x]) => O.squeeze(x, [1]) });
cases.push({ name: 'CumSum', inputs: [{ shape: [B, T] }], build: ([x]) => O.cumsum(x, 1) });

// symbolic (run-time) shapes: gradients that must read shapes at run time
const sym = (shape: number[], declared: (number | string)[], extra: Partial<GradcheckInput> = {}): GradcheckInput => ({ shape, declared, ...extra });
cases.push({ name: 'symbolic ReduceMean', inputs: [sym([B, T, D], ['b', 't', D])], build: ([x]) => O.reduceSum(O.reduceMean(x, [1]), [0]) });
cases.push({ name: 'symbolic Reshape', inputs: [sym([B, T, 6], ['b', 't', 6])], build: ([x]) => O.reduceSum(O.reshape(x, [0, 0, 2, 3]), [0, 1]) });
cases.push({ name: 'symbolic Concat', inputs: [sym([B, 2], ['b', 2]), sym([B, T], ['b', 't'])], build: ([a, b]) => O.reduceSum(O.concat([a, O.exp(b)], 1), [0, 1], true) });
cases.push({ name: 'symbolic Slice', inputs: [sym([B, T + 2], ['b', 't'])], build: ([x]) => O.reduceSum(O.slice(x, [1], [-1], [1]), [0, 1]) });
cases.push({
  name: 'symbolic MatMul weight',
  inputs: [sym([B, T, K], ['b', 't', K]), { shape: [K, N] }],
  build: ([a, w]) => O.reduceSum(O.matmul(a, w), [0, 1]),
});
cases.push({
  name: 'symbolic Gather',
  inputs: [{ shape: [5, D] }, { ...ints([B, T], Array.from({ length: B * T }, (_, i) => i % 5)), declared: ['b', 't'] }],
  build: ([e, i]) => O.reduceSum(O.gather(e, i, 0), [0, 1]),
});

// composites
cases.push({ name: 'gelu', inputs: [{ shape: [B, D] }], build: ([x]) => gelu(O.mul(x, 3)) });
cases.push({ name: 'silu', inputs: [{ shape: [B, D] }], build: ([x]) => silu(O.mul(x, 3)) });
cases.push({ name: 'linear', inputs: [{ shape: [B, T, K] }, { shape: [N, K] }, { shape: [N] }], build: ([x, w, b]) => linear(x, w, b) });
cases.push({ name: 'rmsNorm', inputs: [{ shape: [B, T, D] }, { shape: [D] }], build: ([x, w]) => rmsNorm(x, w, 1e-6) });
cases.push({
  name: 'maskedCrossEntropy',
  inputs: [{ shape: [B, T, 6] }, ints([B, T], Array.from({ length: B * T }, (_, i) => (i % 3 === 0 ? -100 : (i * 5) % 6)))],
  build: ([logits, labels]) => {
    const { sum, count } = maskedCrossEntropy(logits, labels);
    return O.div(sum, count);
  },
});
cases.push({
  name: 'masked attention',
  inputs: [{ shape: [B, T, D] }, { shape: [B, T, D] }, { shape: [B, T, D] }, bools([B, 1, T], Array.from({ length: B * T }, (_, i) => i % T !== T - 1))],
  build: ([q, k, v, m]) => {
    const s = O.mul(O.matmul(q, k, { transB: true }), 1 / Math.sqrt(D));
    const p = O.softmax(O.where(m, s, -1e30), -1);
    return O.matmul(p, v);
  },
});

describe('gradient rules vs central finite differences (float64)', () => {
  const covered = new Set<string>();
  for (const c of cases) {
    it(`${c.name} [${c.inputs.map((i) => i.shape.join('x')).join(', ')}]`, async () => {
      const r = await gradcheck(c.inputs, c.build, { h: c.h, cacheDir });
      for (const op of r.ops) covered.add(op);
      const tol = c.tol ?? 1e-7;
      r.perInput.forEach((p) => {
        expect(p.maxAbsErr).toBeLessThanOrEqual(tol * Math.max(1, p.maxAbsGrad));
      });
      expect(r.maxAbsGrad).toBeGreaterThan(0); // the case must exercise a real gradient
    });
  }
  it('every op with a gradient rule is checked', () => {
    const withRule = Object.entries(OPS).filter(([, d]) => d.grad).map(([k]) => k);
    const missing = withRule.filter((op) => !covered.has(op));
    expect(missing).toEqual([]);
  });
});

describe('autodiff', () => {
  it('does no backward work for frozen weights', () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [2, 4, 8]);
    const w1 = g.constant(new Float32Array(64).fill(0.1), [8, 8], 'float32', 'frozen1');
    const w2 = g.input('w2', 'float32', [8, 8]);
    const y = O.matmul(O.matmul(x, w1), w2);
    const [gw2] = grad(O.reduceSum(y, [0, 1, 2]), [w2]);
    const nodes = topoSort([gw2]);
    // forward x@w1 feeds the weight gradient of w2, but nothing computes d/dw1 or d/dx
    const matmuls = nodes.filter((n) => n.op === 'MatMul');
    expect(matmuls.length).toBe(2); // x@w1 (needed as input of the w2 gradient) and the gradient GEMM
    expect(nodes.some((n) => n.inputs.includes(w1) && n.name.includes('.grad'))).toBe(false);
  });
  it('refuses gradients through forward-only ops', () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [1, 2, 8]);
    const w = g.input('w', 'float32', [2, 2, 3]);
    const y = O.conv1d(x, w, undefined);
    expect(() => grad(O.reduceSum(y, [0, 1, 2]), [w])).toThrow(/no gradient for Conv.*forward only/);
  });
  it('gives the gradient of an intermediate value asked for together with its ancestors', async () => {
    // y = sum(exp(h)), h = x * x: dy/dh = exp(h), dy/dx = 2 x exp(h)
    const g = new Graph();
    const x = g.input('x', 'float32', [3]);
    const h = O.mul(x, x);
    const y = O.reduceSum(O.exp(h), [0]);
    const xs = Float32Array.from([0.5, -1, 0.25]);
    for (const order of [[h, x], [x, h]]) {
      const gs = grad(y, order);
      const s = await compile({ gh: gs[order.indexOf(h)]!, gx: gs[order.indexOf(x)]! }, { cacheDir });
      try {
        const r = await s.run({ x: { dtype: 'float32', shape: [3], data: xs } });
        const gh = r.gh.data as Float32Array;
        const gx = r.gx.data as Float32Array;
        xs.forEach((v, i) => {
          expect(gh[i]).toBeCloseTo(Math.exp(v * v), 5);
          expect(gx[i]).toBeCloseTo(2 * v * Math.exp(v * v), 5);
        });
      } finally {
        await s.release();
      }
    }
  });
  it('refuses to differentiate with respect to an integer value', () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [3]);
    const k = g.input('k', 'int64', [3]);
    const y = O.mul(x, O.cast(k, 'float32'));
    expect(() => vjp([y], [O.constant(y, [1, 1, 1], [3])], [x, k])).toThrow(/int64 is not a float type/);
  });
  it('sums cotangents of a value used several times', async () => {
    const r = await gradcheck([{ shape: [3] }], ([x]) => O.add(O.mul(x, x), O.mul(O.exp(x), x)), { cacheDir });
    expect(r.maxAbsErr).toBeLessThan(1e-7);
  });
});
