/** Simple prosody measurements for tests: RMS energy, voiced-frame F0 (autocorrelation), speech rate proxy. */

export function rms(x: Float32Array): number {
  let s = 0;
  for (const v of x) s += v * v;
  return Math.sqrt(s / x.length);
}

/**
 * Median F0 (Hz) over voiced frames: normalised autocorrelation peak in 70-400 Hz, frames of 40 ms every 10 ms,
 * a frame counting as voiced when it is within 25 dB of the loudest and its peak correlation exceeds 0.5.
 */
export function medianF0(x: Float32Array, sr: number): number {
  const frame = Math.round(0.04 * sr);
  const hop = Math.round(0.01 * sr);
  const minLag = Math.floor(sr / 400);
  const maxLag = Math.ceil(sr / 70);
  const energies: number[] = [];
  for (let s = 0; s + frame + maxLag <= x.length; s += hop) {
    let e = 0;
    for (let i = 0; i < frame; i++) e += x[s + i]! ** 2;
    energies.push(e);
  }
  const maxE = Math.max(...energies);
  const f0s: number[] = [];
  energies.forEach((e, k) => {
    if (e < maxE * 10 ** (-25 / 10)) return;
    const s = k * hop;
    let best = 0;
    let bestLag = 0;
    for (let lag = minLag; lag <= maxLag; lag++) {
      let num = 0;
      let d1 = 0;
      let d2 = 0;
      for (let i = 0; i < frame; i++) {
        const a = x[s + i]!;
        const b = x[s + i + lag]!;
        num += a * b;
        d1 += a * a;
        d2 += b * b;
      }
      const r = num / Math.sqrt(d1 * d2 + 1e-12);
      if (r > best) {
        best = r;
        bestLag = lag;
      }
    }
    if (best > 0.5) f0s.push(sr / bestLag);
  });
  f0s.sort((a, b) => a - b);
  return f0s.length ? f0s[f0s.length >> 1]! : NaN;
}

/** Spread of F0 across voiced frames (10th-90th percentile ratio, in semitones). */
export function f0RangeSemitones(x: Float32Array, sr: number): number {
  const frame = Math.round(0.04 * sr);
  const hop = Math.round(0.01 * sr);
  const minLag = Math.floor(sr / 400);
  const maxLag = Math.ceil(sr / 70);
  const f0s: number[] = [];
  let maxE = 0;
  const es: number[] = [];
  for (let s = 0; s + frame + maxLag <= x.length; s += hop) {
    let e = 0;
    for (let i = 0; i < frame; i++) e += x[s + i]! ** 2;
    es.push(e);
    maxE = Math.max(maxE, e);
  }
  es.forEach((e, k) => {
    if (e < maxE * 10 ** (-25 / 10)) return;
    const s = k * hop;
    let best = 0;
    let bestLag = 0;
    for (let lag = minLag; lag <= maxLag; lag++) {
      let num = 0, d1 = 0, d2 = 0;
      for (let i = 0; i < frame; i++) {
        const a = x[s + i]!, b = x[s + i + lag]!;
        num += a * b; d1 += a * a; d2 += b * b;
      }
      const r = num / Math.sqrt(d1 * d2 + 1e-12);
      if (r > best) { best = r; bestLag = lag; }
    }
    if (best > 0.5) f0s.push(sr / bestLag);
  });
  f0s.sort((a, b) => a - b);
  if (f0s.length < 5) return NaN;
  const p = (q: number) => f0s[Math.min(f0s.length - 1, Math.floor(q * f0s.length))]!;
  return 12 * Math.log2(p(0.9) / p(0.1));
}
