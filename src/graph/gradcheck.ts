/**
 * Gradient checking: our reverse-mode gradients against central finite differences, both computed by
 * ONNX Runtime on the emitted graph (float64, so differences of 1e-6 are meaningful).
 */
import { Graph, type Shape, type Value, topoSort } from './ir.ts';
import { constant, mul, reduceSum } from './ops.ts';
import { grad } from './autodiff.ts';
import { type Tensor, compile } from './runtime.ts';

export interface GradcheckInput {
  shape: number[];
  /** symbolic declared shape (same rank as `shape`), to exercise run-time shape paths */
  declared?: Shape;
  /** values for float inputs (default: uniform in [-1, 1]) */
  values?: Float64Array;
  /** non-float inputs (labels, indices, masks) are constants or fed as-is and get no gradient */
  fixed?: Tensor;
}

export interface GradcheckResult {
  maxAbsErr: number;
  maxAbsGrad: number;
  ops: Set<string>;
  perInput: Array<{ maxAbsErr: number; maxAbsGrad: number }>;
}

/** Small deterministic PRNG (mulberry32), so failures reproduce. */
export function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export async function gradcheck(
  inputs: GradcheckInput[],
  build: (xs: Value[]) => Value,
  opts: { seed?: number; h?: number; cacheDir?: string } = {},
): Promise<GradcheckResult> {
  const rand = rng(opts.seed ?? 1);
  const h = opts.h ?? 1e-6;
  const g = new Graph();
  const xs = inputs.map((inp, i) =>
    inp.fixed ? g.input(`x${i}`, inp.fixed.dtype, inp.declared ?? inp.shape) : g.input(`x${i}`, 'float64', inp.declared ?? inp.shape),
  );
  const y = build(xs);
  const ysize = y.size;
  if (ysize === undefined) throw new Error('gradcheck: output shape must be static');
  const r = Float64Array.from({ length: ysize }, () => rand() * 2 - 1);
  const loss = reduceSum(mul(y, constant(y, r, y.shape as number[])), y.shape.map((_, i) => i));
  const floatIdx = inputs.map((inp, i) => (inp.fixed ? -1 : i)).filter((i) => i >= 0);
  const grads = grad(loss, floatIdx.map((i) => xs[i]));
  const ops = new Set(topoSort([loss, ...grads]).map((n) => n.op));

  const outs: Record<string, Value> = { loss };
  grads.forEach((gv, k) => (outs[`g${k}`] = gv));
  // 'basic': ORT's fusions (Gelu, QuickGelu...) have float32-only kernels.
  const full = await compile(outs, { cacheDir: opts.cacheDir, threads: 1, name: 'gradcheck', graphOptimizationLevel: 'basic' });
  const lossOnly = await compile({ loss }, { cacheDir: opts.cacheDir, threads: 1, name: 'gradcheck-loss', graphOptimizationLevel: 'basic' });

  const feeds: Record<string, Tensor> = {};
  inputs.forEach((inp, i) => {
    if (inp.fixed) feeds[`x${i}`] = inp.fixed;
    else {
      const n = inp.shape.reduce((a, b) => a * b, 1);
      const data = inp.values ?? Float64Array.from({ length: n }, () => rand() * 2 - 1);
      feeds[`x${i}`] = { dtype: 'float64', shape: inp.shape, data: Float64Array.from(data) };
    }
  });
  const res = await full.run(feeds);
  const perInput: GradcheckResult['perInput'] = [];
  for (let k = 0; k < floatIdx.length; k++) {
    const name = `x${floatIdx[k]}`;
    const x = feeds[name].data as Float64Array;
    const analytic = res[`g${k}`].data as Float64Array;
    let maxErr = 0;
    let maxG = 0;
    for (let j = 0; j < x.length; j++) {
      const keep = x[j];
      x[j] = keep + h;
      const lp = ((await lossOnly.run(feeds)).loss.data as Float64Array)[0];
      x[j] = keep - h;
      const lm = ((await lossOnly.run(feeds)).loss.data as Float64Array)[0];
      x[j] = keep;
      const numeric = (lp - lm) / (2 * h);
      maxErr = Math.max(maxErr, Math.abs(numeric - analytic[j]));
      maxG = Math.max(maxG, Math.abs(numeric));
    }
    perInput.push({ maxAbsErr: maxErr, maxAbsGrad: maxG });
  }
  await full.release();
  await lossOnly.release();
  return {
    maxAbsErr: Math.max(0, ...perInput.map((p) => p.maxAbsErr)),
    maxAbsGrad: Math.max(0, ...perInput.map((p) => p.maxAbsGrad)),
    ops,
    perInput,
  };
}
