/**
 * Classification metrics for speech emotion recognition.
 *
 * Conventions (stated once, used everywhere):
 * - WA (weighted accuracy) = plain accuracy = correct / n.
 * - UA (unweighted accuracy) = mean per-class recall over the classes PRESENT IN TRUTH (support > 0).
 *   A class that is in the label set but has no test sample does not pull UA towards 0.
 *   This equals sklearn's `balanced_accuracy_score`.
 * - macro-F1 = mean per-class F1 over the classes present in truth OR in predictions. This is sklearn's
 *   `f1_score(truth, pred, average='macro', labels=L, zero_division=0)` with L = the label set restricted to
 *   classes that occur in truth or pred (sklearn's default when `labels` is not passed is exactly that union).
 *   A class in neither truth nor predictions has no defined F1 and is skipped; a class that is predicted but
 *   absent from truth counts with F1 = 0 (it only produced false positives).
 * - Per-class precision/recall/F1 use zero_division = 0: precision of a never-predicted class is 0, recall of a
 *   class without support is 0, F1 = 2TP / (2TP + FP + FN) or 0 when that denominator is 0.
 * - `per_class` and `confusion` cover every label in `labels` (in that order), present or not.
 *   confusion[i][j] = number of samples whose truth is labels[i] and prediction is labels[j].
 */
import { UserError } from '../util/errors.ts';

export interface ClassMetrics {
  precision: number;
  recall: number;
  f1: number;
  support: number;
}

export interface Metrics {
  labels: string[];
  n: number;
  /** Accuracy. */
  wa: number;
  /** Unweighted accuracy: mean recall over classes present in truth. */
  ua: number;
  /** Mean F1 over classes present in truth or predictions (sklearn macro, zero_division=0). */
  macro_f1: number;
  per_class: Record<string, ClassMetrics>;
  /** Rows = truth, columns = prediction, both in `labels` order. */
  confusion: number[][];
}

export interface HeadlineMetrics {
  wa: number;
  ua: number;
  macro_f1: number;
}

export interface FoldMetrics {
  name: string;
  metrics: Metrics;
}

export interface FoldSummary {
  /** Mean of the per-fold values. */
  mean: HeadlineMetrics;
  /** Population standard deviation (ddof = 0, numpy's default) of the per-fold values; 0 for one fold. */
  std: HeadlineMetrics;
  /** Metrics over all folds' predictions concatenated (i.e. from the summed confusion matrices). */
  pooled: Metrics;
  folds: FoldMetrics[];
}

function checkLabels(labels: readonly string[]): Map<string, number> {
  if (!Array.isArray(labels) || labels.length === 0) throw new UserError('the label set is empty', 'metrics');
  const index = new Map<string, number>();
  labels.forEach((l, i) => {
    if (typeof l !== 'string') throw new UserError(`label ${i} is not a string`, 'metrics');
    if (index.has(l)) throw new UserError(`duplicate label ${JSON.stringify(l)}`, 'metrics');
    index.set(l, i);
  });
  return index;
}

/** Confusion matrix (rows = truth, cols = pred) in `labels` order. Unknown labels or length mismatch -> UserError. */
export function confusionMatrix(labels: readonly string[], truth: readonly string[], pred: readonly string[]): number[][] {
  const index = checkLabels(labels);
  if (truth.length !== pred.length) {
    throw new UserError(`truth has ${truth.length} items but predictions have ${pred.length}`, 'metrics');
  }
  const k = labels.length;
  const cm = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  for (let s = 0; s < truth.length; s++) {
    const t = index.get(truth[s]!);
    if (t === undefined) throw new UserError(`unknown label ${JSON.stringify(truth[s])} in truth at index ${s}`, 'metrics');
    const p = index.get(pred[s]!);
    if (p === undefined) throw new UserError(`unknown label ${JSON.stringify(pred[s])} in predictions at index ${s}`, 'metrics');
    cm[t]![p]!++;
  }
  return cm;
}

