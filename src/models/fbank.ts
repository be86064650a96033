/**
 * Kaldi-compatible log-mel filterbank features, and a weight-free "encoder" built on them so the whole EmoSLLM
 * pipeline (encoder -> QPMapper -> LLM) runs without downloading a speech model.
 *
 * `fbank()` matches Kaldi's `compute-fbank-feats` / `torchaudio.compliance.kaldi.fbank` with these settings
 * (Kaldi defaults unless noted):
 *   - 80 mel bins (Kaldi default 23), dither 0 (Kaldi default 1; we are deterministic, dither is not supported)
 *   - frame length 25 ms (400 samples at 16 kHz), shift 10 ms (160), snip_edges true:
 *     frames = 1 + floor((N - 400) / 160), or 0 when N < 400 (snip_edges false is not supported)
 *   - per-frame DC-offset removal, then pre-emphasis 0.97 with Kaldi's first-sample convention
 *     (x[i] -= 0.97 x[i-1] for i > 0, x[0] -= 0.97 x[0]), then the povey window (hann^0.85, non-periodic)
 *   - zero-padded to the next power of two (512), power spectrum
 *   - Kaldi mel banks: mel(f) = 1127 ln(1 + f/700), low 20 Hz, high = Nyquist (highFreq <= 0 means Nyquist +
 *     highFreq, as in Kaldi), triangles in the mel domain over FFT bins 0..255 (the Nyquist bin 256 gets no weight)
 *   - natural log with a floor at float32 epsilon (1.1920929e-07); no energy coefficient
 *
 * Input scale: Kaldi reads 16-bit WAVs as raw integer values (-32768..32767), while this project carries audio
 * as float in [-1, 1]. We multiply by `inputScale` (default 32768) so the output equals Kaldi's on the same WAV
 * file and `torchaudio...fbank(waveform * 32768)`. The scale only adds 2 ln(scale) to every log-energy (except
 * where the epsilon floor is hit, i.e. digital silence), and cancels completely under CMVN.
 *
 * CMVN (`cmvn: true`): per-utterance mean and variance normalisation of each mel bin over the clip's frames,
 * (x - mean) / sqrt(var + 1e-6), population variance. Off by default for `fbank()` (plain Kaldi output), on by
 * default for `FbankEncoder`: log-mel levels shift with microphone gain, distance and speaker loudness, which
 * says nothing about emotion, and the QPMapper/LLM adapter trains faster on zero-mean, unit-variance inputs.
 * (Per-utterance CMVN does remove the absolute loudness of a clip; relative loudness over time is kept.)
 *
 * Implementation: the window, the bit-reversal/twiddle tables of a radix-2 FFT and the sparse mel matrix are
 * computed once per configuration (`FbankPlan`, memoised). Each frame's real 512-point FFT is done as one
 * 256-point complex FFT of the packed even/odd samples plus a split step. All arithmetic is float64; the output
 * is float32.
 */
import crypto from 'node:crypto';
import { UserError } from '../util/errors.ts';
import type { FrameEncoder } from './encoder.ts';

export type FbankWindow = 'povey' | 'hanning' | 'hamming' | 'rectangular' | 'blackman';

export interface FbankOptions {
  /** Sample rate of the input, Hz (default 16000). */
  sampleRate?: number;
  /** Number of mel bins (default 80). */
  numMelBins?: number;
  /** Frame length in ms (default 25). */
  frameLengthMs?: number;
  /** Frame shift in ms (default 10). */
  frameShiftMs?: number;
  /** Lowest mel-bank frequency, Hz (default 20). */
  lowFreq?: number;
  /** Highest mel-bank frequency, Hz; <= 0 means Nyquist + highFreq (default 0: Nyquist). */
  highFreq?: number;
  /** Pre-emphasis coefficient (default 0.97; 0 turns it off). */
  preemphasis?: number;
  /** Subtract each frame's mean before pre-emphasis (default true). */
  removeDcOffset?: boolean;
  /** Window function (default 'povey'). */
  windowType?: FbankWindow;
  /** Factor applied to the samples first (default 32768: float [-1, 1] -> Kaldi's int16 scale). */
  inputScale?: number;
  /** Per-utterance mean/variance normalisation of each bin (default false here, true in FbankEncoder). */
  cmvn?: boolean;
}

export type ResolvedFbankOptions = Required<FbankOptions>;

export interface FbankResult {
  frames: number;
  bins: number;
  /** [frames, bins] row-major. */
  data: Float32Array;
}

