/** Feature statistics of a training set, for the per-channel normalisation the model stores (featureNorm). */
import type { FeatureCache } from './cache.ts';
import { type ClipRef, statesOf } from './clips.ts';

/** Per-(layer, channel) mean and std of the training clips' encoder states, in float64 (std floored at 1e-5). */
export async function featureStats(cache: FeatureCache, clips: ClipRef[], layers: number, dim: number): Promise<{ mean: Float32Array; std: Float32Array }> {
  const sum = new Float64Array(layers * dim);
  const sq = new Float64Array(layers * dim);
  let frames = 0;
  for (let i = 0; i < clips.length; i += 32) {
    for (const st of await statesOf(cache, clips.slice(i, i + 32))) {
      frames += st.frames;
      st.states.forEach((x, l) => {
        for (let t = 0; t < st.frames; t++)
          for (let d = 0; d < dim; d++) {
            const v = x[t * dim + d];
            sum[l * dim + d] += v;
            sq[l * dim + d] += v * v;
          }
      });
    }
  }
  const mean = Float32Array.from(sum, (s) => s / frames);
  const std = Float32Array.from(sq, (q, k) => Math.max(1e-5, Math.sqrt(Math.max(0, q / frames - (sum[k] / frames) ** 2))));
  return { mean, std };
}
