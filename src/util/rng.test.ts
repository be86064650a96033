import { describe, expect, it } from 'vitest';
import { Rng } from './rng.ts';

/** Straightforward xoshiro128** on BigInt, as the reference for our 32-bit bit-twiddling. */
function reference(state: bigint[], n: number): number[] {
  const M = 0xffffffffn;
  const rotl = (x: bigint, k: bigint) => ((x << k) | (x >> (32n - k))) & M;
  const s = [...state];
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    out.push(Number((rotl((s[1]! * 5n) & M, 7n) * 9n) & M));
    const t = (s[1]! << 9n) & M;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11n);
  }
  return out;
}

describe('Rng (xoshiro128**)', () => {
  it('matches a reference implementation of xoshiro128**', () => {
    const r = new Rng(0);
    r.setState([1, 2, 3, 4]);
    const got = Array.from({ length: 1000 }, () => r.nextUint32());
    expect(got[0]).toBe(11520); // rotl(2*5, 7) * 9
    expect(got).toEqual(reference([1n, 2n, 3n, 4n], 1000));
  });

  it('is deterministic per seed and differs across seeds (numbers and strings)', () => {
    const a = Array.from({ length: 5 }, ((r) => () => r.next())(new Rng(42)));
    const b = Array.from({ length: 5 }, ((r) => () => r.next())(new Rng(42)));
    const c = Array.from({ length: 5 }, ((r) => () => r.next())(new Rng(43)));
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    expect(new Rng('fold-1').next()).toBe(new Rng('fold-1').next());
    expect(new Rng('fold-1').next()).not.toBe(new Rng('fold-2').next());
    expect(new Rng(2 ** 40).next()).not.toBe(new Rng(0).next());
  });

  it('getState/setState resumes bit-identically (through JSON)', () => {
    const r = new Rng(123);
    for (let i = 0; i < 17; i++) r.normal();
    const saved = JSON.parse(JSON.stringify(r.getState())) as number[];
    const cont = [r.next(), r.int(1000), r.normal(), r.shuffle([1, 2, 3, 4, 5, 6])];
    const r2 = new Rng(999);
    r2.setState(saved);
    expect([r2.next(), r2.int(1000), r2.normal(), r2.shuffle([1, 2, 3, 4, 5, 6])]).toEqual(cont);
    expect(saved.every((v) => Number.isInteger(v) && v >= 0 && v <= 0xffffffff)).toBe(true);
    expect(() => r2.setState([0, 0, 0, 0])).toThrow(RangeError);
    expect(() => r2.setState([1, 2, 3])).toThrow(RangeError);
  });

  it('next() in [0,1), int() unbiased, normal() ~ N(0,1), shuffle a permutation', () => {
    const r = new Rng(5);
    const counts = new Array(7).fill(0);
    let s = 0;
    let s2 = 0;
    const N = 70_000;
    for (let i = 0; i < N; i++) {
      const u = r.next();
      expect(u >= 0 && u < 1).toBe(true);
      counts[r.int(7)]++;
      const z = r.normal();
      s += z;
      s2 += z * z;
    }
    for (const c of counts) expect(Math.abs(c - N / 7)).toBeLessThan(5 * Math.sqrt(N / 7));
    expect(Math.abs(s / N)).toBeLessThan(0.02);
    expect(Math.abs(s2 / N - 1)).toBeLessThan(0.03);
    const p = r.shuffle(Array.from({ length: 50 }, (_, i) => i));
    expect([...p].sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(() => r.int(0)).toThrow(RangeError);
  });

  it('fork() gives an independent, reproducible stream', () => {
    const a = new Rng(1).fork();
    const b = new Rng(1).fork();
    expect(a.next()).toBe(b.next());
    const parent = new Rng(1);
    const child = parent.fork();
    expect(child.next()).not.toBe(parent.next());
  });
});
