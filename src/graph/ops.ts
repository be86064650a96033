/**
 * The primitive ops. Each is an ONNX operator (same name, same inputs and attributes, opset 17), defined here
 * by (a) its output type inference and (b) its gradient rule, side by side. Lowering to ONNX is 1:1 (onnx.ts),
 * so what you read here is what ONNX Runtime runs.
 *
 * Gradient rules are written with the same public op functions, so backward graphs are ordinary graphs.
 * A rule receives the node, the cotangents of its outputs (undefined = zero) and which inputs need a
 * gradient, and returns one cotangent per input (undefined = none). Ops without a rule are forward-only and
 * say why (`noGrad`): asking for a gradient through them is an error, never a silent zero.
 *
 * Broadcasting follows ONNX/numpy. A symbolic dim is never 1 at run time; a dim that broadcasts must be a
 * literal 1, which is what lets gradients undo broadcasting statically (sumToShape).
 */
import { type Attrs, type DType, type Dim, type Node, type Shape, type TypedArray, Value, isFloat } from './ir.ts';

type OutType = { dtype: DType; shape: Shape };
export type GradRule = (node: Node, gouts: Array<Value | undefined>, needs: boolean[]) => Array<Value | undefined>;

export interface OpDef {
  infer(inputs: Value[], attrs: Attrs): OutType[];
  grad?: GradRule;
  /** Why the op has no gradient rule (forward-only). */
  noGrad?: string;
  /** operator set domain for contrib ops (e.g. 'com.microsoft'); default: the ONNX domain */
  domain?: string;
}

export const OPS: Record<string, OpDef> = {};
const def = (name: string, d: OpDef) => {
  OPS[name] = d;
};

export const INT_MAX = 2 ** 62; // "to the end" for Slice ends, exact in float64 and int64

// ---------------------------------------------------------------------------------------------------------
// building blocks

export type ValueOrNumber = Value | number;

function apply(op: string, inputs: Value[], attrs: Attrs = {}): Value[] {
  const d = OPS[op];
  if (!d) throw new Error(`unknown op ${op}`);
  const outs = d.infer(inputs, attrs);
  return inputs[0].graph.addNode(op, inputs, attrs, outs);
}
const apply1 = (op: string, inputs: Value[], attrs: Attrs = {}): Value => apply(op, inputs, attrs)[0];

function makeArray(dtype: DType, values: ArrayLike<number>): TypedArray {
  switch (dtype) {
    case 'float32':
      return Float32Array.from(values);
    case 'float64':
      return Float64Array.from(values);
    case 'int64':
      return BigInt64Array.from(Array.from(values, (v) => BigInt(Math.trunc(v))));
    case 'int32':
      return Int32Array.from(values);
    case 'bool':
    case 'uint8':
      return Uint8Array.from(values);
    case 'int8':
      return Int8Array.from(values);
    default:
      throw new Error(`constants of dtype ${dtype} are not supported`);
  }
}

/** A constant tensor in `like`'s graph. */
export function constant(like: Value, values: ArrayLike<number>, shape: number[], dtype: DType = like.dtype): Value {
  return like.graph.constant(makeArray(dtype, values), shape, dtype);
}
/** A scalar constant with `like`'s dtype. */
export const scalarLike = (like: Value, v: number): Value => constant(like, [v], [], like.dtype);
/** A 1-D int64 constant (axes, shapes, starts...). */
export const int64s = (like: Value, values: number[]): Value => constant(like, values, [values.length], 'int64');

function lift(a: ValueOrNumber, b: ValueOrNumber): [Value, Value] {
  if (a instanceof Value && b instanceof Value) return [a, b];
  if (a instanceof Value) return [a, scalarLike(a, b as number)];
  if (b instanceof Value) return [scalarLike(b, a as number), b];
  throw new Error('binary op needs at least one Value');
}

/** Reads the int values of a constant (for shapes, axes, starts...). */
export function constInts(v: Value): number[] | undefined {
  if (v.kind !== 'const' || !v.data) return undefined;
  return Array.from(v.data as ArrayLike<number | bigint>, (x) => Number(x));
}

export const normAxis = (axis: number, rank: number): number => {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new Error(`axis ${axis} out of range for rank ${rank}`);
  return a;
};

const sameShape = (a: Shape, b: Shape) => a.length === b.length && a.every((d, i) => d === b[i]);

export function broadcastShapes(...shapes: Shape[]): Shape {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    let d: Dim = 1;
    for (const s of shapes) {
      const e = s[s.length - rank + i] ?? 1;
      if (e === 1) continue;
      if (d === 1) d = e;
      else if (typeof d === 'number' && typeof e === 'number' && d !== e)
        throw new Error(`cannot broadcast shapes ${shapes.map((x) => `[${x.join(', ')}]`).join(' and ')}`);
      else if (typeof d === 'string' && typeof e === 'number') d = e; // a symbol broadcast with a size: they must be equal
    }
    out.push(d);
  }
  return out;
}

/** Sums a broadcast cotangent back down to `shape` (the heart of broadcasting gradients). */
export function sumToShape(g: Value, shape: Shape): Value {
  if (sameShape(g.shape, shape)) return g;
  const lead = g.rank - shape.length;
  if (lead < 0) throw new Error(`sumToShape: [${g.shape}] has lower rank than [${shape}]`);
  const axes: number[] = [];
  for (let i = 0; i < lead; i++) axes.push(i);
  for (let i = 0; i < shape.length; i++) if (shape[i] === 1 && g.shape[lead + i] !== 1) axes.push(lead + i);
  let r = axes.length ? reduceSum(g, axes, true) : g;
  if (lead > 0) r = squeeze(r, Array.from({ length: lead }, (_, i) => i));
  return r;
}

// Symbolic size arithmetic, enough for Reshape's -1 and flattening: a dim is a product of numbers and symbols.
function factor(dims: Dim[]): { num: number; syms: string[] } {
  let num = 1;
  const syms: string[] = [];
  for (const d of dims) {
    if (typeof d === 'number') num *= d;
    else
      for (const part of d.split('*')) {
        if (/^\d+$/.test(part)) num *= Number(part);
        else syms.push(part);
      }
  }
  return { num, syms };
}