/** All metrics from a confusion matrix (rows = truth, cols = pred) in `labels` order. Empty matrix -> UserError. */
export function metricsFromConfusion(labels: readonly string[], confusion: readonly (readonly number[])[]): Metrics {
  checkLabels(labels);
  const k = labels.length;
  if (confusion.length !== k || confusion.some((row) => row.length !== k)) {
    throw new UserError(`confusion matrix must be ${k}x${k} for ${k} labels`, 'metrics');
  }
  for (const row of confusion) {
    for (const c of row) {
      if (!Number.isInteger(c) || c < 0) throw new UserError(`confusion matrix entries must be non-negative integers, got ${c}`, 'metrics');
    }
  }
  const cm = confusion.map((row) => [...row]);
  const support = cm.map((row) => row.reduce((a, b) => a + b, 0));
  const predicted = labels.map((_, j) => cm.reduce((a, row) => a + row[j]!, 0));
  const n = support.reduce((a, b) => a + b, 0);
  if (n === 0) throw new UserError('no samples to score', 'metrics');

  const per_class: Record<string, ClassMetrics> = {};
  let correct = 0;
  let recallSum = 0;
  let recallCount = 0;
  let f1Sum = 0;
  let f1Count = 0;
  for (let i = 0; i < k; i++) {
    const tp = cm[i]![i]!;
    const fn = support[i]! - tp;
    const fp = predicted[i]! - tp;
    correct += tp;
    const precision = predicted[i]! > 0 ? tp / predicted[i]! : 0;
    const recall = support[i]! > 0 ? tp / support[i]! : 0;
    const f1Den = 2 * tp + fp + fn;
    const f1 = f1Den > 0 ? (2 * tp) / f1Den : 0;
    per_class[labels[i]!] = { precision, recall, f1, support: support[i]! };
    if (support[i]! > 0) {
      recallSum += recall;
      recallCount++;
    }
    if (support[i]! > 0 || predicted[i]! > 0) {
      f1Sum += f1;
      f1Count++;
    }
  }
  return {
    labels: [...labels],
    n,
    wa: correct / n,
    ua: recallSum / recallCount,
    macro_f1: f1Sum / f1Count,
    per_class,
    confusion: cm,
  };
}

/**
 * Metrics of `pred` against `truth` over the label set `labels` (which fixes the order of `per_class` keys and of
 * the confusion matrix). Unknown labels, mismatched lengths, duplicate labels or empty input -> UserError.
 */
export function computeMetrics(labels: string[], truth: string[], pred: string[]): Metrics {
  if (truth.length === 0 && pred.length === 0) throw new UserError('no samples to score', 'metrics');
  return metricsFromConfusion(labels, confusionMatrix(labels, truth, pred));
}

function meanStd(xs: number[]): { mean: number; std: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const variance = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / xs.length;
  return { mean, std: Math.sqrt(variance) };
}

/**
 * Summarise cross-validation folds: mean and population std (ddof = 0) of WA / UA / macro-F1 over folds, and
 * pooled metrics over all folds' predictions concatenated (computed from the summed confusion matrices, which is
 * exactly what concatenating the predictions gives). All folds must share the same label list (same order).
 */
export function aggregateFolds(folds: Array<{ name: string; metrics: Metrics }>): FoldSummary {
  if (!Array.isArray(folds) || folds.length === 0) throw new UserError('no folds to aggregate', 'metrics');
  const labels = folds[0]!.metrics.labels;
  const k = labels.length;
  const sum = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  const names = new Set<string>();
  for (const f of folds) {
    if (names.has(f.name)) throw new UserError(`duplicate fold name ${JSON.stringify(f.name)}`, 'metrics');
    names.add(f.name);
    const l = f.metrics.labels;
    if (l.length !== k || l.some((x, i) => x !== labels[i])) {
      throw new UserError(`fold ${JSON.stringify(f.name)} has labels [${l.join(', ')}], expected [${labels.join(', ')}]`, 'metrics');
    }
    const cm = f.metrics.confusion;
    if (cm.length !== k || cm.some((row) => row.length !== k)) {
      throw new UserError(`fold ${JSON.stringify(f.name)} has a malformed confusion matrix`, 'metrics');
    }
    for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) sum[i]![j]! += cm[i]![j]!;
  }
  const pick = (key: keyof HeadlineMetrics) => meanStd(folds.map((f) => f.metrics[key]));
  const wa = pick('wa');
  const ua = pick('ua');
  const f1 = pick('macro_f1');
  return {
    mean: { wa: wa.mean, ua: ua.mean, macro_f1: f1.mean },
    std: { wa: wa.std, ua: ua.std, macro_f1: f1.std },
    pooled: metricsFromConfusion(labels, sum),
    folds: folds.map((f) => ({ name: f.name, metrics: f.metrics })),
  };
}
