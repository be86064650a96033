import { describe, expect, it } from 'vitest';
import { Rng } from '../util/rng.ts';
import { bucketBatches, epochOrder } from './sampling.ts';

describe('sampling', () => {
  it('class-balanced order visits classes about equally', () => {
    const labelsOf = [...new Array(90).fill(0), ...new Array(10).fill(1)];
    const counts = [0, 0];
    const rng = new Rng(1);
    for (let e = 0; e < 50; e++) for (const i of epochOrder(100, rng, labelsOf)) counts[labelsOf[i]]++;
    expect(counts[1] / (counts[0] + counts[1])).toBeGreaterThan(0.45);
    expect(counts[1] / (counts[0] + counts[1])).toBeLessThan(0.55);
  });

  it('bucketing keeps every example once and groups similar lengths', () => {
    const rng = new Rng(2);
    const lengths = Array.from({ length: 64 }, (_, i) => (i * 37) % 64);
    const order = epochOrder(64, rng);
    const batches = bucketBatches(order, lengths, 8, rng, 8);
    expect(batches.flat().sort((a, b) => a - b)).toEqual(Array.from({ length: 64 }, (_, i) => i));
    for (const b of batches) {
      const ls = b.map((i) => lengths[i]);
      expect(Math.max(...ls) - Math.min(...ls)).toBeLessThan(16);
    }
  });
});
