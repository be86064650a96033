/**
 * Paralinguistic frame features as an engine graph, on the fbank's frames (same count, same 10 ms grid, frame
 * i centred on the fbank frame i), so the built-in encoders (frame-encoders.ts) can join them to the log-mel
 * and train, predict, serve, export and the browser run one computation:
 *
 *   prosody (3 channels): log-F0 (natural log of Hz), voicing (peak normalised autocorrelation, 0..1),
 *     log-energy (Kaldi's raw frame energy: log of the sum of squares of the scaled, DC-removed 25 ms frame)
 *   mfcc (26 channels): 13 Kaldi-style MFCCs (23 mel bins, orthonormal DCT-II, cepstral lifter 22, c0 kept:
 *     the energy is in prosody) and their deltas (Kaldi add-deltas, window 2, edge frames replicated)
 *
 * Pitch, after Boersma (1993, Praat's autocorrelation method), with graph ops only:
 *   1. a 50 ms Hann window (three periods of PITCH_MIN_HZ) centred on each fbank frame, DC removed
 *   2. its power spectrum up to PITCH_BAND_HZ (one DFT MatMul; the band limit keeps fricative noise out)
 *   3. the autocorrelation at lags 0 and PITCH_MIN_HZ..PITCH_MAX_HZ as one more MatMul (an inverse cosine
 *      transform of the power spectrum; zero-padding to PITCH_DFT_SIZE >= window + longest lag keeps it
 *      linear, not circular), each lag divided by r(0) and by the window's own normalised autocorrelation
 *   4. the best lag: the largest of r(lag) - OCTAVE_COST * log2(lag / shortest lag) (Praat's octave cost,
 *      which settles the near-tie between a period and its multiples towards the period), refined by a
 *      parabola through it and its neighbours
 *   5. voiced = voicing >= VOICING_THRESHOLD and the window's energy within SILENCE_DB of the clip's loudest;
 *      an unvoiced frame's log-F0 is the mean log-F0 of the clip's voiced frames (so it adds no jumps), or
 *      the middle of the search range (log sqrt(min * max)) in a clip with none
 * The graph is forward-only (a frozen feature extractor).
 */
import type { Graph, Value } from '../graph/ir.ts';
import {
  add,
  cast,
  concat,
  constant,
  dimOf,
  div,
  equal,
  gather,
  gatherElements,
  greater,
  greaterOrEqual,
  int64s,
  log,
  matmul,
  maximum,
  minimum,
  mul,
  neg,
  pad,
  range,
  reshapeTo,
  shapeOf,
  reduceMax,
  reduceMean,
  reduceSum,
  slice,
  squeeze,
  sub,
  unsqueeze,
  where,
} from '../graph/ops.ts';
import { FBANK_LOG_FLOOR, type ResolvedFbankOptions, fbankPlan } from './fbank.ts';
import { type FbankSpectrum, fbankMelMatrix, frameStarts } from './fbank-graph.ts';

export const PITCH_MIN_HZ = 60;
export const PITCH_MAX_HZ = 500;
/** pitch window: 50 ms, three periods of PITCH_MIN_HZ (Praat's rule for its autocorrelation method) */
export const PITCH_WINDOW_MS = 50;
/** zero-padded DFT length of the pitch window; >= window + longest lag, so the autocorrelation is not circular */
export const PITCH_DFT_SIZE = 1280;
export const PITCH_BAND_HZ = 4000;
/** per octave of lag, Praat's default */
export const OCTAVE_COST = 0.01;
/** Praat's default voicing threshold */
export const VOICING_THRESHOLD = 0.45;
/** a window this far below the clip's loudest (in energy) is silence, hence unvoiced (Praat: 0.03 in amplitude) */
export const SILENCE_DB = 30;

export const PROSODY_CHANNELS = ['log_f0', 'voicing', 'log_energy'] as const;
export const MFCC_COEFFS = 13;
export const MFCC_MEL_BINS = 23;
export const MFCC_LIFTER = 22;
export const MFCC_CHANNELS = 2 * MFCC_COEFFS;

/** Lag grid step in samples: fine enough that a parabola through the grid finds the peak of a 4 kHz band. */
export const PITCH_LAG_STEP = 0.5;