export function inferReshape(inShape: Shape, spec: number[]): Shape {
  const out: Dim[] = spec.map((s, i) => (s === 0 ? inShape[i] : s));
  const neg = out.indexOf(-1);
  if (neg < 0) return out;
  const a = factor(inShape);
  const b = factor(out.filter((_, i) => i !== neg));
  const rest = [...a.syms];
  for (const s of b.syms) {
    const k = rest.indexOf(s);
    if (k < 0) return out.map((d, i) => (i === neg ? `?${s}` : d));
    rest.splice(k, 1);
  }
  const num = a.num / b.num;
  if (!Number.isInteger(num)) throw new Error(`cannot reshape [${inShape}] to [${spec}]`);
  out[neg] = rest.length === 0 ? num : [...(num !== 1 ? [String(num)] : []), ...rest].join('*');
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// elementwise, unary

const same = ([x]: Value[]): OutType[] => [{ dtype: x.dtype, shape: x.shape }];
function unary(name: string, grad?: (x: Value, y: Value, g: Value) => Value, noGrad?: string) {
  def(name, {
    infer: same,
    grad: grad && ((n, [g]) => [g && grad(n.inputs[0], n.outputs[0], g)]),
    noGrad,
  });
}

unary('Neg', (_x, _y, g) => neg(g));
unary('Exp', (_x, y, g) => mul(g, y));
unary('Log', (x, _y, g) => div(g, x));
unary('Sqrt', (_x, y, g) => div(mul(g, 0.5), y));
unary('Reciprocal', (_x, y, g) => neg(mul(g, mul(y, y))));
unary('Tanh', (_x, y, g) => mul(g, sub(1, mul(y, y))));
unary('Sigmoid', (_x, y, g) => mul(g, mul(y, sub(1, y))));
unary('Erf', (x, _y, g) => mul(g, mul(exp(neg(mul(x, x))), 2 / Math.sqrt(Math.PI))));
unary('Sin', (x, _y, g) => mul(g, cos(x)));
unary('Cos', (x, _y, g) => neg(mul(g, sin(x))));
unary('Abs', (x, _y, g) => mul(g, sign(x)));
unary('Relu', (x, _y, g) => where(greater(x, 0), g, 0));
unary('Identity', (_x, _y, g) => g);
unary('Sign', undefined, 'piecewise constant: zero gradient almost everywhere');
unary('Floor', undefined, 'piecewise constant');
unary('Not', undefined, 'boolean');

export const neg = (x: Value) => apply1('Neg', [x]);
export const exp = (x: Value) => apply1('Exp', [x]);
export const log = (x: Value) => apply1('Log', [x]);
export const sqrt = (x: Value) => apply1('Sqrt', [x]);
export const reciprocal = (x: Value) => apply1('Reciprocal', [x]);
export const tanh = (x: Value) => apply1('Tanh', [x]);
export const sigmoid = (x: Value) => apply1('Sigmoid', [x]);
export const erf = (x: Value) => apply1('Erf', [x]);
export const sin = (x: Value) => apply1('Sin', [x]);
export const cos = (x: Value) => apply1('Cos', [x]);
export const abs = (x: Value) => apply1('Abs', [x]);
export const relu = (x: Value) => apply1('Relu', [x]);
export const identity = (x: Value) => apply1('Identity', [x]);
export const sign = (x: Value) => apply1('Sign', [x]);
export const floor = (x: Value) => apply1('Floor', [x]);
export const not = (x: Value) => apply1('Not', [x]);

// ---------------------------------------------------------------------------------------------------------
// elementwise, binary (broadcasting)

const bcast = (dtype?: DType) => (xs: Value[]): OutType[] => {
  const dt = xs[0].dtype;
  for (const x of xs) if (x.dtype !== dt) throw new Error(`dtype mismatch: ${xs.map((v) => v.dtype).join(' vs ')}`);
  return [{ dtype: dtype ?? dt, shape: broadcastShapes(...xs.map((x) => x.shape)) }];
};
function binary(name: string, grad?: (a: Value, b: Value, y: Value, g: Value, needs: boolean[]) => [Value | undefined, Value | undefined], outDtype?: DType, noGrad?: string) {
  def(name, {
    infer: bcast(outDtype),
    grad:
      grad &&
      ((n, [g], needs) => {
        if (!g) return [undefined, undefined];
        const [a, b] = n.inputs;
        const [ga, gb] = grad(a, b, n.outputs[0], g, needs);
        return [ga && needs[0] ? sumToShape(ga, a.shape) : undefined, gb && needs[1] ? sumToShape(gb, b.shape) : undefined];
      }),
    noGrad,
  });
}

binary('Add', (_a, _b, _y, g) => [g, g]);
binary('Sub', (_a, _b, _y, g, needs) => [g, needs[1] ? neg(g) : undefined]);
binary('Mul', (a, b, _y, g, needs) => [needs[0] ? mul(g, b) : undefined, needs[1] ? mul(g, a) : undefined]);
binary('Div', (_a, b, y, g, needs) => [needs[0] ? div(g, b) : undefined, needs[1] ? neg(mul(g, div(y, b))) : undefined]);
binary('Pow', (a, b, y, g, needs) => [
  needs[0] ? mul(g, mul(b, pow(a, sub(b, 1)))) : undefined,
  needs[1] ? mul(g, mul(y, log(a))) : undefined,
]);
// Ties send the gradient to the first operand, like a subgradient.
binary('Max', (a, b, _y, g) => {
  const m = greaterOrEqual(a, b);
  return [where(m, g, 0), where(m, 0, g)];
});
binary('Min', (a, b, _y, g) => {
  const m = lessOrEqual(a, b);
  return [where(m, g, 0), where(m, 0, g)];
});
for (const cmp of ['Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'And', 'Or'])
  binary(cmp, undefined, 'bool', 'comparisons are piecewise constant');

export const add = (a: ValueOrNumber, b: ValueOrNumber) => apply1('Add', lift(a, b));
export const sub = (a: ValueOrNumber, b: ValueOrNumber) => apply1('Sub', lift(a, b));
export const mul = (a: ValueOrNumber, b: ValueOrNumber) => apply1('Mul', lift(a, b));
export const div = (a: ValueOrNumber, b: ValueOrNumber) => apply1('Div', lift(a, b));
export const pow = (a: ValueOrNumber, b: ValueOrNumber) => apply1('Pow', lift(a, b));
export const maximum = (a: ValueOrNumber, b: ValueOrNumber) => apply1('Max', lift(a, b));
export const minimum = (a: ValueOrNumber, b: ValueOrNumber) => apply1('Min', lift(a, b));
export const equal = (a: ValueOrNumber, b: ValueOrNumber) => apply1('Equal', lift(a, b));
export const less = (a: ValueOrNumber, b: ValueOrNumber) => apply1('Less', lift(a, b));
export const greater = (a: ValueOrNumber, b: ValueOrNumber) => apply1('Greater', lift(a, b));
export const lessOrEqual = (a: ValueOrNumber, b: ValueOrNumber) => apply1('LessOrEqual', lift(a, b));
export const greaterOrEqual = (a: ValueOrNumber, b: ValueOrNumber) => apply1('GreaterOrEqual', lift(a, b));
export const and = (a: Value, b: Value) => apply1('And', [a, b]);
export const or = (a: Value, b: Value) => apply1('Or', [a, b]);

def('Where', {
  infer: ([c, a, b]) => {
    if (c.dtype !== 'bool') throw new Error(`Where: condition must be bool, got ${c.dtype}`);
    if (a.dtype !== b.dtype) throw new Error(`Where: dtype mismatch ${a.dtype} vs ${b.dtype}`);
    return [{ dtype: a.dtype, shape: broadcastShapes(c.shape, a.shape, b.shape) }];
  },
  grad: (n, [g], needs) => {
    if (!g) return [];
    const [c, a, b] = n.inputs;
    return [
      undefined,
      needs[1] ? sumToShape(where(c, g, 0), a.shape) : undefined,
      needs[2] ? sumToShape(where(c, 0, g), b.shape) : undefined,
    ];
  },
});
export function where(cond: Value, a: ValueOrNumber, b: ValueOrNumber): Value {
  const like = a instanceof Value ? a : b instanceof Value ? b : undefined;
  if (!like) throw new Error('where needs at least one Value branch');
  const av = a instanceof Value ? a : scalarLike(like, a);
  const bv = b instanceof Value ? b : scalarLike(like, b);
  return apply1('Where', [cond, av, bv]);
}

const ONNX_DTYPE_CODE: Record<DType, number> = {
  float32: 1, uint8: 2, int8: 3, int32: 6, int64: 7, bool: 9, float16: 10, float64: 11, bfloat16: 16,
};
export const onnxDtypeCode = (d: DType): number => ONNX_DTYPE_CODE[d];

def('Cast', {
  infer: ([x], attrs) => [{ dtype: attrs.to_dtype as DType, shape: x.shape }],
  grad: (n, [g]) => {
    const x = n.inputs[0];
    return [g && isFloat(x.dtype) && isFloat(n.outputs[0].dtype) ? cast(g, x.dtype) : undefined];
  },
});
/** Cast; `to_dtype` is our name, the emitter writes ONNX's `to` code. */
export const cast = (x: Value, to: DType) => (x.dtype === to ? x : apply1('Cast', [x], { to_dtype: to }));

// ---------------------------------------------------------------------------------------------------------
// matrix product

function transposeLast2(x: Value): Value {
  const perm = Array.from({ length: x.rank }, (_, i) => i);
  [perm[x.rank - 2], perm[x.rank - 1]] = [perm[x.rank - 1], perm[x.rank - 2]];
  return transpose(x, perm);
}

def('MatMul', {
  infer: ([a, b]) => {
    if (a.rank < 2 || b.rank < 2) throw new Error(`MatMul needs rank >= 2, got [${a.shape}] x [${b.shape}]`);
    if (a.dtype !== b.dtype) throw new Error(`MatMul dtype mismatch ${a.dtype} vs ${b.dtype}`);
    const k1 = a.shape[a.rank - 1];
    const k2 = b.shape[b.rank - 2];
    if (typeof k1 === 'number' && typeof k2 === 'number' && k1 !== k2)
      throw new Error(`MatMul inner dims differ: [${a.shape}] x [${b.shape}]`);
    const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2));
    return [{ dtype: a.dtype, shape: [...batch, a.shape[a.rank - 2], b.shape[b.rank - 1]] }];
  },
  // C = A B: dA = dC B^T, dB = A^T dC, each summed over broadcast batch dims.
  // A weight [K, N] applied to activations [..., M, K] gets one big GEMM over the flattened rows instead of a
  // batched product followed by a reduction.
  grad: (n, [g], needs) => {
    if (!g) return [];
    const [a, b] = n.inputs;
    const ga = needs[0] ? sumToShape(matmul(g, transposeLast2(b)), a.shape) : undefined;
    let gb: Value | undefined;
    if (needs[1]) {
      if (b.rank === 2 && a.rank > 2) {
        const k = a.shape[a.rank - 1];
        const nn = g.shape[g.rank - 1];
        const a2 = reshape(a, [-1, typeof k === 'number' ? k : 0]);
        const g2 = reshape(g, [-1, typeof nn === 'number' ? nn : 0]);
        gb = typeof k === 'number' && typeof nn === 'number' ? matmul(transposeLast2(a2), g2) : sumToShape(matmul(transposeLast2(a), g), b.shape);
      } else gb = sumToShape(matmul(transposeLast2(a), g), b.shape);
    }
    return [ga, gb];
  },
});
/** Batched matrix product; transposes of the last two axes are fused into MatMul by ONNX Runtime. */
export function matmul(a: Value, b: Value, opts: { transA?: boolean; transB?: boolean } = {}): Value {
  return apply1('MatMul', [opts.transA ? transposeLast2(a) : a, opts.transB ? transposeLast2(b) : b]);
}

def('Gemm', {
  infer: ([a, b, c], attrs) => {
    if (a.rank !== 2 || b.rank !== 2) throw new Error(`Gemm needs 2-D operands, got [${a.shape}] x [${b.shape}]`);
    if (a.dtype !== b.dtype || (c && c.dtype !== a.dtype)) throw new Error('Gemm: dtype mismatch');
    const [m, k1] = attrs.transA ? [a.shape[1], a.shape[0]] : a.shape;
    const [k2, n] = attrs.transB ? [b.shape[1], b.shape[0]] : b.shape;
    if (typeof k1 === 'number' && typeof k2 === 'number' && k1 !== k2) throw new Error(`Gemm inner dims differ: [${a.shape}] x [${b.shape}]`);
    return [{ dtype: a.dtype, shape: [m, n] }];
  },
  // Y = alpha A' B' + beta C (A' = A or A^T, B' = B or B^T): dA' = alpha dY B'^T, dB' = alpha A'^T dY, dC = beta dY
  // summed to C's shape. Each is one Gemm on the stored operands (no Transpose nodes), so a frozen weight is read
  // in place by the backward product as well.
  grad: (n, [g], needs) => {
    if (!g) return [];
    const [a0, b0, c] = n.inputs;
    // a quantised weight is dequantised again for the backward product (see dequantizedForBackward)
    const a = needs[1] ? dequantizedForBackward(a0) : a0;
    const b = needs[0] ? dequantizedForBackward(b0) : b0;
    const tA = n.attrs.transA === 1;
    const tB = n.attrs.transB === 1;
    const alpha = (n.attrs.alpha as number | undefined) ?? 1;
    const beta = (n.attrs.beta as number | undefined) ?? 1;
    const o = { alpha };
    const ga = needs[0] ? (tA ? gemm(b, g, undefined, { ...o, transA: tB, transB: true }) : gemm(g, b, undefined, { ...o, transB: !tB })) : undefined;
    const gb = needs[1] ? (tB ? gemm(g, a, undefined, { ...o, transA: true, transB: tA }) : gemm(a, g, undefined, { ...o, transA: !tA })) : undefined;
    const gc = c && needs[2] ? sumToShape(beta === 1 ? g : mul(g, beta), c.shape) : undefined;
    return [ga, gb, gc];
  },
});
def('DequantizeLinear', {
  infer: ([x, scale]) => {
    if (scale.dtype !== 'float32') throw new Error(`DequantizeLinear: scale must be float32, got ${scale.dtype}`);
    return [{ dtype: 'float32', shape: x.shape }];
  },
  noGrad: 'its input is an integer tensor (a frozen quantised weight)',
});
/** (q - zero) * scale, per tensor (scalar scale) or per slice along `axis` (ONNX DequantizeLinear). */
export const dequantizeLinear = (q: Value, scale: Value, axis = 0) => apply1('DequantizeLinear', [q, scale], { axis });

/**
 * The operand a backward product reads for a forward operand: a weight dequantised from a constant gets a second
 * DequantizeLinear of its own (with its own copy of the scales, so ONNX Runtime's common-subexpression pass
 * keeps it separate). Reusing the forward's float32 result would keep every layer's float32 copy alive from the
 * forward to the backward, which is exactly the memory quantisation saves.
 */
function dequantizedForBackward(v: Value): Value {
  const n = v.node;
  if (n?.op !== 'DequantizeLinear' || n.inputs[0].kind !== 'const' || !n.inputs[1].data) return v;
  const [q, scale] = n.inputs;
  const scales = v.graph.constant(Float32Array.from(scale.data as Float32Array), scale.shape as number[], 'float32', `${scale.name}.backward`);
  return dequantizeLinear(q, scales, n.attrs.axis as number);
}

/**
 * ONNX Gemm on 2-D operands: alpha * A' B' + beta * C. With a frozen weight as B and transB, ONNX Runtime
 * prepacks the weight straight from its [out, in] layout: no transposed copy is ever made.
 */
export function gemm(
  a: Value,
  b: Value,
  c?: Value,
  opts: { transA?: boolean; transB?: boolean; alpha?: number; beta?: number } = {},
): Value {
  const attrs: Attrs = {};
  if (opts.transA) attrs.transA = 1;
  if (opts.transB) attrs.transB = 1;
  if (opts.alpha !== undefined && opts.alpha !== 1) attrs.alpha = opts.alpha;
  if (opts.beta !== undefined && opts.beta !== 1) attrs.beta = opts.beta;
  return apply1('Gemm', c ? [a, b, c] : [a, b], attrs);
}

// ---------------------------------------------------------------------------------------------------------
// reductions

function reducedShape(shape: Shape, axes: number[], keepdims: boolean): Shape {
  const ax = new Set(axes.map((a) => normAxis(a, shape.length)));
  const out: Dim[] = [];
  shape.forEach((d, i) => {
    if (!ax.has(i)) out.push(d);
    else if (keepdims) out.push(1);
  });
  return out;
}

/** Broadcasts a reduced cotangent back over the reduced axes of x. */
function unreduce(g: Value, x: Value, axes: number[], keepdims: boolean): Value {
  const gk = keepdims ? g : unsqueeze(g, axes.map((a) => normAxis(a, x.rank)).sort((p, q) => p - q));
  return expand(gk, runtimeShape(x), x.shape);
}

def('ReduceSum', {
  infer: ([x, axes], attrs) => [{ dtype: x.dtype, shape: reducedShape(x.shape, constInts(axes)!, attrs.keepdims === 1) }],
  grad: (n, [g]) => [g && unreduce(g, n.inputs[0], constInts(n.inputs[1])!, n.attrs.keepdims === 1)],
});
def('ReduceMean', {
  infer: ([x], attrs) => [{ dtype: x.dtype, shape: reducedShape(x.shape, attrs.axes as number[], attrs.keepdims === 1) }],
  grad: (n, [g]) => {
    if (!g) return [];
    const x = n.inputs[0];
    const axes = n.attrs.axes as number[];
    const count = reducedCount(x, axes);
    return [div(unreduce(g, x, axes, n.attrs.keepdims === 1), count)];
  },
});
def('ReduceMax', {
  infer: ([x], attrs) => [{ dtype: x.dtype, shape: reducedShape(x.shape, attrs.axes as number[], attrs.keepdims === 1) }],
  // The cotangent goes to the maximal elements, split equally between ties.
  grad: (n, [g]) => {
    if (!g) return [];
    const x = n.inputs[0];
    const axes = n.attrs.axes as number[];
    const keep = n.attrs.keepdims === 1;
    const yk = keep ? n.outputs[0] : unsqueeze(n.outputs[0], axes.map((a) => normAxis(a, x.rank)).sort((p, q) => p - q));
    const mask = cast(equal(x, yk), x.dtype);
    const ties = reduceSum(mask, axes, true);
    return [mul(unreduce(g, x, axes, keep), div(mask, ties))];
  },
});

/** Number of elements reduced over `axes` of x, as a scalar of x's dtype (static when the dims are known). */
function reducedCount(x: Value, axes: number[]): Value {
  let n = 1;
  for (const a of axes) {
    const d = x.shape[normAxis(a, x.rank)];
    if (typeof d !== 'number') {
      const dims = gather(shapeOf(x), int64s(x, axes.map((q) => normAxis(q, x.rank))), 0);
      return cast(reduceProdInt(dims), x.dtype);
    }
    n *= d;
  }
  return scalarLike(x, n);
}
def('ReduceProd', {
  infer: ([x], attrs) => [{ dtype: x.dtype, shape: reducedShape(x.shape, attrs.axes as number[], attrs.keepdims === 1) }],
  noGrad: 'used for integer shape arithmetic only',
});
const reduceProdInt = (x: Value) => apply1('ReduceProd', [x], { axes: [0], keepdims: 0 });

export const reduceSum = (x: Value, axes: number[], keepdims = false) =>
  apply1('ReduceSum', [x, int64s(x, axes)], { keepdims: keepdims ? 1 : 0 });
export const reduceMean = (x: Value, axes: number[], keepdims = false) =>
  apply1('ReduceMean', [x], { axes, keepdims: keepdims ? 1 : 0 });
export const reduceMax = (x: Value, axes: number[], keepdims = false) =>
  apply1('ReduceMax', [x], { axes, keepdims: keepdims ? 1 : 0 });

// ---------------------------------------------------------------------------------------------------------
// softmax family and normalisation (ONNX ops with hand-written gradients: cheaper than their decompositions)

def('Softmax', {
  infer: same,
  // dx = y * (dy - sum(dy * y))
  grad: (n, [g]) => {
    if (!g) return [];
    const y = n.outputs[0];
    const axis = n.attrs.axis as number;
    return [mul(y, sub(g, reduceSum(mul(g, y), [axis], true)))];
  },
});
def('LogSoftmax', {
  infer: same,
  // dx = dy - softmax(x) * sum(dy)
  grad: (n, [g]) => {
    if (!g) return [];
    const y = n.outputs[0];
    const axis = n.attrs.axis as number;
    return [sub(g, mul(exp(y), reduceSum(g, [axis], true)))];
  },
});
export const softmax = (x: Value, axis = -1) => apply1('Softmax', [x], { axis });
export const logSoftmax = (x: Value, axis = -1) => apply1('LogSoftmax', [x], { axis });

def('LayerNormalization', {
  infer: ([x], attrs) => {
    const axis = normAxis(attrs.axis as number, x.rank);
    if (axis !== x.rank - 1) throw new Error('LayerNormalization: only the last axis is supported');
    const stat = [...x.shape.slice(0, axis), 1];
    const statDtype: DType = 'float32'; // ONNX's default stash_type
    return [
      { dtype: x.dtype, shape: x.shape },
      { dtype: statDtype, shape: stat },
      { dtype: statDtype, shape: stat },
    ];
  },
  // With xhat = (x - mean) * inv and gs = dy * scale:
  // dx = inv * (gs - mean(gs) - xhat * mean(gs * xhat)), dscale = sum(dy * xhat), dbias = sum(dy).
  // Mean and InvStdDev come from the forward node's extra outputs, so nothing is recomputed.
  grad: (n, [g, gMean, gInv], needs) => {
    if (gMean || gInv) throw new Error('LayerNormalization: gradient through Mean/InvStdDev outputs is not supported');
    if (!g) return [];
    const [x, scale, bias] = n.inputs;
    // The float32 statistics are exact enough for float32 inputs; float64 (gradient checks) recomputes them.
    let mean = n.outputs[1];
    let inv = n.outputs[2];
    if (x.dtype !== 'float32') {
      mean = reduceMean(x, [-1], true);
      const xc = sub(x, mean);
      inv = reciprocal(sqrt(add(reduceMean(mul(xc, xc), [-1], true), n.attrs.epsilon as number)));
    }
    const xhat = mul(sub(x, mean), inv);
    let dx: Value | undefined;
    if (needs[0]) {
      const gs = mul(g, scale);
      dx = mul(inv, sub(sub(gs, reduceMean(gs, [-1], true)), mul(xhat, reduceMean(mul(gs, xhat), [-1], true))));
    }
    return [
      dx,
      needs[1] ? sumToShape(mul(g, xhat), scale.shape) : undefined,
      bias && needs[2] ? sumToShape(g, bias.shape) : undefined,
    ];
  },
});
/** LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * scale + bias (biased variance). */
export function layerNorm(x: Value, scale: Value, bias: Value | undefined, eps: number): Value {
  return apply('LayerNormalization', bias ? [x, scale, bias] : [x, scale], { axis: -1, epsilon: eps })[0];
}

def('InstanceNormalization', {
  infer: same,
  noGrad: 'used only inside frozen speech encoders (GroupNorm with one group per channel): forward only',
});
/** Per-(item, channel) normalisation over the remaining axes: GroupNorm(num_groups = C) on [B, C, T]. */
export const instanceNorm = (x: Value, scale: Value, bias: Value, eps: number) =>
  apply1('InstanceNormalization', [x, scale, bias], { epsilon: eps });

// ---------------------------------------------------------------------------------------------------------
// convolution (frozen encoders only)

def('Conv', {
  infer: ([x, w], attrs) => {
    if (x.rank !== 3) throw new Error('Conv: only 1-D convolution ([B, C, T]) is supported');
    const k = w.shape[2] as number;
    const s = (attrs.strides as number[] | undefined)?.[0] ?? 1;
    const [p0, p1] = (attrs.pads as number[] | undefined) ?? [0, 0];
    const t = x.shape[2];
    const tOut = typeof t === 'number' ? Math.floor((t + p0 + p1 - k) / s) + 1 : `conv(${t})`;
    return [{ dtype: x.dtype, shape: [x.shape[0], w.shape[0], tOut] }];
  },
  noGrad: 'used only inside frozen speech encoders: forward only',
});
export function conv1d(x: Value, w: Value, b: Value | undefined, opts: { stride?: number; pad?: number; groups?: number } = {}): Value {
  const attrs: Attrs = {
    kernel_shape: [w.shape[2] as number],
    strides: [opts.stride ?? 1],
    pads: [opts.pad ?? 0, opts.pad ?? 0],
    group: opts.groups ?? 1,
  };
  return apply1('Conv', b ? [x, w, b] : [x, w], attrs);
}

// ---------------------------------------------------------------------------------------------------------
// shape and data movement

def('Shape', { infer: ([x]) => [{ dtype: 'int64', shape: [x.rank] }], noGrad: 'integer output' });
def('Size', { infer: () => [{ dtype: 'int64', shape: [] }], noGrad: 'integer output' });
export const shapeOf = (x: Value) => apply1('Shape', [x]);
/** x's shape as an int64 tensor: a constant when static, so backward graphs need not keep x alive for it. */
export const runtimeShape = (x: Value): Value => {
  const s = x.shape;
  return s.every((d) => typeof d === 'number') ? int64s(x, s as number[]) : shapeOf(x);
};
export const sizeOf = (x: Value) => apply1('Size', [x]);

def('Reshape', {
  infer: ([x, s], attrs) => {
    const spec = constInts(s);
    const hint = attrs.shape_hint as (number | string)[] | undefined;
    if (hint) return [{ dtype: x.dtype, shape: hint.map((d) => (typeof d === 'string' && /^\d+$/.test(d) ? Number(d) : d)) }];
    if (!spec) throw new Error('Reshape: target shape must be a constant (or give a shape hint)');
    return [{ dtype: x.dtype, shape: inferReshape(x.shape, spec) }];
  },
  grad: (n, [g]) => [g && reshapeTo(g, runtimeShape(n.inputs[0]), n.inputs[0].shape)],
});
/** Reshape with ONNX semantics: 0 copies the input dim, -1 is inferred. */
export const reshape = (x: Value, spec: number[]) => apply1('Reshape', [x, int64s(x, spec)]);
/** Reshape to a run-time shape (an int64 Value); `hint` is the static shape it is known to have. */
export const reshapeTo = (x: Value, shape: Value, hint: Shape) =>
  apply1('Reshape', [x, shape], { shape_hint: hint.map((d) => (typeof d === 'number' ? String(d) : d)) });

def('Transpose', {
  infer: ([x], attrs) => {
    const perm = attrs.perm as number[];
    if (perm.length !== x.rank) throw new Error(`Transpose: perm [${perm}] for rank ${x.rank}`);
    return [{ dtype: x.dtype, shape: perm.map((p) => x.shape[p]) }];
  },
  grad: (n, [g]) => {
    const perm = n.attrs.perm as number[];
    const inv = perm.map((_, i) => perm.indexOf(i));
    return [g && transpose(g, inv)];
  },
});
export const transpose = (x: Value, perm: number[]) => apply1('Transpose', [x], { perm });

function addDims(a: Dim, b: Dim): Dim {
  return typeof a === 'number' && typeof b === 'number' ? a + b : `${a}+${b}`;
}
def('Concat', {
  infer: (xs, attrs) => {
    const axis = normAxis(attrs.axis as number, xs[0].rank);
    const shape = [...xs[0].shape];
    for (const x of xs.slice(1)) {
      if (x.dtype !== xs[0].dtype) throw new Error(`Concat: dtype mismatch ${x.dtype} vs ${xs[0].dtype}`);
      if (x.rank !== shape.length) throw new Error(`Concat: rank mismatch [${x.shape}] vs [${xs[0].shape}]`);
      shape[axis] = addDims(shape[axis], x.shape[axis]);
    }
    return [{ dtype: xs[0].dtype, shape }];
  },
  // The cotangent is split back into the pieces' sizes along the axis (read at run time when symbolic).
  grad: (n, [g]) => {
    if (!g) return [];
    const axis = normAxis(n.attrs.axis as number, g.rank);
    const sizes = n.inputs.map((x) => x.shape[axis]);
    const sizesV = sizes.every((d) => typeof d === 'number')
      ? int64s(g, sizes as number[])
      : concat(n.inputs.map((x) => gather(shapeOf(x), int64s(g, [axis]), 0)), 0);
    return split(g, sizesV, axis, n.inputs.map((x) => x.shape));
  },
});
export const concat = (xs: Value[], axis: number) => (xs.length === 1 ? xs[0] : apply1('Concat', xs, { axis }));

def('Split', {
  infer: ([x], attrs) => {
    const shapes = attrs.out_shapes as unknown as string[];
    return shapes.map((s) => ({ dtype: x.dtype, shape: JSON.parse(s) as Shape }));
  },
  grad: (n, gs) => {
    const axis = n.attrs.axis as number;
    const parts = n.outputs.map((o, i) => gs[i] ?? zerosLike(o));
    return [concat(parts, axis)];
  },
});
function split(x: Value, sizes: Value, axis: number, outShapes: Shape[]): Value[] {
  return apply('Split', [x, sizes], { axis, out_shapes: outShapes.map((s) => JSON.stringify(s)) });
}

function sliceDim(d: Dim, start: number, end: number, step: number): Dim {
  if (typeof d === 'number') {
    const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v, lo), hi);
    if (step > 0) {
      const s = clamp(start < 0 ? start + d : start, 0, d);
      const e = clamp(end < 0 ? end + d : end, 0, d);
      return Math.max(0, Math.ceil((e - s) / step));
    }
    const s = clamp(start < 0 ? start + d : start, -1, d - 1);
    const e = clamp(end < 0 ? end + d : end, -1, d - 1);
    return Math.max(0, Math.ceil((e - s) / step));
  }
  if (step !== 1) return `${d}[${start}:${end}:${step}]`;
  // A symbolic dim is assumed to be at least as long as a positive bound.
  if (start >= 0 && end >= INT_MAX / 2) return start === 0 ? d : `${d}-${start}`;
  if (start >= 0 && end < 0) return `${d}-${start - end}`;
  if (start >= 0 && end >= 0) return end - start;
  if (start < 0 && end >= INT_MAX / 2) return -start;
  if (start < 0 && end < 0) return end - start;
  return `${d}[${start}:${end}]`;
}
def('Slice', {
  infer: ([x, starts, ends, axes, steps]) => {
    const st = constInts(starts)!;
    const en = constInts(ends)!;
    const ax = constInts(axes)!.map((a) => normAxis(a, x.rank));
    const sp = steps ? constInts(steps)! : st.map(() => 1);
    const shape = [...x.shape];
    ax.forEach((a, i) => {
      shape[a] = sliceDim(shape[a], st[i], en[i], sp[i]);
    });
    return [{ dtype: x.dtype, shape }];
  },
  // The cotangent is zero-padded back to the input's extent (unit steps; pads must be known statically).
  grad: (n, [g]) => {
    if (!g) return [];
    const [x, starts, ends, axes, steps] = n.inputs;
    const st = constInts(starts)!;
    const en = constInts(ends)!;
    const ax = constInts(axes)!.map((a) => normAxis(a, x.rank));
    if (steps && constInts(steps)!.some((s) => s !== 1)) throw new Error('Slice gradient: only unit steps');
    const pads = new Array(2 * x.rank).fill(0);
    ax.forEach((a, i) => {
      const d = x.shape[a];
      let s = st[i];
      let e = en[i];
      if (typeof d === 'number') {
        s = Math.min(Math.max(s < 0 ? s + d : s, 0), d);
        e = Math.min(Math.max(e < 0 ? e + d : e, 0), d);
        pads[a] = s;
        pads[x.rank + a] = d - Math.max(e, s);
      } else {
        if (s < 0 || (e >= 0 && e < INT_MAX / 2))
          throw new Error(`Slice gradient: bounds [${s}:${e}] on symbolic dim ${d} are not supported`);
        pads[a] = s;
        pads[x.rank + a] = e < 0 ? -e : 0;
      }
    });
    return [pad(g, pads)];
  },
});
/** x[starts:ends] along `axes` (ONNX Slice; use INT_MAX for "to the end"). */
export function slice(x: Value, starts: number[], ends: number[], axes: number[], steps?: number[]): Value {
  const ins = [x, int64s(x, starts), int64s(x, ends), int64s(x, axes)];
  if (steps) ins.push(int64s(x, steps));
  return apply1('Slice', ins);
}

