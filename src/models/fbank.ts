/**
 * Kaldi-compatible log-mel filterbank: the options, their defaults and the tables one configuration needs
 * (`FbankPlan`: window and sparse mel matrix, memoised). The filterbank itself is a graph (fbank-graph.ts) that
 * training, predict, the export and the browser all run; test/oracles/fbank.ts computes the same features in
 * plain JS with an FFT, as the tests' reference.
 *
 * The settings match Kaldi's `compute-fbank-feats` / `torchaudio.compliance.kaldi.fbank` (Kaldi defaults unless
 * noted):
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
 * CMVN (`cmvn: true`; off in FBANK_DEFAULTS, as in the training config's default): per-utterance mean and
 * variance normalisation of each mel bin over the clip's frames, (x - mean) / sqrt(var + 1e-6), population
 * variance. It takes out level shifts from microphone gain, distance and speaker loudness (and with them the
 * clip's absolute loudness; relative loudness over time is kept).
 */
import { UserError } from '../util/errors.ts';

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
  /** Per-utterance mean/variance normalisation of each bin (default false). */
  cmvn?: boolean;
}

export type ResolvedFbankOptions = Required<FbankOptions>;


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

/** Precomputed tables for one configuration. */export class FbankPlan {
  readonly opts: ResolvedFbankOptions;
  /** Samples per frame / per shift / FFT size. */
  readonly frameLength: number;
  readonly frameShift: number;
  readonly fftSize: number;
  readonly window: Float64Array;
  /** Mel bank b covers FFT bins melStart[b] .. melStart[b] + melWeights[b].length - 1. */
  readonly melStart: Int32Array;
  readonly melWeights: Float64Array[];

  constructor(opts: FbankOptions = {}) {
    const o = resolveFbankOptions(opts);
    this.opts = o;
    this.frameLength = Math.trunc((o.sampleRate * o.frameLengthMs) / 1000);
    this.frameShift = Math.trunc((o.sampleRate * o.frameShiftMs) / 1000);
    let n = 2;
    while (n < this.frameLength) n *= 2;
    this.fftSize = n;
    this.window = windowFunction(o.windowType, this.frameLength);

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
      for (let k = 0; k < n / 2; k++) {
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
  }

  /** Number of frames for `numSamples` samples (snip_edges: only whole frames). */
  numFrames(numSamples: number): number {
    return numSamples < this.frameLength ? 0 : 1 + Math.floor((numSamples - this.frameLength) / this.frameShift);
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

/** Bump when the computation changes in a way that changes outputs (invalidates cached features). */
export const FBANK_IMPL_VERSION = 1;
