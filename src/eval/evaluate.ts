/**
 * Evaluation of a model on labelled clips: every clip scored whole (up to the mapper's t_max; the centre
 * beyond), predictions = argmax over the label set, then WA / UA / macro-F1, per-class figures and the
 * confusion matrix (metrics.ts states the conventions).
 */
import type { EmoSLLM } from '../models/emosllm.ts';
import type { FeatureCache } from '../features/cache.ts';
import { type ClipRef, statesOf } from '../features/clips.ts';
import type { StatesTransform } from '../features/normalize.ts';
import { type Metrics, computeMetrics } from './metrics.ts';

export interface Prediction {
  id: string;
  path: string;
  speaker: string;
  truth: string;
  label: string;
  probabilities: Record<string, number>;
}

export interface EvalResult {
  metrics: Metrics;
  predictions: Prediction[];
  /** mean -log p(true answer | audio, prompt) over the clips (summed over the answer's tokens) */
  loss: number;
}

const argmax = (xs: number[]) => xs.reduce((b, x, i) => (x > xs[b] ? i : b), 0);

/** Scores clips whose labels are in the model's label set (callers drop the others first). */
export async function evaluateClips(
  model: EmoSLLM,
  cache: FeatureCache,
  clips: ClipRef[],
  opts: { onProgress?: (done: number, total: number) => void; batch?: number; /** group normalisation (features/normalize.ts) */ transform?: StatesTransform } = {},
): Promise<EvalResult> {
  const labels = model.labels;
  const predictions: Prediction[] = [];
  let loss = 0;
  const batch = opts.batch ?? 16;
  for (let i = 0; i < clips.length; i += batch) {
    const part = clips.slice(i, i + batch);
    const states = await statesOf(cache, part);
    for (let k = 0; k < part.length; k++) {
      const { item } = part[k];
      const st = opts.transform ? opts.transform(part[k], states[k]) : states[k];
      const r = await model.scoreStates(st, { transcript: item.transcript });
      const t = labels.indexOf(item.label);
      if (t < 0) throw new Error(`evaluateClips: label "${item.label}" of ${item.id} is not in the model's label set`);
      loss -= r.scores[t];
      predictions.push({
        id: item.id,
        path: item.path,
        speaker: item.speaker,
        truth: item.label,
        label: labels[argmax(r.probabilities)],
        probabilities: Object.fromEntries(labels.map((l, j) => [l, r.probabilities[j]])),
      });
    }
    opts.onProgress?.(Math.min(i + batch, clips.length), clips.length);
  }
  const metrics = computeMetrics(
    labels,
    predictions.map((p) => p.truth),
    predictions.map((p) => p.label),
  );
  return { metrics, predictions, loss: clips.length ? loss / clips.length : NaN };
}