/** The pitch analysis constants for one sample rate: window, lag grid and the two matrices. */
export function pitchPlan(sampleRate: number) {
  const windowLength = Math.round((sampleRate * PITCH_WINDOW_MS) / 1000);
  const minLag = sampleRate / PITCH_MAX_HZ;
  const maxLag = sampleRate / PITCH_MIN_HZ;
  const N = Math.max(PITCH_DFT_SIZE, windowLength + Math.ceil(maxLag) + 2);
  const bins = Math.min(Math.floor((PITCH_BAND_HZ * N) / sampleRate), N / 2);
  const window = Float64Array.from({ length: windowLength }, (_, n) => 0.5 - 0.5 * Math.cos((2 * Math.PI * n) / (windowLength - 1)));
  // lag 0, then a grid from one step below minLag to one step above maxLag (the outer two only for parabolas)
  const steps = Math.ceil((maxLag - minLag) / PITCH_LAG_STEP);
  const lags = [0, ...Array.from({ length: steps + 3 }, (_, i) => minLag + (i - 1) * PITCH_LAG_STEP)];
  // the window's autocorrelation, continuous in the lag (linear between samples is plenty: it is smooth)
  const wAcf = Float64Array.from({ length: windowLength }, (_, lag) => {
    let s = 0;
    for (let n = 0; n + lag < windowLength; n++) s += window[n]! * window[n + lag]!;
    return s;
  });
  const windowAcf = (lag: number) => {
    const i = Math.floor(lag);
    return wAcf[i]! + (lag - i) * ((wAcf[i + 1] ?? 0) - wAcf[i]!);
  };
  const cosT = Float64Array.from({ length: N }, (_, t) => Math.cos((2 * Math.PI * t) / N));
  const sinT = Float64Array.from({ length: N }, (_, t) => Math.sin((2 * Math.PI * t) / N));
  const dft = new Float32Array(windowLength * 2 * bins);
  for (let n = 0; n < windowLength; n++)
    for (let k = 0; k < bins; k++) {
      dft[n * 2 * bins + k] = window[n]! * cosT[(k * n) % N]!;
      dft[n * 2 * bins + bins + k] = window[n]! * sinT[(k * n) % N]!;
    }
  // r(lag) / (w(lag) / w(0)) = sum_k c_k P_k cos(2 pi k lag / N) / ..., c_0 = 1, c_k = 2 (both halves of the
  // spectrum); a trigonometric polynomial in the lag, so fractional lags are exact, not interpolated
  const acf = new Float32Array(2 * bins * lags.length);
  lags.forEach((lag, j) => {
    const corr = lag === 0 ? 1 : wAcf[0]! / windowAcf(lag);
    for (let k = 0; k < bins; k++) {
      const v = (k === 0 ? 1 : 2) * Math.cos((2 * Math.PI * k * lag) / N) * corr;
      acf[k * lags.length + j] = v;
      acf[(bins + k) * lags.length + j] = v;
    }
  });
  return { windowLength, minLag, steps, bins, lags, dft, acf };
}

/** [B, frames, 3]: log-F0, voicing, log-energy (file comment) of the fbank spectrum's clip `samples` [B, S]. */
export function prosodyGraph(samples: Value, s: FbankSpectrum): Value {
  const g = samples.graph;
  const sr = s.plan.opts.sampleRate;
  const p = pitchPlan(sr);
  return g.scope('prosody', () => {
    // 1. pitch windows centred on the fbank frames: left pad by the difference of the half-lengths
    const lead = Math.max(0, Math.round((p.windowLength - s.plan.frameLength) / 2));
    const xp = pad(samples, [0, lead, 0, p.windowLength]);
    const offsets = int64s(samples, Array.from({ length: p.windowLength }, (_, i) => i));
    const idx = add(unsqueeze(frameStarts(samples, s.plan.frameLength, s.plan.frameShift), [1]), unsqueeze(offsets, [0]));
    let w = gather(xp, idx, 1); // [B, frames, windowLength]
    w = sub(w, reduceMean(w, [-1], true));

    // 2-3. band-limited power spectrum, then the window-corrected autocorrelation on the lag grid
    const spec = matmul(w, g.constant(p.dft, [p.windowLength, 2 * p.bins], 'float32', 'prosody.dft'));
    const r = matmul(mul(spec, spec), g.constant(p.acf, [2 * p.bins, p.lags.length], 'float32', 'prosody.acf'));
    const r0 = slice(r, [0], [1], [2]); // [B, frames, 1]
    const rn = div(slice(r, [1], [p.lags.length], [2]), maximum(r0, 1e-20)); // grid points -1 .. M

    // 4. every grid point's parabola through it and its neighbours (vertex offset in steps, clamped to half a
    //    step; flat or convex: none), the candidate's value at the vertex, the best score, its first grid point
    const M = p.steps + 1;
    const a = slice(rn, [0], [M], [2]);
    const b = slice(rn, [1], [M + 1], [2]);
    const c = slice(rn, [2], [M + 2], [2]);
    const curvature = minimum(add(sub(a, mul(b, 2)), c), -1e-6);
    const offset = maximum(minimum(div(mul(sub(a, c), 0.5), curvature), 0.5), -0.5);
    const peak = sub(b, mul(mul(sub(a, c), offset), 0.25));
    const penalty = Float32Array.from({ length: M }, (_, j) => OCTAVE_COST * Math.log2((p.minLag + j * PITCH_LAG_STEP) / p.minLag));
    const score = sub(peak, g.constant(penalty, [M], 'float32', 'prosody.octave_cost'));
    const best = reduceMax(score, [-1], true);
    const negJ = g.constant(Float32Array.from({ length: M }, (_, j) => -j), [M], 'float32', 'prosody.neg_grid_index');
    const j = neg(reduceMax(where(equal(score, best), negJ, -1e9), [-1], true)); // [B, frames, 1], float
    const jIdx = cast(j, 'int64');
    const lag = add(mul(add(j, gatherElements(offset, jIdx, 2)), PITCH_LAG_STEP), p.minLag);
    const logF0 = log(div(sr, lag));
    const voicing = maximum(minimum(gatherElements(peak, jIdx, 2), 1), 0);

    // 5. voiced frames; the unvoiced take the clip's mean voiced log-F0
    const loudest = reduceMax(r0, [1], true);
    const voiced = mul(cast(greaterOrEqual(voicing, VOICING_THRESHOLD), 'float32'), cast(greaterOrEqual(r0, mul(loudest, 10 ** (-SILENCE_DB / 10))), 'float32'));
    const nVoiced = reduceSum(voiced, [1], true);
    const voicedMean = div(reduceSum(mul(voiced, logF0), [1], true), maximum(nVoiced, 1));
    const fill = where(greater(nVoiced, 0), voicedMean, Math.log(Math.sqrt(PITCH_MIN_HZ * PITCH_MAX_HZ)));
    const logF0Filled = add(mul(voiced, logF0), mul(sub(1, voiced), fill));

    const energy = log(maximum(reduceSum(mul(s.frames, s.frames), [-1], true), FBANK_LOG_FLOOR));
    return concat([logF0Filled, voicing, energy], 2);
  });
}

