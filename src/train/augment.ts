/**
 * SpecAugment-style masking of training batches (Park et al. 2019), on the encoder states in the frame domain:
 * a few random bands of channels and spans of frames of each clip are replaced by the clip's mean, so the
 * mapper cannot lean on any single band or moment. Off by default (`--augment` turns it on): it corrupts the
 * mapper's stat token (a masked band has no spread), see config.ts. Drawn from the batch's own RNG: resumed runs
 * mask exactly the same.
 *
 * Channel bands respect the layout of stacked fbank frames: with `channelGroup` = 80 (mel bins) a band of
 * bins is masked in every stacked sub-frame alike. For other encoders the group is the whole width.
 */
import type { Rng } from '../util/rng.ts';
import type { Batch } from '../models/processor.ts';

export interface AugmentOptions {
  /** channel bands per clip, and the widest band as a fraction of the group (default 2, 0.15) */
  channelMasks: number;
  channelMaxFraction: number;
  /** frame spans per clip, and the longest span as a fraction of the clip (default 2, 0.1) */
  timeMasks: number;
  timeMaxFraction: number;
  /** channels per group (see above) */
  channelGroup: number;
}

export const DEFAULT_AUGMENT: Omit<AugmentOptions, 'channelGroup'> = { channelMasks: 2, channelMaxFraction: 0.15, timeMasks: 2, timeMaxFraction: 0.1 };

/** Masks `b.hiddenStates` in place ([layers, B, T, D]; the same masks for every layer of a clip). */
export function specAugment(b: Batch, rng: Rng, o: AugmentOptions): void {
  const { layers: L, size: B, frames: T, dim: D } = b;
  const G = o.channelGroup;
  if (D % G !== 0) throw new Error(`specAugment: width ${D} is not a multiple of the channel group ${G}`);
  for (let i = 0; i < B; i++) {
    let n = 0;
    while (n < T && b.frameMask[i * T + n] !== 0n) n++;
    if (n === 0) continue;
    const bands: Array<[number, number]> = [];
    for (let k = 0; k < o.channelMasks; k++) {
      const w = rng.int(Math.floor(o.channelMaxFraction * G) + 1);
      if (w > 0) bands.push([rng.int(G - w + 1), w]);
    }
    const spans: Array<[number, number]> = [];
    for (let k = 0; k < o.timeMasks; k++) {
      const w = rng.int(Math.floor(o.timeMaxFraction * n) + 1);
      if (w > 0) spans.push([rng.int(n - w + 1), w]);
    }
    if (!bands.length && !spans.length) continue;
    for (let l = 0; l < L; l++) {
      const base = (l * B + i) * T * D;
      const mean = new Float64Array(D);
      for (let t = 0; t < n; t++) for (let c = 0; c < D; c++) mean[c] += b.hiddenStates[base + t * D + c];
      for (let c = 0; c < D; c++) mean[c] /= n;
      for (const [c0, w] of bands)
        for (let t = 0; t < n; t++)
          for (let g = 0; g < D; g += G) for (let c = c0; c < c0 + w; c++) b.hiddenStates[base + t * D + g + c] = mean[g + c];
      for (const [t0, w] of spans) for (let t = t0; t < t0 + w; t++) for (let c = 0; c < D; c++) b.hiddenStates[base + t * D + c] = mean[c];
    }
  }
}
