/**
 * The Kaldi-compatible log-mel filterbank (settings in fbank.ts) as an engine graph: the one implementation
 * training, predict and an exported ONNX model (onnxruntime-node, onnxruntime-web) run from raw 16 kHz audio.
 *
 * Same numerics as the JS oracle the tests compare with (test/oracles/fbank.ts, FbankEncoder.encodeOne), in
 * float32 and with plain ONNX ops only (opset 17):
 *   1. scale by inputScale, zero-pad the end by one frame length, so a clip shorter than one frame still
 *      yields one (zero-padded) frame, as in FbankEncoder.encodeOne; longer clips never read the padding
 *   2. framing (snip_edges): frame starts = Range(0, max(S - L + 1, 1), shift), i.e. 1 + floor((S - L) / shift)
 *      frames (1 when S < L); the [frames, L] sample indices feed one Gather
 *   3. per-frame DC removal (ReduceMean + Sub, kept explicit: see below)
 *   4. pre-emphasis, window and the real DFT of the zero-padded frame folded into one constant [L, 2K]
 *      matrix (K = fftSize / 2 bins, cos columns then sin columns): one MatMul per clip
 *   5. power spectrum and mel banks together: squaring the [.., 2K] DFT output and multiplying by the mel
 *      matrix stacked twice ([2K, bins]) sums re^2 + im^2 inside the mel MatMul
 *   6. log(max(e, FBANK_LOG_FLOOR))
 *   7. optional per-utterance CMVN over the frame axis, with population variance and CMVN_VAR_EPS
 *
 * Every table (window, mel weights, frame sizes) comes from the same FbankPlan the JS encoder uses.
 * The graph is forward-only and needs no gradient (a frozen feature extractor); it has no trainable inputs.
 * Unlike the JS code, non-finite samples are not rejected here: they give NaN features.
 *
 * Precision (fbank-graph.test.ts; max |graph - JS| over all 373 emodb-dev clips): 8.6e-4 with CMVN, 5e-3
 * without, typically 1e-5 .. 3e-4 per clip. The error is float32 round-off of the 400-term DFT sums, so it is
 * absolute in energy: it only shows in log-energies of spectral near-nulls, like Kaldi's own float32 code
 * against a float64 reference. Signals with more than ~100 dB of in-frame dynamic range (exact synthetic
 * tones, not 16-bit recordings) lose their quietest bins, and CMVN amplifies any difference by up to
 * 1 / sqrt(CMVN_VAR_EPS) = 1000 in bins that barely vary over the clip (stationary tones, 2-frame clips).
 * Two alternatives measured worse: explicit pre-emphasis before the DFT (10x the error), and splitting the
 * DFT sum into 20 blocks of 20 (3x smaller error, 3x the run time; other block counts did not help).
 */
import type { Graph, Value } from '../graph/ir.ts';
import {
  add,
  constant,
  div,
  gather,
  int64s,
  log,
  matmul,
  maximum,
  mul,
  pad,
  range,
  reduceMean,
  reshapeTo,
  shapeOf,
  slice,
  sqrt,
  sub,
  unsqueeze,
} from '../graph/ops.ts';
import { CMVN_VAR_EPS, FBANK_LOG_FLOOR, type FbankPlan, type ResolvedFbankOptions, fbankPlan } from './fbank.ts';

/** Name of the frame-count dimension of the output (an ONNX dim_param). */
export const FBANK_FRAMES_DIM = 'frames';

/**
 * Pre-emphasis, window and real DFT as one matrix A [L, 2K], float64 then rounded to float32:
 * frame (after DC removal) x A = [Re X_0 .. Re X_{K-1}, Im X_0 .. Im X_{K-1}] (Im up to sign, which the
 * power spectrum does not see). With pre-emphasis y_n = x_n - p x_{n-1} (n > 0), y_0 = (1 - p) x_0, window w
 * and C_nk = cos(2 pi k n / N) (S_nk = sin likewise), Re X_k = sum_n w_n y_n C_nk, so the row of sample j is
 *   A_jk = c_j w_j C_jk - p w_{j+1} C_{j+1,k}   (c_0 = 1 - p, c_j = 1 otherwise; second term for j + 1 < L).
 * Folding is exact linear algebra; float32 rounding happens once per entry of A and in the MatMul sums.
 */
export function fbankDftMatrix(plan: FbankPlan): Float32Array {
  const L = plan.frameLength;
  const N = plan.fftSize;
  const K = N / 2;
  const p = plan.opts.preemphasis;
  const w = plan.window;
  // angles reduced mod N first so large k * i keep full precision
  const cosT = Float64Array.from({ length: N }, (_, t) => Math.cos((2 * Math.PI * t) / N));
  const sinT = Float64Array.from({ length: N }, (_, t) => Math.sin((2 * Math.PI * t) / N));
  const A = new Float32Array(L * 2 * K);
  for (let j = 0; j < L; j++) {
    const a = (j === 0 ? 1 - p : 1) * w[j]!;
    const b = j + 1 < L ? -p * w[j + 1]! : 0;
    for (let k = 0; k < K; k++) {
      const t0 = (k * j) % N;
      const t1 = (k * (j + 1)) % N;
      A[j * 2 * K + k] = a * cosT[t0]! + b * cosT[t1]!;
      A[j * 2 * K + K + k] = a * sinT[t0]! + b * sinT[t1]!;
    }
  }
  return A;
}

/**
 * The plan's sparse mel banks as a dense [2K, bins] matrix, stacked twice (rows k and K + k both carry the
 * weight of FFT bin k), so that (DFT output)^2 x M = mel energies of re^2 + im^2.
 */