def('Pad', {
  infer: ([x, pads]) => {
    const p = constInts(pads)!;
    const r = x.rank;
    return [{ dtype: x.dtype, shape: x.shape.map((d, i) => (typeof d === 'number' ? d + p[i] + p[r + i] : p[i] + p[r + i] === 0 ? d : `${d}+${p[i] + p[r + i]}`)) }];
  },
  grad: (n, [g]) => {
    if (!g) return [];
    const p = constInts(n.inputs[1])!;
    const r = g.rank;
    const axes = Array.from({ length: r }, (_, i) => i);
    return [slice(g, axes.map((i) => p[i]), axes.map((i) => (p[r + i] === 0 ? INT_MAX : -p[r + i])), axes)];
  },
});
/** Zero padding; `pads` = [begin_0 .. begin_{r-1}, end_0 .. end_{r-1}] (ONNX layout). */
export const pad = (x: Value, pads: number[]) => apply1('Pad', [x, int64s(x, pads)], { mode: 'constant' });

def('Gather', {
  infer: ([data, idx], attrs) => {
    const axis = normAxis(attrs.axis as number, data.rank);
    return [{ dtype: data.dtype, shape: [...data.shape.slice(0, axis), ...idx.shape, ...data.shape.slice(axis + 1)] }];
  },
  // Rows gathered several times get their cotangents summed: ScatterND with reduction="add" into zeros.
  grad: (n, [g], needs) => {
    if (!g || !needs[0]) return [];
    const [data, idx] = n.inputs;
    if (normAxis(n.attrs.axis as number, data.rank) !== 0) throw new Error('Gather gradient: only axis 0');
    const z = zerosLike(data);
    return [apply1('ScatterND', [z, unsqueeze(idx, [idx.rank]), g], { reduction: 'add' })];
  },
});
export const gather = (data: Value, idx: Value, axis = 0) => apply1('Gather', [data, idx], { axis });

