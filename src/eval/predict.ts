/**
 * Prediction on audio of any length. A clip up to `wholeMaxSeconds` is scored as one segment (how models are
 * evaluated); longer audio is cut into windows (default 3 s, the training crop length, with a 1.5 s hop) or
 * energy-based speech segments, each scored on its own, giving a timeline {start, end, label, probabilities}.
 * The clip's label and probabilities are the duration-weighted mean over the segments.
 */
import { slidingWindows } from '../audio/crop.ts';
import { speechSegments } from '../audio/vad.ts';
import type { EmoSLLM } from '../models/emosllm.ts';
import { UserError } from '../util/errors.ts';

export type SegmentMode = 'auto' | 'whole' | 'window' | 'vad';

export interface PredictOptions {
  segment?: SegmentMode;
  /** window length and hop, seconds (default 3 and 1.5) */
  windowSeconds?: number;
  hopSeconds?: number;
  /** 'auto': clips up to this long are one segment (default 10 s) */
  wholeMaxSeconds?: number;
  transcript?: string;
  labels?: string[];
  /** checked before every segment: an aborted prediction stops there (a server's timeouts) */
  signal?: AbortSignal;
}

export interface Segment {
  start: number;
  end: number;
  label: string;
  probabilities: Record<string, number>;
}

export interface ClipPrediction {
  label: string;
  probabilities: Record<string, number>;
  /** audio duration */
  seconds: number;
  segments: Segment[];
}

const SR = 16000;

/** The [start, end) sample ranges to score. */
export function segmentRanges(x: Float32Array, o: PredictOptions = {}): Array<[number, number]> {
  const mode = o.segment ?? 'auto';
  const win = o.windowSeconds ?? 3;
  const hop = o.hopSeconds ?? win / 2;
  if (!(win > 0) || !(hop > 0)) throw new UserError(`window (${win} s) and hop (${hop} s) must be > 0`);
  if (hop > win) throw new UserError(`the hop (${hop} s) must not be longer than the window (${win} s)`);
  const seconds = x.length / SR;
  if (mode === 'whole' || (mode === 'auto' && seconds <= (o.wholeMaxSeconds ?? 10))) return [[0, x.length]];
  const windows = (from: number, to: number) => slidingWindows(x.subarray(from, to), { windowS: win, hopS: hop, sampleRate: SR }).map((w) => [from + w.start, from + w.end] as [number, number]);
  if (mode === 'vad') {
    const segs = speechSegments(x, { sampleRate: SR });
    const out: Array<[number, number]> = [];
    for (const s of segs) {
      const a = Math.round(s.startS * SR);
      const b = Math.min(x.length, Math.round(s.endS * SR));
      // a speech run longer than a window is split into windows, so every scored piece looks like training data
      if (b - a > win * SR) out.push(...windows(a, b));
      else if (b > a) out.push([a, b]);
    }
    return out;
  }
  return windows(0, x.length);
}

/** Label, probabilities and timeline for 16 kHz mono samples. */
export async function predictSamples(model: EmoSLLM, samples: Float32Array, o: PredictOptions = {}): Promise<ClipPrediction> {
  const labels = o.labels ?? model.labels;
  const ranges = segmentRanges(samples, o);
  const segments: Segment[] = [];
  const mean = new Float64Array(labels.length);
  let total = 0;
  for (const [a, b] of ranges) {
    o.signal?.throwIfAborted();
    const piece = samples.subarray(a, b);
    const [states] = await model.encode([piece]);
    const r = await model.scoreStates(states, { transcript: o.transcript, labels });
    const best = r.probabilities.reduce((bi, p, i) => (p > r.probabilities[bi] ? i : bi), 0);
    segments.push({ start: a / SR, end: b / SR, label: labels[best], probabilities: Object.fromEntries(labels.map((l, i) => [l, r.probabilities[i]])) });
    const w = (b - a) / SR;
    r.probabilities.forEach((p, i) => (mean[i] += w * p));
    total += w;
  }
  const probs = total > 0 ? Array.from(mean, (p) => p / total) : labels.map(() => 1 / labels.length);
  const best = probs.reduce((bi, p, i) => (p > probs[bi] ? i : bi), 0);
  return {
    label: segments.length ? labels[best] : 'none',
    probabilities: Object.fromEntries(labels.map((l, i) => [l, probs[i]])),
    seconds: samples.length / SR,
    segments,
  };
}
