/**
 * Prediction on audio of any length with a trained model: the shared segmenting and aggregation
 * (src/audio/segments.ts, also used by the server and the browser page) with the model's encoder and label
 * scoring, giving the clip's label, probabilities and timeline {start, end, label, probabilities}.
 */
import { type SegmentOptions, scoreTimeline } from '../audio/segments.ts';
import type { EmoSLLM } from '../models/emosllm.ts';

export interface PredictOptions extends SegmentOptions {
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

/** Label, probabilities and timeline for 16 kHz mono samples; windows default to the model's training crop. */
export async function predictSamples(model: EmoSLLM, samples: Float32Array, o: PredictOptions = {}): Promise<ClipPrediction> {
  const labels = o.labels ?? model.labels;
  const byLabel = (ps: number[]) => Object.fromEntries(labels.map((l, i) => [l, ps[i]!]));
  const t = await scoreTimeline(samples, { ...o, windowSeconds: o.windowSeconds ?? model.spec.audio.trainCropSeconds, labels, sampleRate: SR }, async (piece) => {
    const [states] = await model.encode([piece]);
    return model.scoreStates(states, { transcript: o.transcript, labels });
  });
  return {
    label: t.label,
    probabilities: byLabel(t.probabilities),
    seconds: t.seconds,
    segments: t.segments.map((s) => ({ start: s.start, end: s.end, label: s.label, probabilities: byLabel(s.probabilities) })),
  };
}