/** float32 machine epsilon: Kaldi's (and torchaudio's) floor before the log. */
export const FBANK_LOG_FLOOR = 1.1920928955078125e-7;
/** Variance floor used by CMVN. */
export const CMVN_VAR_EPS = 1e-6;

export const FBANK_DEFAULTS: Readonly<ResolvedFbankOptions> = Object.freeze({
  sampleRate: 16000,
  numMelBins: 80,
  frameLengthMs: 25,
  frameShiftMs: 10,
  lowFreq: 20,
  highFreq: 0,
  preemphasis: 0.97,
  removeDcOffset: true,
  windowType: 'povey',
  inputScale: 32768,
  cmvn: false,
});

const WINDOWS: readonly FbankWindow[] = ['povey', 'hanning', 'hamming', 'rectangular', 'blackman'];

export const melScale = (f: number): number => 1127 * Math.log(1 + f / 700);
export const inverseMelScale = (m: number): number => 700 * (Math.exp(m / 1127) - 1);

function bad(msg: string): never {
  throw new UserError(msg, 'fbank options');
}

/** Fills in defaults and validates; throws a one-line UserError on a bad option. */
export function resolveFbankOptions(opts: FbankOptions = {}): ResolvedFbankOptions {
  const o: ResolvedFbankOptions = { ...FBANK_DEFAULTS };
  for (const [k, v] of Object.entries(opts)) {
    if (v === undefined) continue;
    if (!(k in FBANK_DEFAULTS)) bad(`unknown option "${k}" (known: ${Object.keys(FBANK_DEFAULTS).join(', ')})`);
    (o as Record<string, unknown>)[k] = v;
  }
  const num = (k: keyof ResolvedFbankOptions): number => {
    const v = o[k];
    if (typeof v !== 'number' || !Number.isFinite(v)) bad(`${k} must be a finite number, got ${JSON.stringify(v)}`);
    return v;
  };
  if (!(num('sampleRate') > 0)) bad(`sampleRate must be > 0, got ${o.sampleRate}`);
  if (!Number.isInteger(num('numMelBins')) || o.numMelBins < 1) bad(`numMelBins must be an integer >= 1, got ${o.numMelBins}`);
  if (!(num('frameLengthMs') > 0) || !(num('frameShiftMs') > 0)) bad('frameLengthMs and frameShiftMs must be > 0');
  num('lowFreq');
  num('highFreq');
  num('preemphasis');
  num('inputScale');
  if (typeof o.removeDcOffset !== 'boolean') bad('removeDcOffset must be a boolean');
  if (typeof o.cmvn !== 'boolean') bad('cmvn must be a boolean');
  if (!WINDOWS.includes(o.windowType)) bad(`windowType must be one of ${WINDOWS.join(', ')}, got ${JSON.stringify(o.windowType)}`);
  const len = Math.trunc((o.sampleRate * o.frameLengthMs) / 1000);
  const shift = Math.trunc((o.sampleRate * o.frameShiftMs) / 1000);
  if (len < 2) bad(`frame length is ${len} samples; need at least 2`);
  if (shift < 1) bad(`frame shift is ${shift} samples; need at least 1`);
  const nyquist = o.sampleRate / 2;
  const high = o.highFreq <= 0 ? nyquist + o.highFreq : o.highFreq;
  if (o.lowFreq < 0 || o.lowFreq >= nyquist) bad(`lowFreq must be in [0, ${nyquist}), got ${o.lowFreq}`);
  if (high <= o.lowFreq || high > nyquist) bad(`highFreq must resolve to (lowFreq, ${nyquist}], got ${o.highFreq} -> ${high}`);
  return o;
}

function windowFunction(type: FbankWindow, n: number): Float64Array {
  const w = new Float64Array(n);
  const a = (2 * Math.PI) / (n - 1);
  for (let i = 0; i < n; i++) {
    switch (type) {
      case 'hanning':
        w[i] = 0.5 - 0.5 * Math.cos(a * i);
        break;
      case 'povey':
        w[i] = Math.pow(0.5 - 0.5 * Math.cos(a * i), 0.85);
        break;
      case 'hamming':
        w[i] = 0.54 - 0.46 * Math.cos(a * i);
        break;
      case 'blackman':
        w[i] = 0.42 - 0.5 * Math.cos(a * i) + 0.08 * Math.cos(2 * a * i);
        break;
      default:
        w[i] = 1;
    }
  }
  return w;
}

/** Precomputed tables for one configuration. */
export class FbankPlan {
  readonly opts: ResolvedFbankOptions;
  /** Samples per frame / per shift / FFT size. */
  readonly frameLength: number;
  readonly frameShift: number;
  readonly fftSize: number;
  readonly window: Float64Array;
  /** Mel bank b covers FFT bins melStart[b] .. melStart[b] + melWeights[b].length - 1. */
  readonly melStart: Int32Array;
  readonly melWeights: Float64Array[];
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

