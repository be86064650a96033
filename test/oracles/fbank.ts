/**
 * Test oracle: the Kaldi log-mel filterbank of src/models/fbank.ts computed in plain JS (float64 arithmetic,
 * float32 output), for the tests to check the graph (fbank-graph.ts) and the feature cache against. Each frame's
 * real FFT is one half-size complex radix-2 FFT of the packed even/odd samples plus a split step.
 */
import crypto from 'node:crypto';
import { UserError } from '../../src/util/errors.ts';
import type { FrameEncoder } from '../../src/models/encoder.ts';
import { CMVN_VAR_EPS, FBANK_IMPL_VERSION, FBANK_LOG_FLOOR, type FbankOptions, FbankPlan, type ResolvedFbankOptions, fbankPlan, resolveFbankOptions } from '../../src/models/fbank.ts';

export interface FbankResult {
  frames: number;
  bins: number;
  /** [frames, bins] row-major. */
  data: Float32Array;
}

/** The filterbank of one configuration in JS: the plan's tables plus FFT tables and scratch buffers. */
class FbankOracle {
  readonly opts: ResolvedFbankOptions;
  // complex FFT of size fftSize/2
  private readonly half: number;
  private readonly bitrev: Uint32Array;
  private readonly twRe: Float64Array;
  private readonly twIm: Float64Array;
  // split step: exp(-2 pi i k / fftSize), k < half
  private readonly spRe: Float64Array;
  private readonly spIm: Float64Array;
  // scratch
  private readonly frame: Float64Array;
  private readonly re: Float64Array;
  private readonly im: Float64Array;
  private readonly power: Float64Array;

  constructor(private readonly plan: FbankPlan) {
    this.opts = plan.opts;
    const n = plan.fftSize;
    const half = n / 2;
    this.half = half;
    const bits = Math.log2(half);
    this.bitrev = new Uint32Array(half);
    for (let i = 0; i < half; i++) {
      let r = 0;
      for (let b = 0, x = i; b < bits; b++, x >>= 1) r = (r << 1) | (x & 1);
      this.bitrev[i] = r;
    }
    // stage of size s uses exp(-2 pi i k / s), k < s/2, stored at [s/2 + k]
    this.twRe = new Float64Array(Math.max(2, half));
    this.twIm = new Float64Array(Math.max(2, half));
    for (let size = 2; size <= half; size <<= 1) {
      for (let k = 0; k < size / 2; k++) {
        this.twRe[size / 2 + k] = Math.cos((2 * Math.PI * k) / size);
        this.twIm[size / 2 + k] = -Math.sin((2 * Math.PI * k) / size);
      }
    }
    this.spRe = new Float64Array(half);
    this.spIm = new Float64Array(half);
    for (let k = 0; k < half; k++) {
      this.spRe[k] = Math.cos((2 * Math.PI * k) / n);
      this.spIm[k] = -Math.sin((2 * Math.PI * k) / n);
    }

    this.frame = new Float64Array(n);
    this.re = new Float64Array(half);
    this.im = new Float64Array(half);
    this.power = new Float64Array(half);
  }

