/**
 * Training-only sampling: the order in which an epoch visits the training clips, and how it cuts batches.
 */
import type { Rng } from '../util/rng.ts';

/**
 * One epoch's visiting order. With `balanceBy` (label per example), examples are drawn with replacement with
 * probability inversely proportional to their class size, so every class is seen equally often.
 */
export function epochOrder(n: number, rng: Rng, balanceBy?: number[]): number[] {
  if (!balanceBy) {
    const order = Array.from({ length: n }, (_, i) => i);
    rng.shuffle(order);
    return order;
  }
  const counts = new Map<number, number>();
  for (const c of balanceBy) counts.set(c, (counts.get(c) ?? 0) + 1);
  const cum: number[] = [];
  let total = 0;
  for (let i = 0; i < n; i++) {
    total += 1 / counts.get(balanceBy[i])!;
    cum.push(total);
  }
  const out: number[] = [];
  for (let k = 0; k < n; k++) {
    const u = rng.next() * total;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cum[mid] > u) hi = mid;
      else lo = mid + 1;
    }
    out.push(lo);
  }
  return out;
}

/**
 * Length bucketing: within windows of `batchSize * bucketBatches` examples of the (already shuffled) order,
 * sort by length and cut batches, then shuffle the batches. Padding shrinks, randomness stays.
 */
export function bucketBatches(order: number[], lengths: number[], batchSize: number, rng: Rng, bucketBatches = 8): number[][] {
  const batches: number[][] = [];
  const win = batchSize * bucketBatches;
  for (let s = 0; s < order.length; s += win) {
    const chunk = order.slice(s, s + win).sort((a, b) => lengths[a] - lengths[b]);
    for (let i = 0; i < chunk.length; i += batchSize) batches.push(chunk.slice(i, i + batchSize));
  }
  rng.shuffle(batches);
  return batches;
}
