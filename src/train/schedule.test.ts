import { describe, expect, it } from 'vitest';
import { learningRate } from './schedule.ts';

describe('warmup + cosine schedule', () => {
  const c = { peak: 1e-3, warmupSteps: 10, totalSteps: 110, minRatio: 0.1 };
  it('warms up linearly to the peak', () => {
    expect(learningRate(1, c)).toBeCloseTo(1e-4, 12);
    expect(learningRate(5, c)).toBeCloseTo(5e-4, 12);
    expect(learningRate(10, c)).toBeCloseTo(1e-3, 12);
  });
  it('decays along a cosine to the floor and stays there', () => {
    expect(learningRate(60, c)).toBeCloseTo(1e-4 + 0.5 * 9e-4, 12); // half way
    expect(learningRate(110, c)).toBeCloseTo(1e-4, 12);
    expect(learningRate(500, c)).toBeCloseTo(1e-4, 12);
    for (let s = 11; s < 110; s++) expect(learningRate(s + 1, c)).toBeLessThanOrEqual(learningRate(s, c));
  });
});
