/**
 * Quantised frozen weights for y = x W^T (W [out, in], PyTorch layout), forward and backward.
 *
 *  - int8, per output channel (symmetric): W ~ q[n, k] * s[n]. The product is DequantizeLinear + Gemm; the
 *    backward product dx = dy W dequantises again (ops.ts, dequantizedForBackward), so a float32 copy of a
 *    weight exists only while one product runs.
 *  - int4, 32x32 tiles (symmetric, codes 0..15 around 8): W ~ (c[n, k] - 8) * s[n / 32, k / 32]. The forward is
 *    ONNX Runtime's MatMulNBits (com.microsoft) on W's rows; the backward dx = dy W is MatMulNBits on W^T's rows,
 *    packed from the same codes. Because a scale covers a whole tile, both layouts dequantise to the very same
 *    matrix, so the backward is the exact gradient of the forward (MatMulNBits' own blocks are 1 x 32 along
 *    the input features; a tile is 32 of them sharing a scale). Ragged edges are padded with zero codes.
 */
import { type Attrs, type Graph, type Value } from './ir.ts';
import { OPS, dequantizeLinear, gemm } from './ops.ts';
import { UserError } from '../util/errors.ts';

export type QuantizeMode = 'int8' | 'int4';
export const QUANTIZE_MODES: readonly QuantizeMode[] = ['int8', 'int4'];
export const INT4_BLOCK = 32;

/** A weight [out, in] quantised per output channel to int8: W ~ q * scales[:, None]. */
export interface Int8Weight {
  mode: 'int8';
  out: number;
  in: number;
  q: Int8Array;
  scales: Float32Array;
}

/** A weight [out, in] quantised to 4 bits in 32x32 tiles, packed for MatMulNBits in both orientations. */
export interface Int4Weight {
  mode: 'int4';
  out: number;
  in: number;
  /** rows of W: [out, in / 32, 16] bytes, two codes a byte (low nibble first) */
  packed: Uint8Array;
  /** [out * in / 32]: the tile scale repeated for each row's blocks */
  scales: Float32Array;
  /** rows of W^T: [in, out / 32, 16] */
  packedT: Uint8Array;
  scalesT: Float32Array;
}

export type QuantizedWeight = Int8Weight | Int4Weight;

export function quantizeInt8(w: Float32Array, out: number, inF: number): Int8Weight {
  const q = new Int8Array(out * inF);
  const scales = new Float32Array(out);
  for (let n = 0; n < out; n++) {
    let m = 0;
    for (let k = 0, o = n * inF; k < inF; k++) m = Math.max(m, Math.abs(w[o + k]));
    const s = m > 0 ? m / 127 : 1;
    scales[n] = s;
    for (let k = 0, o = n * inF; k < inF; k++) q[o + k] = Math.max(-127, Math.min(127, Math.round(w[o + k] / s)));
  }
  return { mode: 'int8', out, in: inF, q, scales };
}

const blocks = (d: number) => Math.ceil(d / INT4_BLOCK);

/**
 * Packs codes [rows, cols] (row-major, or column-major when `transposed`; values 0..15) into MatMulNBits'
 * [rows, ceil(cols / 32), 16] layout, two codes a byte (low nibble first); the padding codes are 8 (zero).
 */
function pack4(codes: Uint8Array, rows: number, cols: number, transposed: boolean): Uint8Array {
  const padded = blocks(cols) * INT4_BLOCK;
  const out = new Uint8Array((rows * padded) / 2);
  const at = (r: number, c: number) => (c >= cols ? 8 : transposed ? codes[c * rows + r] : codes[r * cols + c]);
  for (let r = 0, o = 0; r < rows; r++) for (let c = 0; c < padded; c += 2) out[o++] = at(r, c) | (at(r, c + 1) << 4);
  return out;
}

export function quantizeInt4(w: Float32Array, out: number, inF: number): Int4Weight {
  const B = INT4_BLOCK;
  const tr = blocks(out);
  const tc = blocks(inF);
  const tile = new Float32Array(tr * tc);
  for (let n = 0; n < out; n++)
    for (let k = 0; k < inF; k++) {
      const t = ((n / B) | 0) * tc + ((k / B) | 0);
      tile[t] = Math.max(tile[t], Math.abs(w[n * inF + k]));
    }
  for (let t = 0; t < tile.length; t++) tile[t] = tile[t] > 0 ? tile[t] / 7 : 1;
  const codes = new Uint8Array(out * inF);
  for (let n = 0; n < out; n++)
    for (let k = 0; k < inF; k++) {
      const s = tile[((n / B) | 0) * tc + ((k / B) | 0)];
      codes[n * inF + k] = Math.max(-8, Math.min(7, Math.round(w[n * inF + k] / s))) + 8;
    }
  const scales = new Float32Array(out * tc);
  for (let n = 0; n < out; n++) for (let kb = 0; kb < tc; kb++) scales[n * tc + kb] = tile[((n / B) | 0) * tc + kb];
  const scalesT = new Float32Array(inF * tr);
  for (let k = 0; k < inF; k++) for (let nb = 0; nb < tr; nb++) scalesT[k * tr + nb] = tile[nb * tc + ((k / B) | 0)];
  return { mode: 'int4', out, in: inF, packed: pack4(codes, out, inF, false), scales, packedT: pack4(codes, inF, out, true), scalesT };
}