  /** In-place complex FFT of size `half` on (re, im). */
  private fft(re: Float64Array, im: Float64Array): void {
    const n = this.half;
    const rev = this.bitrev;
    for (let i = 0; i < n; i++) {
      const j = rev[i]!;
      if (j > i) {
        const tr = re[i]!;
        re[i] = re[j]!;
        re[j] = tr;
        const ti = im[i]!;
        im[i] = im[j]!;
        im[j] = ti;
      }
    }
    // stages of size 2 and 4 together: twiddles are 1 and -i, no multiplications
    if (n >= 4) {
      for (let a = 0; a < n; a += 4) {
        const r0 = re[a]! + re[a + 1]!;
        const i0 = im[a]! + im[a + 1]!;
        const r1 = re[a]! - re[a + 1]!;
        const i1 = im[a]! - im[a + 1]!;
        const r2 = re[a + 2]! + re[a + 3]!;
        const i2 = im[a + 2]! + im[a + 3]!;
        const r3 = re[a + 2]! - re[a + 3]!;
        const i3 = im[a + 2]! - im[a + 3]!;
        re[a] = r0 + r2;
        im[a] = i0 + i2;
        re[a + 2] = r0 - r2;
        im[a + 2] = i0 - i2;
        // (r3 + i i3) * (-i) = i3 - i r3
        re[a + 1] = r1 + i3;
        im[a + 1] = i1 - r3;
        re[a + 3] = r1 - i3;
        im[a + 3] = i1 + r3;
      }
    } else if (n === 2) {
      const r = re[0]!;
      const i = im[0]!;
      re[0] = r + re[1]!;
      im[0] = i + im[1]!;
      re[1] = r - re[1]!;
      im[1] = i - im[1]!;
    }
    // remaining stages: twiddles of each stage stored contiguously at stageTw[halfSize .. 2 halfSize)
    const twRe = this.twRe;
    const twIm = this.twIm;
    for (let size = 8; size <= n; size <<= 1) {
      const halfSize = size >> 1;
      for (let start = 0; start < n; start += size) {
        for (let k = 0; k < halfSize; k++) {
          const wr = twRe[halfSize + k]!;
          const wi = twIm[halfSize + k]!;
          const a = start + k;
          const b = a + halfSize;
          const br = re[b]!;
          const bi = im[b]!;
          const xr = br * wr - bi * wi;
          const xi = br * wi + bi * wr;
          const ar = re[a]!;
          const ai = im[a]!;
          re[b] = ar - xr;
          im[b] = ai - xi;
          re[a] = ar + xr;
          im[a] = ai + xi;
        }
      }
    }
  }

  /** Power spectrum |X[k]|^2, k < fftSize/2, of the real signal in `this.frame` (length fftSize). */
  private powerSpectrum(): Float64Array {
    const { re, im, frame, power, spRe, spIm } = this;
    const m = this.half;
    for (let j = 0; j < m; j++) {
      re[j] = frame[2 * j]!;
      im[j] = frame[2 * j + 1]!;
    }
    this.fft(re, im);
    // X[k] = E[k] + W^k O[k]; E = (Z[k] + conj Z[m-k]) / 2, O = (Z[k] - conj Z[m-k]) / 2i
    for (let k = 0; k < m; k++) {
      const k2 = k === 0 ? 0 : m - k;
      const zr = re[k]!;
      const zi = im[k]!;
      const cr = re[k2]!;
      const ci = -im[k2]!;
      const er = 0.5 * (zr + cr);
      const ei = 0.5 * (zi + ci);
      // (a + bi) / (2i) = (b - ai) / 2
      const dr = zr - cr;
      const di = zi - ci;
      const or = 0.5 * di;
      const oi = -0.5 * dr;
      const wr = spRe[k]!;
      const wi = spIm[k]!;
      const xr = er + (or * wr - oi * wi);
      const xi = ei + (or * wi + oi * wr);
      power[k] = xr * xr + xi * xi;
    }
    return power;
  }

  /** Log-mel features of one clip. */
  compute(samples: Float32Array): FbankResult {
    const o = this.opts;
    const bins = o.numMelBins;
    for (let i = 0; i < samples.length; i++) {
      if (!Number.isFinite(samples[i]!)) throw new UserError(`input has a non-finite sample (${samples[i]}) at index ${i}`, 'fbank');
    }
    const frames = this.plan.numFrames(samples.length);
    const data = new Float32Array(frames * bins);
    const L = this.plan.frameLength;
    const frame = this.frame;
    const win = this.plan.window;
    const scale = o.inputScale;
    const pre = o.preemphasis;
    const { melStart, melWeights } = this.plan;
    frame.fill(0);
    for (let f = 0; f < frames; f++) {
      const off = f * this.plan.frameShift;
      let sum = 0;
      for (let i = 0; i < L; i++) {
        const v = samples[off + i]! * scale;
        frame[i] = v;
        sum += v;
      }
      if (o.removeDcOffset) {
        const mean = sum / L;
        for (let i = 0; i < L; i++) frame[i] = frame[i]! - mean;
      }
      if (pre !== 0) {
        for (let i = L - 1; i > 0; i--) frame[i] = frame[i]! - pre * frame[i - 1]!;
        frame[0] = frame[0]! - pre * frame[0]!;
      }
      for (let i = 0; i < L; i++) frame[i] = frame[i]! * win[i]!;
      // frame[L..fftSize) stays 0
      const power = this.powerSpectrum();
      const row = f * bins;
      for (let b = 0; b < bins; b++) {
        const w = melWeights[b]!;
        const s0 = melStart[b]!;
        let e = 0;
        for (let j = 0; j < w.length; j++) e += w[j]! * power[s0 + j]!;
        data[row + b] = Math.log(e > FBANK_LOG_FLOOR ? e : FBANK_LOG_FLOOR);
      }
    }
    if (o.cmvn) applyCmvn(data, frames, bins);
    return { frames, bins, data };
  }
}

