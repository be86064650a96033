import { describe, expect, it } from 'vitest';
import { Rng } from '../util/rng.ts';
import { FrameStats, MIN_STAT_GROUP_CLIPS, applyTransform, columnStats, functionalGroupStats, groupTransform, statGroupAffine, statsOf } from './normalize.ts';
import type { ClipStates } from './processor.ts';

/** A clip of `frames` frames whose channel d is offset + spread * noise (2 layers). */
function clip(rng: Rng, frames: number, dim: number, offset: number, spread: number): ClipStates {
  const states = [0, 1].map((l) => Float32Array.from({ length: frames * dim }, (_, i) => offset * (l + 1) + (i % dim) + spread * (rng.next() - 0.5)));
  return { states, frames, dim };
}

describe('group normalisation', () => {
  it("maps a group's statistics onto the reference: after the transform the group has the reference's mean and std per channel", () => {
    const rng = new Rng('norm');
    const dim = 5;
    const speaker = [clip(rng, 40, dim, 3, 2), clip(rng, 25, dim, 3, 2)];
    const reference = statsOf([clip(rng, 60, dim, -1, 6)], 2, dim);
    const t = groupTransform(statsOf(speaker, 2, dim), reference);
    const after = statsOf(speaker.map((c) => applyTransform(c, t)), 2, dim);
    for (let k = 0; k < 2 * dim; k++) {
      expect(after.mean[k]).toBeCloseTo(reference.mean[k], 3);
      expect(after.std[k]).toBeCloseTo(reference.std[k], 3);
    }
    // the input is left as it was (cached states are shared)
    expect(speaker[0].states[0][0]).not.toBeCloseTo(applyTransform(speaker[0], t).states[0][0], 3);
  });

  it('without a reference the group comes out z-normalised; a constant channel is not blown up', () => {
    const dim = 2;
    const c: ClipStates = { states: [Float32Array.from([1, 7, 3, 7, 5, 7])], frames: 3, dim };
    const s = new FrameStats(1, dim);
    s.add(c);
    const r = s.result();
    expect(Array.from(r.mean)).toEqual([3, 7]);
    expect(r.std[0]).toBeCloseTo(Math.sqrt(8 / 3), 5);
    expect(r.std[1]).toBeCloseTo(1e-3, 8);
    const z = applyTransform(c, groupTransform(r));
    expect(Array.from(z.states[0]).map((x) => Math.round(x * 1000) / 1000)).toEqual([-1.225, 0, 0, 0, 1.225, 0]);
  });

  it("the stat token's group affine turns the training standardisation into the group's own: z-normalised columns", () => {
    const rng = new Rng('stat-affine');
    const width = 4;
    const row = (offset: number, spread: number) => Float32Array.from({ length: width }, (_, j) => offset + j + spread * (rng.next() - 0.5));
    const training = columnStats(Array.from({ length: 50 }, () => row(0, 10)));
    const speaker = Array.from({ length: 12 }, () => row(5, 2)); // shifted and narrower than the training set
    const group = functionalGroupStats(speaker)!;
    const t = statGroupAffine(group, training);
    // what the graph computes: z = (f - m_train) / s_train, then z * scale + shift
    const seen = speaker.map((f) => Float32Array.from(f, (v, j) => ((v - training.mean[j]!) / training.std[j]!) * t.scale[j]! + t.shift[j]!));
    const after = columnStats(seen);
    for (let j = 0; j < width; j++) {
      expect(after.mean[j]).toBeCloseTo(0, 4);
      expect(after.std[j]).toBeCloseTo(1, 4);
    }
    // a group with the training statistics is the identity
    const id = statGroupAffine(training, training);
    expect(Array.from(id.scale)).toEqual(Array(width).fill(1));
    expect(Array.from(id.shift)).toEqual(Array(width).fill(0));
  });

  it('too few clips give no group statistics of the functionals; a near-constant functional is not blown up', () => {
    const rows = (n: number) => Array.from({ length: n }, (_, i) => Float32Array.from([i, 3 + 1e-6 * i]));
    expect(functionalGroupStats(rows(MIN_STAT_GROUP_CLIPS - 1))).toBeUndefined();
    const g = functionalGroupStats(rows(MIN_STAT_GROUP_CLIPS))!;
    expect(g.mean[0]).toBeCloseTo((MIN_STAT_GROUP_CLIPS - 1) / 2, 5);
    const t = statGroupAffine(g, { mean: Float32Array.from([0, 0]), std: Float32Array.from([1, 1]) });
    expect(t.scale[1]).toBeLessThanOrEqual(20 + 1e-4); // floored at 5% of the training std
  });
});