  constructor(opts: FbankOptions = {}) {
    const o = resolveFbankOptions(opts);
    this.opts = o;
    this.frameLength = Math.trunc((o.sampleRate * o.frameLengthMs) / 1000);
    this.frameShift = Math.trunc((o.sampleRate * o.frameShiftMs) / 1000);
    let n = 2;
    while (n < this.frameLength) n *= 2;
    this.fftSize = n;
    this.window = windowFunction(o.windowType, this.frameLength);

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

    // Kaldi MelBanks: FFT bins 0..n/2-1, triangles in the mel domain
    const nyquist = o.sampleRate / 2;
    const high = o.highFreq <= 0 ? nyquist + o.highFreq : o.highFreq;
    const melLow = melScale(o.lowFreq);
    const melHigh = melScale(high);
    const delta = (melHigh - melLow) / (o.numMelBins + 1);
    const binWidth = o.sampleRate / n;
    this.melStart = new Int32Array(o.numMelBins);
    this.melWeights = [];
    for (let b = 0; b < o.numMelBins; b++) {
      const left = melLow + b * delta;
      const center = melLow + (b + 1) * delta;
      const right = melLow + (b + 2) * delta;
      let first = -1;
      const w: number[] = [];
      for (let k = 0; k < half; k++) {
        const mel = melScale(binWidth * k);
        if (mel > left && mel < right) {
          if (first < 0) first = k;
          // keep a contiguous run (triangles are contiguous in k since mel(f) is monotonic)
          while (first + w.length < k) w.push(0);
          w.push(mel <= center ? (mel - left) / (center - left) : (right - mel) / (right - center));
        }
      }
      this.melStart[b] = first < 0 ? 0 : first;
      this.melWeights.push(Float64Array.from(w));
    }

    this.frame = new Float64Array(n);
    this.re = new Float64Array(half);
    this.im = new Float64Array(half);
    this.power = new Float64Array(half);
  }

  /** Number of frames for `numSamples` samples (snip_edges: only whole frames). */
  numFrames(numSamples: number): number {
    return numSamples < this.frameLength ? 0 : 1 + Math.floor((numSamples - this.frameLength) / this.frameShift);
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
    const frames = this.numFrames(samples.length);
    const data = new Float32Array(frames * bins);
    const L = this.frameLength;
    const frame = this.frame;
    const win = this.window;
    const scale = o.inputScale;
    const pre = o.preemphasis;
    const { melStart, melWeights } = this;
    frame.fill(0);
    for (let f = 0; f < frames; f++) {
      const off = f * this.frameShift;
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

const plans = new Map<string, FbankPlan>();

/** The memoised plan for a configuration (at most 16 kept). */
export function fbankPlan(opts: FbankOptions = {}): FbankPlan {
  const o = resolveFbankOptions(opts);
  const key = JSON.stringify(Object.keys(o).sort().map((k) => [k, o[k as keyof ResolvedFbankOptions]]));
  let p = plans.get(key);
  if (!p) {
    if (plans.size >= 16) plans.delete(plans.keys().next().value as string);
    p = new FbankPlan(o);
    plans.set(key, p);
  }
  return p;
}

/** Kaldi-compatible log-mel filterbank of `samples` (float, nominally in [-1, 1]); see the file comment. */
export function fbank(samples: Float32Array, opts?: FbankOptions): FbankResult {
  return fbankPlan(opts).compute(samples);
}

/** Bump when the computation changes in a way that changes outputs (invalidates cached features). */
export const FBANK_IMPL_VERSION = 1;

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
  private readonly plan: FbankPlan;

  constructor(opts: FbankOptions = {}) {
    const o = resolveFbankOptions({ cmvn: true, ...opts });
    this.options = Object.freeze(o);
    // own plan (not the memoised one): its scratch buffers are then never shared with other callers
    this.plan = new FbankPlan(o);
    this.hiddenSize = o.numMelBins;
    this.frameRate = o.sampleRate / this.plan.frameShift;
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
    if (x.length < this.plan.frameLength) {
      x = new Float32Array(this.plan.frameLength);
      x.set(samples);
    }
    const r = this.plan.compute(x);
    return { states: [r.data], frames: r.frames };
  }

  async encode(batch: Float32Array[]): Promise<Array<{ states: Float32Array[]; frames: number }>> {
    return batch.map((s) => this.encodeOne(s));
  }
}
