/**
 * Test oracle: HF Wav2Vec2FeatureExtractor's waveform normalisation in numpy's exact float32 arithmetic
 * (pairwise summation, every intermediate rounded to float32), so it matches the fixtures' input_values bit for
 * bit. Production runs normalizeWaveformGraph (src/audio/normalize.ts); the tests compare it with this.
 */
const f32 = Math.fround;

/** numpy's pairwise_sum for float32 (loops_utils.h.src): 8 accumulators per block of <= 128, split in halves above. */
export function pairwiseSumF32(a: Float32Array, start: number, n: number): number {
  if (n < 8) {
    let res = 0;
    for (let i = 0; i < n; i++) res = f32(res + a[start + i]!);
    return res;
  }
  if (n <= 128) {
    const r = [a[start]!, a[start + 1]!, a[start + 2]!, a[start + 3]!, a[start + 4]!, a[start + 5]!, a[start + 6]!, a[start + 7]!];
    let i = 8;
    for (; i < n - (n % 8); i += 8) {
      for (let j = 0; j < 8; j++) r[j] = f32(r[j]! + a[start + i + j]!);
    }
    let res = f32(f32(f32(r[0]! + r[1]!) + f32(r[2]! + r[3]!)) + f32(f32(r[4]! + r[5]!) + f32(r[6]! + r[7]!)));
    for (; i < n; i++) res = f32(res + a[start + i]!);
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return f32(pairwiseSumF32(a, start, n2) + pairwiseSumF32(a, start + n2, n - n2));
}

export interface NormalizeOptions {
  /** `do_normalize` from the preprocessor config; false returns the input unchanged. */
  doNormalize: boolean;
  /** Samples [0, validLength) are real audio, the rest padding (default: all valid). */
  validLength?: number;
  /** Value written to padded positions after normalising (HF `padding_value`, default 0). */
  paddingValue?: number;
}

/** Zero-mean unit-variance normalisation over the valid samples, in float32 arithmetic like HF/numpy. */
export function normalizeWaveform(x: Float32Array, opts: NormalizeOptions): Float32Array {
  if (!opts.doNormalize) return x;
  const n = opts.validLength ?? x.length;
  if (!Number.isInteger(n) || n < 0 || n > x.length) throw new RangeError(`validLength ${n} outside 0..${x.length}`);
  const out = new Float32Array(x.length);
  if (n > 0) {
    // numpy: mean = float32(sum) / float32(count); var = sum((x - mean)^2) / count, all float32.
    const count = f32(n);
    const mean = f32(pairwiseSumF32(x, 0, n) / count);
    const sq = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const d = f32(x[i]! - mean);
      sq[i] = f32(d * d);
    }
    const variance = f32(pairwiseSumF32(sq, 0, n) / count);
    const denom = f32(Math.sqrt(f32(variance + f32(1e-7))));
    for (let i = 0; i < n; i++) out[i] = f32(f32(x[i]! - mean) / denom);
  }
  const pad = opts.paddingValue ?? 0;
  if (n < x.length) out.fill(pad, n);
  return out;
}

