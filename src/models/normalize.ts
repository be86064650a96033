/**
 * Normalisation of encoder states by group, before the mapper: `speaker` z-normalises each channel with the
 * statistics of all the clips of the same speaker, `recording` with those of the recording itself (a clip, or
 * every window of a long recording), `none` only with the training data's statistics (featureNorm). Speaker
 * normalisation removes what differs between voices (pitch range, timbre, loudness habits) and keeps what differs
 * between one speaker's utterances, which is where the emotion is on a few hundred clips from a few speakers.
 *
 * The model's graphs always apply the training-set normalisation (x - m_train) / s_train. Group normalisation is
 * an affine map in front of it that sends the group's statistics onto the training set's:
 *   x' = (x - m_group) * s_train / s_group + m_train,   so the graph sees (x - m_group) / s_group.
 * A model trained with a group mode therefore still runs on a single clip with `none` (the graph's own
 * normalisation), and ONNX exports keep one graph.
 *
 * The stat token (qpmapper.ts) needs its own speaker normalisation. Its functionals (mean, std, percentiles...)
 * follow an affine change of the frames, so normalising the frames removes a speaker's offset and scale but not
 * how the speaker's clips spread in each functional; the classical peer z-normalises each functional within each
 * speaker, and so does speaker mode here: the graph's stat-token standardisation z = (f - m_train) / s_train is
 * followed by z * scale + shift = (f - m_group) / s_group (statGroupAffine), for groups of at least
 * MIN_STAT_GROUP_CLIPS clips (fewer give no usable spread; they keep the training statistics).
 */
import { UserError } from '../util/errors.ts';
import type { ChannelStats, ClipStates } from './processor.ts';

export type NormalizeMode = 'none' | 'speaker' | 'recording';
export const NORMALIZE_MODES: readonly NormalizeMode[] = ['none', 'speaker', 'recording'];

export type { ChannelStats };

/** Smallest group std: a channel that is constant within a group (digital silence) is not blown up. */
const MIN_GROUP_STD = 1e-3;

/** Per-(layer, channel) running sums over the frames of one group of clips (float64). */
export class FrameStats {
  private readonly sum: Float64Array;
  private readonly sq: Float64Array;
  frames = 0;

  constructor(
    readonly layers: number,
    readonly dim: number,
  ) {
    this.sum = new Float64Array(layers * dim);
    this.sq = new Float64Array(layers * dim);
  }

  add(s: ClipStates): void {
    const D = this.dim;
    if (s.states.length !== this.layers || s.dim !== D) throw new Error(`FrameStats: states are ${s.states.length} x ${s.dim}, expected ${this.layers} x ${D}`);
    s.states.forEach((x, l) => {
      const o = l * D;
      for (let t = 0; t < s.frames; t++)
        for (let d = 0; d < D; d++) {
          const v = x[t * D + d];
          this.sum[o + d] += v;
          this.sq[o + d] += v * v;
        }
    });
    this.frames += s.frames;
  }

  /** Mean and std (population) of every channel; std floored at `minStd`. */
  result(minStd = MIN_GROUP_STD): ChannelStats {
    const n = Math.max(1, this.frames);
    const mean = Float32Array.from(this.sum, (v) => v / n);
    const std = Float32Array.from(this.sq, (q, k) => Math.max(minStd, Math.sqrt(Math.max(0, q / n - (this.sum[k] / n) ** 2))));
    return { mean, std };
  }
}

/** The statistics of a set of clips' states (a speaker's clips, or a recording's windows). */
export function statsOf(clips: ClipStates[], layers: number, dim: number): ChannelStats {
  const s = new FrameStats(layers, dim);
  for (const c of clips) s.add(c);
  return s.result();
}

/**
 * The affine map x -> x * scale + shift that sends `group` statistics onto `reference` (the training set's, or
 * mean 0 / std 1 when the model has no feature normalisation): see the file comment.
 */
export function groupTransform(group: ChannelStats, reference?: ChannelStats): { scale: Float32Array; shift: Float32Array } {
  const n = group.mean.length;
  const scale = new Float32Array(n);
  const shift = new Float32Array(n);
  for (let k = 0; k < n; k++) {
    const refStd = reference ? reference.std[k] : 1;
    const refMean = reference ? reference.mean[k] : 0;
    scale[k] = refStd / group.std[k];
    shift[k] = refMean - group.mean[k] * scale[k];
  }
  return { scale, shift };
}

/** New states, x * scale + shift per (layer, channel); the input is left as it is (cached states are shared). */
export function applyTransform(s: ClipStates, t: { scale: Float32Array; shift: Float32Array }): ClipStates {
  const D = s.dim;
  const states = s.states.map((x, l) => {
    const y = new Float32Array(x.length);
    const o = l * D;
    for (let i = 0; i < x.length; i++) {
      const d = o + (i % D);
      y[i] = x[i] * t.scale[d] + t.shift[d];
    }
    return y;
  });
  return { states, frames: s.frames, dim: D };
}

/** Column means and stds of rows (float64 sums; a constant column gets std 1). */
export function columnStats(rows: Float32Array[]): ChannelStats {
  const d = rows[0]!.length;
  const sum = new Float64Array(d);
  const sq = new Float64Array(d);
  for (const r of rows) for (let j = 0; j < d; j++) (sum[j] += r[j]!), (sq[j] += r[j]! * r[j]!);
  const mean = Float32Array.from(sum, (v) => v / rows.length);
  const std = Float32Array.from(sq, (q, j) => {
    const v = q / rows.length - mean[j]! ** 2;
    return v > 1e-12 ? Math.sqrt(v) : 1;
  });
  return { mean, std };
}

/** Fewest clips whose functionals give a group's own standardisation of the stat token. */
export const MIN_STAT_GROUP_CLIPS = 8;

/** A group's statistics of the stat token's inputs (one row of functionals per clip); undefined for small groups. */
export function functionalGroupStats(rows: Float32Array[]): ChannelStats | undefined {
  return rows.length >= MIN_STAT_GROUP_CLIPS ? columnStats(rows) : undefined;
}

/** A group's std is floored at this fraction of the training set's: a functional nearly constant within one group is not blown up. */
const MIN_STAT_STD_RATIO = 0.05;

/**
 * The map z -> z * scale + shift on the training-standardised stat inputs z = (f - m_ref) / s_ref that gives
 * (f - m_group) / s_group: scale = s_ref / s_group, shift = (m_ref - m_group) / s_group.
 */
export function statGroupAffine(group: ChannelStats, reference: ChannelStats): { scale: Float32Array; shift: Float32Array } {
  const n = reference.mean.length;
  if (group.mean.length !== n) throw new Error(`statGroupAffine: ${group.mean.length} group statistics, ${n} reference`);
  const scale = new Float32Array(n);
  const shift = new Float32Array(n);
  for (let k = 0; k < n; k++) {
    const s = Math.max(group.std[k]!, MIN_STAT_STD_RATIO * reference.std[k]!);
    scale[k] = reference.std[k]! / s;
    shift[k] = (reference.mean[k]! - group.mean[k]!) / s;
  }
  return { scale, shift };
}

export function isNormalizeMode(v: unknown): v is NormalizeMode {
  return typeof v === 'string' && (NORMALIZE_MODES as readonly string[]).includes(v);
}

/** A --normalize value (undefined stays undefined: the model's stored setting applies). */
export function normalizeFlag(v: string | undefined): NormalizeMode | undefined {
  if (v === undefined) return undefined;
  if (!isNormalizeMode(v)) throw new UserError(`--normalize must be ${NORMALIZE_MODES.join(', ')}, got "${v}"`);
  return v;
}
