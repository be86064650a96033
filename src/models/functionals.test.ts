import { describe, expect, it } from 'vitest';
import { Graph } from '../graph/ir.ts';
import { equal, not } from '../graph/ops.ts';
import { compile, tensor } from '../graph/runtime.ts';
import { Rng } from '../util/rng.ts';
import { FUNCTIONALS, clipFunctionalsGraph } from './functionals.ts';

/** The functionals of one series, written out plainly (numpy's linear percentiles). */
function oracle(x: number[]): number[] {
  const n = x.length;
  if (n === 0) return FUNCTIONALS.map(() => 0);
  const mean = x.reduce((a, b) => a + b, 0) / n;
  const std = Math.sqrt(x.reduce((a, b) => a + (b - mean) ** 2, 0) / n);
  const s = [...x].sort((a, b) => a - b);
  const q = (p: number) => {
    const pos = p * (n - 1);
    const i = Math.floor(pos);
    return s[i]! + (pos - i) * (s[Math.min(i + 1, n - 1)]! - s[i]!);
  };
  let mad = 0;
  for (let t = 1; t < n; t++) mad += Math.abs(x[t]! - x[t - 1]!);
  return [mean, std, s[0]!, s[n - 1]!, q(0.1), q(0.5), q(0.9), n > 1 ? mad / (n - 1) : 0];
}

describe('utterance functionals graph', () => {
  it('matches a plain implementation per channel, ignores padded frames (even NaN) and gives zeros for an empty clip', async () => {
    const g = new Graph();
    const x = g.input('x', 'float32', ['B', 'T', 3]);
    const mask = g.input('mask', 'int64', ['B', 'T']);
    const s = await compile({ f: clipFunctionalsGraph(x, not(equal(mask, 0))) }, { name: 'functionals test' });
    const rng = new Rng('functionals');
    const B = 3;
    const T = 23;
    const C = 3;
    const lengths = [23, 9, 0];
    const data = new Float32Array(B * T * C);
    const m = new BigInt64Array(B * T);
    for (let b = 0; b < B; b++)
      for (let t = 0; t < T; t++) {
        m[b * T + t] = t < lengths[b]! ? 1n : 0n;
        for (let c = 0; c < C; c++) data[(b * T + t) * C + c] = t < lengths[b]! ? 5 * (rng.next() - 0.5) + c : Number.NaN;
      }
    const out = (await s.run({ x: tensor(data, [B, T, C]), mask: tensor(m, [B, T]) })).f;
    expect(out.shape).toEqual([B, FUNCTIONALS.length * C]);
    const got = out.data as Float32Array;
    for (let b = 0; b < B; b++)
      for (let c = 0; c < C; c++) {
        const series = Array.from({ length: lengths[b]! }, (_, t) => data[(b * T + t) * C + c]!);
        const want = oracle(series);
        FUNCTIONALS.forEach((name, k) => expect(got[b * FUNCTIONALS.length * C + k * C + c], `clip ${b} channel ${c} ${name}`).toBeCloseTo(want[k]!, 4));
      }
    await s.release();
  });
});
