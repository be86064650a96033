/**
 * Gradient checking: our reverse-mode gradients against central finite differences, both computed by
 * ONNX Runtime on the emitted graph (float64, so differences of 1e-6 are meaningful).
 */
import onnxProto from 'onnx-proto';
import { Graph, type Shape, type Value, topoSort } from './ir.ts';
import { constant, mul, onnxDtypeCode, reduceSum } from './ops.ts';
import { grad } from './autodiff.ts';
import { type NodeLowering, scalarBytes } from './onnx.ts';
import { type Tensor, compile } from './runtime.ts';

const { onnx } = onnxProto;

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

/** Cosine similarity of two vectors (float64 sums): how well a gradient keeps its direction. */
export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`cosine: lengths ${a.length} and ${b.length}`);
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!;
    aa += a[i]! * a[i]!;
    bb += b[i]! * b[i]!;
  }
  return ab / Math.sqrt(aa * bb);
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
  const full = await compile(outs, { cacheDir: opts.cacheDir, threads: 1, name: 'gradcheck', graphOptimizationLevel: 'basic', lower: lowerFloat64Erf });
  const lossOnly = await compile({ loss }, { cacheDir: opts.cacheDir, threads: 1, name: 'gradcheck-loss', graphOptimizationLevel: 'basic', lower: lowerFloat64Erf });

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

/**
 * ONNX Runtime's CPU Erf has no float64 kernel, and float64 runs only serve the gradient checks, which need
 * full precision. So in float64, erf is the Maclaurin series (|x| <= 3.5; terms to n = 60 reach double
 * precision there) and 1 - erfc beyond, with the Numerical Recipes erfc (relative error 1.2e-7 of a value
 * below 7.5e-7, so absolute error < 1e-13).
 */
const lowerFloat64Erf: NodeLowering = (node, ins, outs, inits) => (node.op === 'Erf' && node.inputs[0].dtype === 'float64' ? erfFloat64(node.name, ins[0], outs[0], inits) : undefined);

function erfFloat64(p: string, x: string, y: string, inits: InstanceType<typeof onnx.TensorProto>[]) {
  const out: InstanceType<typeof onnx.NodeProto>[] = [];
  let k = 0;
  const c = (v: number) => {
    const name = `${p}/c${k++}`;
    inits.push(onnx.TensorProto.create({ name, dataType: onnxDtypeCode('float64'), dims: [], rawData: scalarBytes('float64', v) }));
    return name;
  };
  const op = (opType: string, ...ins: string[]) => {
    const name = `${p}/t${k++}`;
    out.push(onnx.NodeProto.create({ name, opType, input: ins, output: [name] }));
    return name;
  };
  const lim = 3.5;
  const xc = op('Min', op('Max', x, c(-lim)), c(lim));
  const z = op('Mul', xc, xc);
  // series: 2/sqrt(pi) * x * sum_n (-1)^n z^n / (n! (2n+1)), Horner from the top term
  const N = 60;
  const coef = (n: number) => {
    let f = 1;
    for (let i = 2; i <= n; i++) f *= i;
    return ((n % 2 ? -1 : 1) / (f * (2 * n + 1))) * (2 / Math.sqrt(Math.PI));
  };
  let acc = c(coef(N));
  for (let n = N - 1; n >= 0; n--) acc = op('Add', op('Mul', acc, z), c(coef(n)));
  const series = op('Mul', acc, xc);
  // tail: sign(x) * (1 - erfc(|x|))
  const a = op('Abs', x);
  const t = op('Div', c(1), op('Add', c(1), op('Mul', c(0.5), a)));
  const cs = [-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277];
  let poly = c(cs[9]);
  for (let i = 8; i >= 0; i--) poly = op('Add', op('Mul', poly, t), c(cs[i]));
  const erfc = op('Mul', t, op('Exp', op('Sub', poly, op('Mul', a, a))));
  const tail = op('Mul', op('Sign', x), op('Sub', c(1), erfc));
  const small = op('LessOrEqual', a, c(lim));
  out.push(onnx.NodeProto.create({ name: `${p}/select`, opType: 'Where', input: [small, series, tail], output: [y] }));
  return out;
}
