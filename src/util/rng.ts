/**
 * Seeded, serialisable PRNG: xoshiro128** (Blackman & Vigna). Its whole state is four uint32 words, so a
 * training run can save `getState()` in a checkpoint and `setState()` it on resume for bit-identical draws.
 */

export type RngState = [number, number, number, number];

/** splitmix32: spreads a 32-bit seed over the state words (xoshiro must not start from a low-entropy state). */
function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** 32-bit FNV-1a of a string, so string seeds ("fold-3") are as reproducible as numbers. */
function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

export class Rng {
  private a = 0;
  private b = 0;
  private c = 0;
  private d = 0;

  /** Seed with an integer (any safe integer, negative allowed) or a string. */
  constructor(seed: number | string = 0) {
    let lo: number;
    let hi: number;
    if (typeof seed === 'string') {
      lo = hashString(seed);
      hi = hashString(`\u0001${seed}`);
    } else {
      if (!Number.isFinite(seed)) throw new RangeError(`Rng seed must be finite, got ${seed}`);
      const n = Math.trunc(seed);
      lo = n >>> 0;
      hi = Math.floor(n / 4294967296) >>> 0;
    }
    const sm = splitmix32(lo ^ Math.imul(hi, 0x9e3779b1));
    this.a = sm();
    this.b = sm();
    this.c = sm();
    this.d = sm();
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1;
  }

  /** Next raw uint32. */
  nextUint32(): number {
    const r = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return r;
  }

  /** Uniform in [0, 1) with 32 random bits. */
  next(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform integer in [0, n), unbiased (rejection sampling); n in [1, 2^32]. */
  int(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > 4294967296) throw new RangeError(`Rng.int(n) needs an integer 1..2^32, got ${n}`);
    const limit = 4294967296 - (4294967296 % n);
    for (;;) {
      const x = this.nextUint32();
      if (x < limit) return x % n;
    }
  }

  /** Uniform in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** Standard normal (Box-Muller; no cached spare, so the state stays exactly four words). */
  normal(): number {
    let u = 0;
    while (u === 0) u = this.next();
    const v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** In-place Fisher-Yates shuffle; returns the same array. */
  shuffle<T>(arr: T[]): T[] {
    for (let i = arr.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = arr[i]!;
      arr[i] = arr[j]!;
      arr[j] = t;
    }
    return arr;
  }

  /** An independent generator derived from this one's next draws (e.g. one stream per worker / epoch). */
  fork(): Rng {
    const r = new Rng(0);
    r.setState([this.nextUint32(), this.nextUint32(), this.nextUint32(), this.nextUint32() | 1]);
    return r;
  }

  getState(): RngState {
    return [this.a >>> 0, this.b >>> 0, this.c >>> 0, this.d >>> 0];
  }

  setState(state: readonly number[]): void {
    if (state.length !== 4 || !state.every((x) => Number.isInteger(x) && x >= 0 && x <= 0xffffffff)) {
      throw new RangeError('Rng state must be four uint32 values');
    }
    if (state.every((x) => x === 0)) throw new RangeError('Rng state must not be all zero');
    [this.a, this.b, this.c, this.d] = state as RngState;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
