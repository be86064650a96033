/**
 * Segmenting and aggregating audio of any length, the one implementation used by `emosllm predict`, the
 * server and the browser page (pure: no Node APIs, no ONNX Runtime; the caller passes the scoring function).
 *
 * A clip up to `wholeMaxSeconds` (10 s) is scored as one segment (how models are evaluated); longer audio is
 * cut into windows (the training crop length, 3 s by default, with a hop of half the window; the last window
 * stops at the clip end) or energy-based speech segments, each scored on its own, giving a timeline. The
 * clip's probabilities are the duration-weighted mean over the segments, its label their argmax.
 */
import { UserError } from '../util/errors.ts';
import { slidingWindows } from './crop.ts';
import { speechSegments } from './vad.ts';

export type SegmentMode = 'auto' | 'whole' | 'window' | 'vad';
export const SEGMENT_MODES: readonly SegmentMode[] = ['auto', 'whole', 'window', 'vad'];

export interface SegmentOptions {
  /** default 'auto': whole up to `wholeMaxSeconds`, windows beyond */
  segment?: SegmentMode;
  /** window length, seconds (default 3, the training crop) */
  windowSeconds?: number;
  /** window hop, seconds (default half the window) */
  hopSeconds?: number;
  /** 'auto': clips up to this long are one segment (default 10 s) */
  wholeMaxSeconds?: number;
}

export const SEGMENT_DEFAULTS = { segment: 'auto', windowSeconds: 3, wholeMaxSeconds: 10 } as const;

/** The shortest input a model accepts: one 25 ms analysis frame (the least a segment of a longer clip may hold). */
export const MIN_INPUT_SECONDS = 0.025;

export const minInputSamples = (sampleRate: number): number => Math.ceil(MIN_INPUT_SECONDS * sampleRate - 1e-9);

/**
 * The shortest clip recognised: a quarter second holds barely a syllable, too little to carry an emotion, yet
 * the model gives even a 1-sample clip a confident label.
 */
export const MIN_CLIP_SECONDS = 0.25;

/** A clip below MIN_CLIP_SECONDS, with its own status: predict's "too_short" rows, the server's 422 too_short. */
export class ClipTooShortError extends UserError {
  readonly code = 'too_short';
  constructor(
    readonly seconds: number,
    where?: string,
  ) {
    super(`too short: the audio is ${(seconds * 1000).toFixed(1)} ms long, the minimum is ${MIN_CLIP_SECONDS * 1000} ms`, where);
    this.name = 'ClipTooShortError';
  }
}

/**
 * The one minimum-duration check, run on every clip before it is scored: by segmentRanges (predict, the server,
 * the browser page) and by the feature preparation of training and evaluation.
 */
export function checkClipDuration(samples: number, sampleRate: number, where?: string): void {
  if (samples < Math.ceil(MIN_CLIP_SECONDS * sampleRate - 1e-9)) throw new ClipTooShortError(samples / sampleRate, where);
}

/** The [start, end) sample ranges to score, in order. Throws ClipTooShortError for a clip below MIN_CLIP_SECONDS. */
export function segmentRanges(samples: Float32Array, sampleRate: number, o: SegmentOptions = {}): Array<[number, number]> {
  const mode = o.segment ?? SEGMENT_DEFAULTS.segment;
  if (!SEGMENT_MODES.includes(mode)) throw new UserError(`segment must be one of ${SEGMENT_MODES.join(', ')}, got ${JSON.stringify(mode)}`);
  const win = o.windowSeconds ?? SEGMENT_DEFAULTS.windowSeconds;
  const hop = o.hopSeconds ?? win / 2;
  if (!(win > 0) || !(hop > 0)) throw new UserError(`window (${win} s) and hop (${hop} s) must be > 0`);
  if (hop > win) throw new UserError(`the hop (${hop} s) must not be longer than the window (${win} s)`);
  checkClipDuration(samples.length, sampleRate);
  const min = minInputSamples(sampleRate);
  const seconds = samples.length / sampleRate;
  if (mode === 'whole' || (mode === 'auto' && seconds <= (o.wholeMaxSeconds ?? SEGMENT_DEFAULTS.wholeMaxSeconds))) return [[0, samples.length]];
  // A last window below the minimum input (only when the hop is close to the window) is moved back to end at the clip end.
  const windows = (from: number, to: number) =>
    slidingWindows(samples.subarray(from, to), { windowS: win, hopS: hop, sampleRate, last: 'shorter' }).map(
      (w): [number, number] => (w.end - w.start >= min ? [from + w.start, from + w.end] : [Math.max(0, from + w.end - min), from + w.end]),
    );
  if (mode !== 'vad') return windows(0, samples.length);
  const out: Array<[number, number]> = [];
  for (const s of speechSegments(samples, { sampleRate })) {
    const a = Math.round(s.startS * sampleRate);
    const b = Math.min(samples.length, Math.round(s.endS * sampleRate));
    // a speech run longer than a window is split into windows, so every scored piece looks like training data
    if (b - a > win * sampleRate) out.push(...windows(a, b));
    else if (b - a >= min) out.push([a, b]);
  }
  return out;
}