/** In-place per-utterance mean/variance normalisation of each column of a [frames, bins] matrix. */
export function applyCmvn(data: Float32Array, frames: number, bins: number): void {
  if (frames === 0) return;
  const mean = new Float64Array(bins);
  const sq = new Float64Array(bins);
  for (let f = 0; f < frames; f++) {
    const row = f * bins;
    for (let b = 0; b < bins; b++) mean[b] = mean[b]! + data[row + b]!;
  }
  for (let b = 0; b < bins; b++) mean[b] = mean[b]! / frames;
  for (let f = 0; f < frames; f++) {
    const row = f * bins;
    for (let b = 0; b < bins; b++) {
      const d = data[row + b]! - mean[b]!;
      sq[b] = sq[b]! + d * d;
    }
  }
  const inv = new Float64Array(bins);
  for (let b = 0; b < bins; b++) inv[b] = 1 / Math.sqrt(sq[b]! / frames + CMVN_VAR_EPS);
  for (let f = 0; f < frames; f++) {
    const row = f * bins;
    for (let b = 0; b < bins; b++) data[row + b] = (data[row + b]! - mean[b]!) * inv[b]!;
  }
}

/** Kaldi-compatible log-mel filterbank of `samples` (float, nominally in [-1, 1]); see the file comment. */
export function fbank(samples: Float32Array, opts?: FbankOptions): FbankResult {
  return new FbankOracle(fbankPlan(opts)).compute(samples);
}

/**
 * The built-in, weight-free encoder: one hidden state, the (by default CMVN-normalised) 80-bin log-mel
 * filterbank, at 100 frames/s. Clips shorter than one frame (25 ms) are zero-padded to one frame, so every
 * clip yields at least one frame (plain `fbank()` returns 0 frames there, like Kaldi).
 */
export class FbankEncoder implements FrameEncoder {
  readonly id: string;
  readonly numHiddenStates = 1;
  readonly hiddenSize: number;
  readonly frameRate: number;
  readonly options: Readonly<ResolvedFbankOptions>;
  private readonly oracle: FbankOracle;
  private readonly frameLength: number;

  constructor(opts: FbankOptions = {}) {
    const o = resolveFbankOptions({ cmvn: true, ...opts });
    this.options = Object.freeze(o);
    // own plan (not the memoised one): its scratch buffers are then never shared with other callers
    const plan = new FbankPlan(o);
    this.oracle = new FbankOracle(plan);
    this.frameLength = plan.frameLength;
    this.hiddenSize = o.numMelBins;
    this.frameRate = o.sampleRate / plan.frameShift;
    const canonical = JSON.stringify({
      kind: 'fbank',
      version: FBANK_IMPL_VERSION,
      options: Object.keys(o)
        .sort()
        .map((k) => [k, o[k as keyof ResolvedFbankOptions]]),
    });
    this.id = `fbank-v${FBANK_IMPL_VERSION}-${crypto.createHash('sha256').update(canonical).digest('hex').slice(0, 16)}`;
  }

  /** Features of one clip, synchronously. */
  encodeOne(samples: Float32Array): { states: Float32Array[]; frames: number } {
    let x = samples;
    if (x.length < this.frameLength) {
      x = new Float32Array(this.frameLength);
      x.set(samples);
    }
    const r = this.oracle.compute(x);
    return { states: [r.data], frames: r.frames };
  }

  async encode(batch: Float32Array[]): Promise<Array<{ states: Float32Array[]; frames: number }>> {
    return batch.map((s) => this.encodeOne(s));
  }
}