def('GatherElements', {
  infer: ([data, idx]) => [{ dtype: data.dtype, shape: idx.shape }],
  grad: (n, [g], needs) => {
    if (!g || !needs[0]) return [];
    const [data, idx] = n.inputs;
    return [apply1('ScatterElements', [zerosLike(data), idx, g], { axis: n.attrs.axis as number, reduction: 'add' })];
  },
});
export const gatherElements = (data: Value, idx: Value, axis: number) => apply1('GatherElements', [data, idx], { axis });

def('TopK', {
  infer: ([x], attrs) => {
    const shape = [...x.shape];
    shape[normAxis(attrs.axis as number, x.rank)] = attrs.k_hint as string | number;
    return [{ dtype: x.dtype, shape }, { dtype: 'int64', shape }];
  },
  noGrad: 'sorts frozen statistics only (the mapper\'s clip functionals, models/functionals.ts): forward only',
});
/** x sorted ascending along `axis` (ONNX TopK with k = the axis length). */
export function sortAscending(x: Value, axis: number): Value {
  const a = normAxis(axis, x.rank);
  return apply('TopK', [x, dimOf(x, a)], { axis: a, largest: 0, sorted: 1, k_hint: x.shape[a] as string | number })[0];
}

def('ScatterND', { infer: same, noGrad: 'appears only in backward graphs' });
def('ScatterElements', { infer: same, noGrad: 'appears only in backward graphs' });