export function quantize(mode: QuantizeMode, w: Float32Array, out: number, inF: number): QuantizedWeight {
  return mode === 'int8' ? quantizeInt8(w, out, inF) : quantizeInt4(w, out, inF);
}

/** Parses a --quantize value (one-line UserError naming the accepted modes). */
export function parseQuantizeMode(v: string, where?: string): QuantizeMode {
  if ((QUANTIZE_MODES as readonly string[]).includes(v)) return v as QuantizeMode;
  throw new UserError(`unknown quantisation "${v}"; expected ${QUANTIZE_MODES.join(' or ')}`, where);
}

/** The float32 matrix [out, in] a quantised weight stands for (tests and error measurements). */
export function dequantize(q: QuantizedWeight): Float32Array {
  const w = new Float32Array(q.out * q.in);
  if (q.mode === 'int8') {
    for (let n = 0; n < q.out; n++) for (let k = 0; k < q.in; k++) w[n * q.in + k] = q.q[n * q.in + k] * q.scales[n];
    return w;
  }
  const kb = blocks(q.in);
  const row = kb * INT4_BLOCK;
  for (let n = 0; n < q.out; n++)
    for (let k = 0; k < q.in; k++) {
      const byte = q.packed[(n * row + k) >> 1];
      const code = k % 2 === 0 ? byte & 15 : byte >> 4;
      w[n * q.in + k] = (code - 8) * q.scales[n * kb + ((k / INT4_BLOCK) | 0)];
    }
  return w;
}

// ---------------------------------------------------------------------------------------------------------
// MatMulNBits: A [..., K] x (B [N, K] in 4-bit blocks)^T -> [..., N]

/** The transposed layout of a MatMulNBits weight, made into graph constants only when a backward needs it. */
const transposedLayout = new WeakMap<Value, { packed: Uint8Array; scales: Float32Array }>();

OPS.MatMulNBits = {
  domain: 'com.microsoft',
  infer: ([a], attrs) => {
    if (a.dtype !== 'float32') throw new Error(`MatMulNBits: activations must be float32, got ${a.dtype}`);
    const k = a.shape[a.rank - 1];
    if (typeof k === 'number' && k !== attrs.K) throw new Error(`MatMulNBits: input features ${k}, weight has K=${attrs.K}`);
    return [{ dtype: 'float32', shape: [...a.shape.slice(0, -1), attrs.N as number] }];
  },
  // dA = dY W: MatMulNBits on W^T's rows (same codes and tile scales, so the same matrix)
  grad: (n, [g], needs) => {
    if (!g || !needs[0]) return [];
    const t = transposedLayout.get(n.inputs[1]);
    if (!t) throw new Error(`MatMulNBits (${n.name}): no transposed layout registered for its weight`);
    const K = n.attrs.K as number;
    const N = n.attrs.N as number;
    const packedT = g.graph.constant(t.packed, [K, blocks(N), INT4_BLOCK / 2], 'uint8', `${n.inputs[1].name}.T`);
    const scalesT = g.graph.constant(t.scales, [t.scales.length], 'float32', `${n.inputs[2].name}.T`);
    return [matMulNBits(g, packedT, scalesT, N, K)];
  },
};

function matMulNBits(a: Value, packed: Value, scales: Value, K: number, N: number): Value {
  const attrs: Attrs = { K, N, bits: 4, block_size: INT4_BLOCK };
  return a.graph.addNode('MatMulNBits', [a, packed, scales], attrs, OPS.MatMulNBits.infer([a, packed, scales], attrs))[0];
}

/** The graph constants of one quantised weight (one set per graph, shared by every product that uses it). */
export function quantizedConstants(g: Graph, name: string, q: QuantizedWeight): Value[] {
  if (q.mode === 'int8')
    return [g.constant(q.q, [q.out, q.in], 'int8', `${name}.q8`), g.constant(q.scales, [q.out], 'float32', `${name}.scale`)];
  const packed = g.constant(q.packed, [q.out, blocks(q.in), INT4_BLOCK / 2], 'uint8', `${name}.q4`);
  transposedLayout.set(packed, { packed: q.packedT, scales: q.scalesT });
  return [packed, g.constant(q.scales, [q.scales.length], 'float32', `${name}.scale`)];
}

/** y = x W^T for activations x [..., in] (float32) and a quantised W [out, in] (its constants in x's graph). */
export function quantizedLinear(x: Value, q: QuantizedWeight, consts: Value[]): Value {
  if (q.mode === 'int8') return gemm(x, dequantizeLinear(consts[0], consts[1], 0), undefined, { transB: true });
  return matMulNBits(x, consts[0], consts[1], q.in, q.out);
}
