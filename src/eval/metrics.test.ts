import { describe, expect, it } from 'vitest';
import { aggregateFolds, computeMetrics, confusionMatrix, metricsFromConfusion } from './metrics.ts';
import { UserError } from '../util/errors.ts';

describe('computeMetrics: hand-computed 3-class case', () => {
  // labels a, b, c
  // truth: a a a b b c
  // pred:  a a b b c c
  // confusion (rows truth, cols pred):
  //   a: [2, 1, 0]   support 3
  //   b: [0, 1, 1]   support 2
  //   c: [0, 0, 1]   support 1
  // WA = (2+1+1)/6 = 4/6
  // recall: a 2/3, b 1/2, c 1/1          -> UA = (2/3 + 1/2 + 1)/3 = 13/18
  // precision: a 2/2 = 1, b 1/2, c 1/2
  // F1 = 2TP/(2TP+FP+FN): a 4/(4+0+1) = 0.8, b 2/(2+1+1) = 0.5, c 2/(2+1+0) = 2/3
  // macro-F1 = (0.8 + 0.5 + 2/3)/3 = 59/90
  const m = computeMetrics(['a', 'b', 'c'], ['a', 'a', 'a', 'b', 'b', 'c'], ['a', 'a', 'b', 'b', 'c', 'c']);
  it('has the confusion matrix with rows = truth, cols = prediction', () => {
    expect(m.confusion).toEqual([
      [2, 1, 0],
      [0, 1, 1],
      [0, 0, 1],
    ]);
    expect(m.labels).toEqual(['a', 'b', 'c']);
    expect(m.n).toBe(6);
  });
  it('has WA, UA and macro-F1', () => {
    expect(m.wa).toBeCloseTo(4 / 6, 12);
    expect(m.ua).toBeCloseTo(13 / 18, 12);
    expect(m.macro_f1).toBeCloseTo(59 / 90, 12);
  });
  it('has per-class precision / recall / F1 / support', () => {
    expect(m.per_class.a!.precision).toBeCloseTo(1, 12);
    expect(m.per_class.a!.recall).toBeCloseTo(2 / 3, 12);
    expect(m.per_class.a!.f1).toBeCloseTo(0.8, 12);
    expect(m.per_class.b!.precision).toBeCloseTo(0.5, 12);
    expect(m.per_class.b!.recall).toBeCloseTo(0.5, 12);
    expect(m.per_class.b!.f1).toBeCloseTo(0.5, 12);
    expect(m.per_class.c!.precision).toBeCloseTo(0.5, 12);
    expect(m.per_class.c!.recall).toBeCloseTo(1, 12);
    expect(m.per_class.c!.f1).toBeCloseTo(2 / 3, 12);
    expect([m.per_class.a!.support, m.per_class.b!.support, m.per_class.c!.support]).toEqual([3, 2, 1]);
    expect(Object.keys(m.per_class)).toEqual(['a', 'b', 'c']);
  });
});

describe('computeMetrics: imbalanced case, sklearn-equivalent numbers derived by hand', () => {
  // labels neu hap sad ang fea; truth: neu x6, hap x3, sad x1 (n = 10)
  // pred for the neu items: neu x5, ang x1; for hap: neu x2, hap x1; for sad: neu
  // -> sad is never predicted, ang is predicted but never true, fea appears nowhere.
  // confusion:
  //   neu: [5,0,0,1,0] hap: [2,1,0,0,0] sad: [1,0,0,0,0] ang: 0 fea: 0
  //   predicted counts: neu 8, hap 1, sad 0, ang 1, fea 0
  // sklearn.metrics.accuracy_score          = 6/10
  // sklearn.metrics.balanced_accuracy_score = mean recall over classes in truth = (5/6 + 1/3 + 0)/3 = 7/18
  // sklearn.metrics.f1_score(average='macro', zero_division=0) (labels default = truth ∪ pred = neu hap sad ang):
  //   neu: P 5/8, R 5/6, F1 10/(10+3+1) = 5/7; hap: P 1, R 1/3, F1 2/(2+0+2) = 1/2
  //   sad: P 0 (zero_division), R 0, F1 0;    ang: P 0/1 = 0, R 0 (no support), F1 0
  //   macro = (5/7 + 1/2 + 0 + 0)/4 = 17/56    (fea is in neither, so it is not averaged)
  const truth = [...Array(6).fill('neu'), ...Array(3).fill('hap'), 'sad'] as string[];
  const pred = ['neu', 'neu', 'neu', 'neu', 'neu', 'ang', 'neu', 'neu', 'hap', 'neu'];
  const m = computeMetrics(['neu', 'hap', 'sad', 'ang', 'fea'], truth, pred);
  it('matches accuracy, balanced accuracy and macro-F1', () => {
    expect(m.wa).toBeCloseTo(0.6, 12);
    expect(m.ua).toBeCloseTo(7 / 18, 12);
    expect(m.macro_f1).toBeCloseTo(17 / 56, 12);
  });
  it('gives a never-predicted class precision 0 (zero_division = 0)', () => {
    expect(m.per_class.sad).toEqual({ precision: 0, recall: 0, f1: 0, support: 1 });
    expect(m.per_class.ang).toEqual({ precision: 0, recall: 0, f1: 0, support: 0 });
    expect(m.per_class.fea).toEqual({ precision: 0, recall: 0, f1: 0, support: 0 });
    expect(m.per_class.neu!.precision).toBeCloseTo(5 / 8, 12);
    expect(m.per_class.neu!.f1).toBeCloseTo(5 / 7, 12);
    expect(m.per_class.hap!.precision).toBe(1);
  });
  it('keeps every label in the confusion matrix', () => {
    expect(m.confusion).toEqual([
      [5, 0, 0, 1, 0],
      [2, 1, 0, 0, 0],
      [1, 0, 0, 0, 0],
      [0, 0, 0, 0, 0],
      [0, 0, 0, 0, 0],
    ]);
  });
});