def('Expand', {
  infer: ([x, s], attrs) => {
    const hint = attrs.shape_hint as string[] | undefined;
    const target: Shape = hint
      ? hint.map((d) => (/^\d+$/.test(d) ? Number(d) : d))
      : (constInts(s) ?? (() => {
          throw new Error('Expand: target shape must be a constant (or give a shape hint)');
        })());
    return [{ dtype: x.dtype, shape: broadcastShapes(x.shape, target) }];
  },
  grad: (n, [g]) => [g && sumToShape(g, n.inputs[0].shape)],
});
/** Broadcast x to `shape` (an int64 Value, with its static `hint`, or a constant list). */
export function expand(x: Value, shape: Value | number[], hint?: Shape): Value {
  if (Array.isArray(shape)) return apply1('Expand', [x, int64s(x, shape)]);
  return apply1('Expand', [x, shape], { shape_hint: (hint ?? []).map((d) => String(d)) });
}

def('Unsqueeze', {
  infer: ([x, axes]) => {
    const ax = constInts(axes)!;
    const r = x.rank + ax.length;
    const set = new Set(ax.map((a) => normAxis(a, r)));
    const out: Dim[] = [];
    let k = 0;
    for (let i = 0; i < r; i++) out.push(set.has(i) ? 1 : x.shape[k++]);
    return [{ dtype: x.dtype, shape: out }];
  },
  grad: (n, [g]) => [g && squeeze(g, constInts(n.inputs[1])!.map((a) => normAxis(a, g.rank)))],
});
def('Squeeze', {
  infer: ([x, axes]) => {
    const set = new Set(constInts(axes)!.map((a) => normAxis(a, x.rank)));
    for (const a of set) if (x.shape[a] !== 1) throw new Error(`Squeeze: axis ${a} of [${x.shape}] is not 1`);
    return [{ dtype: x.dtype, shape: x.shape.filter((_, i) => !set.has(i)) }];
  },
  grad: (n, [g]) => [g && unsqueeze(g, constInts(n.inputs[1])!.map((a) => normAxis(a, n.inputs[0].rank)))],
});
export const unsqueeze = (x: Value, axes: number[]) => apply1('Unsqueeze', [x, int64s(x, axes)]);
export const squeeze = (x: Value, axes: number[]) => apply1('Squeeze', [x, int64s(x, axes)]);