export function fbankMelMatrix(plan: FbankPlan): Float32Array {
  const K = plan.fftSize / 2;
  const bins = plan.opts.numMelBins;
  const M = new Float32Array(2 * K * bins);
  for (let b = 0; b < bins; b++) {
    const w = plan.melWeights[b]!;
    const s0 = plan.melStart[b]!;
    for (let j = 0; j < w.length; j++) {
      M[(s0 + j) * bins + b] = w[j]!;
      M[(K + s0 + j) * bins + b] = w[j]!;
    }
  }
  return M;
}

/**
 * Frame start sample indices 0, shift, 2 shift, ... < max(S - L + 1, 1) of `samples` [B, S] (snip_edges, at least
 * one frame), int64 [frames] with the frame dim named FBANK_FRAMES_DIM. Every frame-level feature graph
 * (fbank, frame-features-graph.ts) frames with this, so they agree on the frame count.
 */
export function frameStarts(samples: Value, frameLength: number, frameShift: number): Value {
  const S = gather(shapeOf(samples), constant(samples, [1], [], 'int64'), 0);
  const limit = maximum(sub(S, frameLength - 1), 1);
  const zero = constant(samples, [0], [], 'int64');
  const step = constant(samples, [frameShift], [], 'int64');
  const starts = range(zero, limit, step);
  return reshapeTo(starts, shapeOf(starts), [FBANK_FRAMES_DIM]);
}

/** What the log-mel is computed from, for graphs that derive more features from the same frames (MFCC, energy). */
export interface FbankSpectrum {
  plan: FbankPlan;
  /** the scaled, DC-removed (if the options say so) frames [B, frames, L], before pre-emphasis and window */
  frames: Value;
  /** squared DFT output [B, frames, 2K] (re^2 then im^2; a stacked [2K, n] matrix sums them into a power) */
  squaredDft: Value;
}

/** Steps 1-5 up to the squared DFT (see the file comment). */
export function buildFbankSpectrum(g: Graph, samples: Value, opts: ResolvedFbankOptions): FbankSpectrum {
  if (samples.graph !== g) throw new Error('buildFbankGraph: samples belong to another graph');
  if (samples.dtype !== 'float32' || samples.rank !== 2) throw new Error(`buildFbankGraph: samples must be float32 [B, S], got ${samples}`);
  const plan = fbankPlan(opts);
  const L = plan.frameLength;
  const K = plan.fftSize / 2;
  return g.scope('fbank', () => {
    // 1. scale (exact for the default power of two) and pad by one frame (only short clips read the zeros)
    const x = opts.inputScale === 1 ? samples : mul(samples, opts.inputScale);
    const xp = pad(x, [0, 0, 0, L]);

    // 2. [frames, L] sample indices
    const offsets = int64s(samples, Array.from({ length: L }, (_, i) => i));
    const idx = add(unsqueeze(frameStarts(samples, L, plan.frameShift), [1]), unsqueeze(offsets, [0]));
    let frames = gather(xp, idx, 1); // [B, frames, L]

    // 3. DC removal stays a ReduceMean + Sub instead of being folded into the DFT matrix: that way a frame of
    //    constant samples becomes exact zeros (log floor, as in JS) instead of float32 round-off of the DC.
    if (opts.removeDcOffset) frames = sub(frames, reduceMean(frames, [-1], true));

    // 4. pre-emphasis + window + DFT in one MatMul
    const dft = g.constant(fbankDftMatrix(plan), [L, 2 * K], 'float32', 'fbank.dft');
    const spec = matmul(frames, dft); // [B, frames, 2K]
    return { plan, frames, squaredDft: mul(spec, spec) };
  });
}

/** log(max(mel energies, FBANK_LOG_FLOOR)) [B, frames, bins] of a spectrum (steps 5-6). */
export function logMelGraph(s: FbankSpectrum): Value {
  const g = s.squaredDft.graph;
  const K = s.plan.fftSize / 2;
  const bins = s.plan.opts.numMelBins;
  return g.scope('fbank', () => {
    const mel = g.constant(fbankMelMatrix(s.plan), [2 * K, bins], 'float32', 'fbank.mel');
    // natural log with Kaldi's floor (digital silence gives exactly log(FBANK_LOG_FLOOR), as in JS)
    return log(maximum(matmul(s.squaredDft, mel), FBANK_LOG_FLOOR));
  });
}

/**
 * Builds the filterbank of `samples` (float32 [B, S], B usually 1, S symbolic; every row is one clip of
 * length S) into `g`. Returns float32 [B, frames, numMelBins], frames = max(1, 1 + floor((S - L) / shift)),
 * equal to the oracle's FbankEncoder.encodeOne (test/oracles/fbank.ts, same options) up to float32 rounding.
 */
export function buildFbankGraph(g: Graph, samples: Value, opts: ResolvedFbankOptions): Value {
  const feats = logMelGraph(buildFbankSpectrum(g, samples, opts));
  return opts.cmvn ? g.scope('fbank', () => cmvn(feats)) : feats;
}

/**
 * Per-utterance CMVN over axis 1 of [B, frames, bins]: (x - mean) / sqrt(var + CMVN_VAR_EPS), population
 * variance. The first frame is subtracted first (a shift that changes neither the centred values nor the
 * variance): float32 means then work on small numbers, and a constant bin (e.g. all log floor) gives exactly
 * 0, like the float64 JS code, instead of round-off / 1e-3.
 */
export function cmvn(x: Value): Value {
  const shifted = sub(x, slice(x, [0], [1], [1]));
  const centred = sub(shifted, reduceMean(shifted, [1], true));
  const variance = reduceMean(mul(centred, centred), [1], true);
  return div(centred, sqrt(add(variance, CMVN_VAR_EPS)));
}