/** One scoring call: samples in, one probability (and optionally one score) per label out. */
export type ScoreFn = (samples: Float32Array) => Promise<{ probabilities: ArrayLike<number>; scores?: ArrayLike<number> }>;

export interface ScoredSegment {
  /** seconds from the start of the clip */
  start: number;
  end: number;
  startSample: number;
  endSample: number;
  /** the most probable label of this segment */
  label: string;
  probabilities: number[];
  scores?: number[];
}

export interface Timeline {
  labels: string[];
  sampleRate: number;
  seconds: number;
  segments: ScoredSegment[];
  /** duration-weighted mean of the segment probabilities, one per label (uniform when nothing was scored) */
  probabilities: number[];
  /** argmax of `probabilities`, or 'none' when no segment was scored (VAD found no speech) */
  label: string;
}

export function argmax(xs: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i]! > xs[best]!) best = i;
  return best;
}

/** The duration-weighted mean of the segments' probabilities (float64 accumulation) and its label. */
export function aggregate(segments: Pick<ScoredSegment, 'startSample' | 'endSample' | 'probabilities'>[], labels: string[]): { probabilities: number[]; label: string } {
  if (segments.length === 0) return { probabilities: labels.map(() => 1 / labels.length), label: 'none' };
  const mean = new Float64Array(labels.length);
  let total = 0;
  for (const s of segments) {
    const w = s.endSample - s.startSample;
    s.probabilities.forEach((p, i) => (mean[i] += w * p));
    total += w;
  }
  const probabilities = Array.from(mean, (p) => p / total);
  return { probabilities, label: labels[argmax(probabilities)]! };
}

export interface ScoreOptions extends SegmentOptions {
  labels: string[];
  sampleRate: number;
  /** checked before every segment: an aborted run stops there (a server's timeouts, a page's new input) */
  signal?: AbortSignal;
  /** called before each segment and once at the end */
  onProgress?: (done: number, total: number) => void;
}

/** Segments `samples`, scores every segment with `score` and aggregates. */
export async function scoreTimeline(samples: Float32Array, o: ScoreOptions, score: ScoreFn): Promise<Timeline> {
  const ranges = segmentRanges(samples, o.sampleRate, o);
  const C = o.labels.length;
  const segments: ScoredSegment[] = [];
  for (const [index, [a, b]] of ranges.entries()) {
    o.signal?.throwIfAborted();
    o.onProgress?.(index, ranges.length);
    const r = await score(samples.subarray(a, b));
    const probabilities = Array.from(r.probabilities, Number);
    const scores = r.scores && Array.from(r.scores, Number);
    if (probabilities.length !== C || (scores && scores.length !== C)) {
      throw new Error(`the model gave ${probabilities.length} probabilities${scores ? ` and ${scores.length} scores` : ''} for ${C} labels`);
    }
    if (!probabilities.every(Number.isFinite)) throw new Error(`segment ${index + 1}: the model returned non-finite probabilities`);
    segments.push({
      start: a / o.sampleRate,
      end: b / o.sampleRate,
      startSample: a,
      endSample: b,
      label: o.labels[argmax(probabilities)]!,
      probabilities,
      ...(scores ? { scores } : {}),
    });
  }
  o.onProgress?.(ranges.length, ranges.length);
  return { labels: [...o.labels], sampleRate: o.sampleRate, seconds: samples.length / o.sampleRate, segments, ...aggregate(segments, o.labels) };
}