/** Orthonormal DCT-II [bins, coeffs] with Kaldi's cepstral lifter folded in (column k scaled by 1 + L/2 sin(pi k / L)). */
export function mfccDctMatrix(bins: number, coeffs: number, lifter: number): Float32Array {
  const m = new Float32Array(bins * coeffs);
  for (let k = 0; k < coeffs; k++) {
    const lift = lifter > 0 ? 1 + (lifter / 2) * Math.sin((Math.PI * k) / lifter) : 1;
    const norm = k === 0 ? Math.sqrt(1 / bins) : Math.sqrt(2 / bins);
    for (let b = 0; b < bins; b++) m[b * coeffs + k] = lift * norm * Math.cos((Math.PI / bins) * (b + 0.5) * k);
  }
  return m;
}

/** [B, frames, 26]: 13 MFCCs of the fbank spectrum, then their deltas (file comment). */
export function mfccGraph(s: FbankSpectrum, opts: ResolvedFbankOptions): Value {
  const g = s.squaredDft.graph;
  const plan = fbankPlan({ ...opts, numMelBins: MFCC_MEL_BINS, cmvn: false });
  const K = plan.fftSize / 2;
  return g.scope('mfcc', () => {
    const mel = g.constant(fbankMelMatrix(plan), [2 * K, MFCC_MEL_BINS], 'float32', 'mfcc.mel');
    const logMel = log(maximum(matmul(s.squaredDft, mel), FBANK_LOG_FLOOR));
    const ceps = matmul(logMel, g.constant(mfccDctMatrix(MFCC_MEL_BINS, MFCC_COEFFS, MFCC_LIFTER), [MFCC_MEL_BINS, MFCC_COEFFS], 'float32', 'mfcc.dct'));
    return concat([ceps, deltasGraph(ceps)], 2);
  });
}

/** Kaldi's add-deltas (window 2) over axis 1 of [B, T, D]: sum_n n (x[t + n] - x[t - n]) / 10, edges replicated. */
export function deltasGraph(x: Value): Value {
  const T = squeeze(dimOf(x, 1), [0]);
  const last = sub(T, 1);
  const ts = range(constant(x, [0], [], 'int64'), T, constant(x, [1], [], 'int64'));
  const t = reshapeTo(ts, shapeOf(ts), [x.shape[1]!]); // names the dim as x's, so the result has x's shape
  const shifted = (n: number) => gather(x, maximum(minimum(add(t, n), last), 0), 1);
  let d = sub(shifted(1), shifted(-1));
  d = add(d, mul(sub(shifted(2), shifted(-2)), 2));
  return div(d, 10);
}