def('ConstantOfShape', {
  infer: ([s], attrs) => {
    const hint = attrs.shape_hint as string[] | undefined;
    const shape: Shape = hint ? hint.map((d) => (/^\d+$/.test(d) ? Number(d) : d)) : constInts(s)!;
    return [{ dtype: attrs.value_dtype as DType, shape }];
  },
  noGrad: 'constant',
});
/** Zeros with x's dtype and (run-time) shape. */
export function zerosLike(x: Value): Value {
  const size = x.size;
  if (size !== undefined && size <= 4096) return constant(x, new Array(size).fill(0), x.shape as number[]);
  return apply1('ConstantOfShape', [runtimeShape(x)], { value: 0, value_dtype: x.dtype, shape_hint: x.shape.map(String) });
}
/** A tensor of `value` with the given run-time shape. */
export function fill(shape: Value, hint: Shape, value: number, dtype: DType): Value {
  return apply1('ConstantOfShape', [shape], { value, value_dtype: dtype, shape_hint: hint.map(String) });
}

def('Range', {
  infer: ([start, limit, delta]) => {
    const [s, l, d] = [start, limit, delta].map((v) => constInts(v)?.[0]);
    const n = s !== undefined && l !== undefined && d !== undefined ? Math.max(0, Math.ceil((l - s) / d)) : `range${start.id}`;
    return [{ dtype: start.dtype, shape: [n] }];
  },
  noGrad: 'index generator',
});
/** [start, start+delta, ... < limit] as a 1-D tensor of the scalars' dtype. */
export const range = (start: Value, limit: Value, delta: Value) => apply1('Range', [start, limit, delta]);

def('CumSum', {
  infer: same,
  grad: (n, [g]) => [g && apply1('CumSum', [g, n.inputs[1]], { reverse: 1 - ((n.attrs.reverse as number) ?? 0), exclusive: (n.attrs.exclusive as number) ?? 0 })],
});
export const cumsum = (x: Value, axis: number) => apply1('CumSum', [x, constant(x, [axis], [], 'int64')]);

/** Concatenation helper for run-time shape vectors. */
export const dimOf = (x: Value, axis: number) => gather(shapeOf(x), int64s(x, [normAxis(axis, x.rank)]), 0);

/** Splits x along `axis` into pieces of the given (static) sizes. */
export function splitInto(x: Value, sizes: number[], axis: number): Value[] {
  const a = normAxis(axis, x.rank);
  const shapes = sizes.map((s) => x.shape.map((d, i) => (i === a ? s : d)));
  return split(x, int64s(x, sizes), a, shapes);
}
