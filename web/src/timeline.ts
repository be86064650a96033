/**
 * Windowing and aggregation for a clip of any length: split into windows of window_seconds with hop
 * hop_seconds (the last window may be shorter), run each through the model, and average the window
 * probabilities. Pure (no DOM, no Node APIs, no ONNX Runtime): the page runs it on onnxruntime-web and the
 * Node tests run the same code on onnxruntime-node, so both sides window and aggregate identically.
 *
 * The windows are the project's own sliding windows (src/audio/crop.ts, `last: 'shorter'`), the ones the
 * rest of emosllm uses for long clips.
 */
import { slidingWindows } from '../../src/audio/crop.ts';
import { type ExportManifest, MIN_INPUT_SECONDS } from './manifest.ts';

/** One model call: samples in, one probability and one score per label out. */
export type InferFn = (samples: Float32Array) => Promise<{ probabilities: ArrayLike<number>; scores: ArrayLike<number> }>;

export interface WindowSpan {
  /** First sample (inclusive) and end (exclusive) in the clip. */
  start: number;
  end: number;
}

export interface Segment {
  index: number;
  /** Seconds from the start of the clip. */
  start: number;
  end: number;
  startSample: number;
  endSample: number;
  /** The most probable label of this window. */
  label: string;
  probabilities: number[];
  scores: number[];
}

export interface TimelineResult {
  labels: string[];
  sampleRate: number;
  durationSeconds: number;
  segments: Segment[];
  /** Mean of the window probabilities, one per label. */
  aggregate: number[];
  /** argmax of `aggregate`. */
  label: string;
}

export const minInputSamples = (sampleRate: number): number => Math.ceil(MIN_INPUT_SECONDS * sampleRate - 1e-9);

/**
 * The windows for a clip of `samples` length. Every sample is covered; a clip shorter than one window is one
 * window. A last window below the model's minimum input (only possible when hop is close to the window) is
 * moved back so that it ends at the clip end with the minimum length.
 */
export function windowSpans(samples: Float32Array, m: Pick<ExportManifest, 'sample_rate' | 'window_seconds' | 'hop_seconds'>): WindowSpan[] {
  const min = minInputSamples(m.sample_rate);
  if (samples.length < min) {
    const ms = ((samples.length / m.sample_rate) * 1000).toFixed(1);
    throw new Error(`the audio is ${ms} ms long; the model needs at least ${MIN_INPUT_SECONDS * 1000} ms`);
  }
  const wins = slidingWindows(samples, { windowS: m.window_seconds, hopS: m.hop_seconds, sampleRate: m.sample_rate, last: 'shorter' });
  return wins.map(({ start, end }) => (end - start >= min ? { start, end } : { start: Math.max(0, end - min), end }));
}

export function argmax(xs: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i]! > xs[best]!) best = i;
  return best;
}

/** Element-wise mean of equally long rows (accumulated in float64). */
export function meanRows(rows: ArrayLike<number>[]): number[] {
  if (rows.length === 0) throw new Error('meanRows: no rows');
  const c = rows[0]!.length;
  const out = new Array<number>(c).fill(0);
  for (const r of rows) {
    if (r.length !== c) throw new Error(`meanRows: rows of length ${c} and ${r.length}`);
    for (let i = 0; i < c; i++) out[i]! += r[i]!;
  }
  return out.map((v) => v / rows.length);
}

export interface TimelineOptions {
  /** Called before each window runs. */
  onProgress?: (done: number, total: number) => void;
  /** Stops between windows when aborted. */
  signal?: AbortSignal;
}

/** Runs every window of `samples` through `infer` and aggregates. */
export async function runTimeline(
  samples: Float32Array,
  m: Pick<ExportManifest, 'labels' | 'sample_rate' | 'window_seconds' | 'hop_seconds'>,
  infer: InferFn,
  opts: TimelineOptions = {},
): Promise<TimelineResult> {
  const spans = windowSpans(samples, m);
  const C = m.labels.length;
  const segments: Segment[] = [];
  for (const [index, { start, end }] of spans.entries()) {
    opts.signal?.throwIfAborted();
    opts.onProgress?.(index, spans.length);
    const out = await infer(samples.subarray(start, end));
    const probabilities = Array.from(out.probabilities, Number);
    const scores = Array.from(out.scores, Number);
    if (probabilities.length !== C || scores.length !== C) {
      throw new Error(`the model gave ${probabilities.length} probabilities and ${scores.length} scores, but the manifest has ${C} labels`);
    }
    if (!probabilities.every(Number.isFinite)) throw new Error(`window ${index + 1}: the model returned non-finite probabilities`);
    segments.push({
      index,
      start: start / m.sample_rate,
      end: end / m.sample_rate,
      startSample: start,
      endSample: end,
      label: m.labels[argmax(probabilities)]!,
      probabilities,
      scores,
    });
  }
  opts.onProgress?.(spans.length, spans.length);
  const aggregate = meanRows(segments.map((s) => s.probabilities));
  return {
    labels: [...m.labels],
    sampleRate: m.sample_rate,
    durationSeconds: samples.length / m.sample_rate,
    segments,
    aggregate,
    label: m.labels[argmax(aggregate)]!,
  };
}