describe('computeMetrics: edge cases', () => {
  it('perfect predictions score 1', () => {
    const m = computeMetrics(['x', 'y'], ['x', 'y', 'y'], ['x', 'y', 'y']);
    expect([m.wa, m.ua, m.macro_f1]).toEqual([1, 1, 1]);
  });
  it('a single class present in truth only', () => {
    const m = computeMetrics(['x', 'y'], ['x', 'x'], ['x', 'x']);
    expect([m.wa, m.ua, m.macro_f1]).toEqual([1, 1, 1]);
    expect(m.per_class.y).toEqual({ precision: 0, recall: 0, f1: 0, support: 0 });
  });
  it('all wrong scores 0', () => {
    const m = computeMetrics(['x', 'y'], ['x', 'y'], ['y', 'x']);
    expect([m.wa, m.ua, m.macro_f1]).toEqual([0, 0, 0]);
  });
  it('rejects empty input, unknown labels, mismatched lengths, bad label sets', () => {
    expect(() => computeMetrics(['x'], [], [])).toThrow(UserError);
    expect(() => computeMetrics(['x'], ['x'], ['z'])).toThrow(/unknown label "z" in predictions/);
    expect(() => computeMetrics(['x'], ['z'], ['x'])).toThrow(/unknown label "z" in truth/);
    expect(() => computeMetrics(['x'], ['x'], ['x', 'x'])).toThrow(UserError);
    expect(() => computeMetrics([], ['x'], ['x'])).toThrow(UserError);
    expect(() => computeMetrics(['x', 'x'], ['x'], ['x'])).toThrow(/duplicate label/);
  });
  it('metricsFromConfusion rejects malformed matrices', () => {
    expect(() => metricsFromConfusion(['x', 'y'], [[1, 0]])).toThrow(UserError);
    expect(() => metricsFromConfusion(['x'], [[-1]])).toThrow(UserError);
    expect(() => metricsFromConfusion(['x'], [[0.5]])).toThrow(UserError);
    expect(() => metricsFromConfusion(['x'], [[0]])).toThrow(/no samples/);
  });
  it('confusionMatrix counts', () => {
    expect(confusionMatrix(['p', 'q'], ['p', 'q', 'q'], ['q', 'q', 'p'])).toEqual([
      [0, 1],
      [1, 1],
    ]);
  });
});

describe('aggregateFolds', () => {
  const labels = ['a', 'b', 'c'];
  const f1t = ['a', 'a', 'a', 'b', 'b', 'c'];
  const f1p = ['a', 'a', 'b', 'b', 'c', 'c'];
  const f2t = ['a', 'b', 'c'];
  const f2p = ['a', 'b', 'c'];
  const folds = [
    { name: 'fold1', metrics: computeMetrics(labels, f1t, f1p) }, // WA 4/6, UA 13/18, F1 59/90 (see above)
    { name: 'fold2', metrics: computeMetrics(labels, f2t, f2p) }, // all 1
  ];
  const s = aggregateFolds(folds);
  it('mean and population std over folds', () => {
    // two values x, y: mean (x+y)/2, population std |x-y|/2
    expect(s.mean.wa).toBeCloseTo(5 / 6, 12);
    expect(s.std.wa).toBeCloseTo(1 / 6, 12);
    expect(s.mean.ua).toBeCloseTo(31 / 36, 12);
    expect(s.std.ua).toBeCloseTo(5 / 36, 12);
    expect(s.mean.macro_f1).toBeCloseTo(149 / 180, 12);
    expect(s.std.macro_f1).toBeCloseTo(31 / 180, 12);
  });
  it('pooled = metrics over the concatenated predictions', () => {
    const pooled = computeMetrics(labels, [...f1t, ...f2t], [...f1p, ...f2p]);
    expect(s.pooled).toEqual(pooled);
    // by hand: confusion [[3,1,0],[0,2,1],[0,0,2]], WA 7/9
    expect(s.pooled.confusion).toEqual([
      [3, 1, 0],
      [0, 2, 1],
      [0, 0, 2],
    ]);
    expect(s.pooled.wa).toBeCloseTo(7 / 9, 12);
    expect(s.folds.map((f) => f.name)).toEqual(['fold1', 'fold2']);
  });
  it('one fold has std 0', () => {
    const one = aggregateFolds([folds[0]!]);
    expect(one.std).toEqual({ wa: 0, ua: 0, macro_f1: 0 });
    expect(one.mean.ua).toBeCloseTo(13 / 18, 12);
  });
  it('rejects no folds, mismatched label sets and duplicate names', () => {
    expect(() => aggregateFolds([])).toThrow(UserError);
    const other = { name: 'x', metrics: computeMetrics(['a', 'c', 'b'], ['a'], ['a']) };
    expect(() => aggregateFolds([folds[0]!, other])).toThrow(/has labels/);
    expect(() => aggregateFolds([folds[0]!, folds[0]!])).toThrow(/duplicate fold/);
  });
});
