/**
 * Group normalisation of prepared clips (models/normalize.ts states the maths): the statistics of each speaker's
 * clips, or of each recording, computed through the feature cache, as a transform the trainer and the evaluation
 * apply to every clip's states before batching or scoring.
 */
import { type ChannelStats, FrameStats, type NormalizeMode, applyTransform, groupTransform } from '../models/normalize.ts';
import type { ClipStates } from '../models/processor.ts';
import type { FeatureCache } from './cache.ts';
import { type ClipRef, statesOf } from './clips.ts';

/** A clip's states -> the states the model reads. */
export type StatesTransform = (clip: ClipRef, states: ClipStates) => ClipStates;

/**
 * The transform for `mode` over these clips (undefined for 'none'): 'speaker' uses the statistics of every clip
 * of the clip's speaker among `clips` (so a caller passes the whole set of a speaker's clips at once), 'recording'
 * those of the clip itself. `reference` is the model's training-set normalisation (EmoSLLM.featureNorm).
 */
export async function groupNormalization(
  cache: FeatureCache,
  clips: ClipRef[],
  mode: NormalizeMode,
  dims: { layers: number; dim: number },
  reference?: ChannelStats,
): Promise<StatesTransform | undefined> {
  if (mode === 'none') return undefined;
  if (mode === 'recording')
    return (_clip, states) => {
      const s = new FrameStats(dims.layers, dims.dim);
      s.add(states);
      return applyTransform(states, groupTransform(s.result(), reference));
    };
  const bySpeaker = new Map<string, FrameStats>();
  for (let i = 0; i < clips.length; i += 32) {
    const part = clips.slice(i, i + 32);
    const states = await statesOf(cache, part);
    part.forEach((c, k) => {
      let s = bySpeaker.get(c.item.speaker);
      if (!s) bySpeaker.set(c.item.speaker, (s = new FrameStats(dims.layers, dims.dim)));
      s.add(states[k]);
    });
  }
  const transforms = new Map([...bySpeaker].map(([spk, s]) => [spk, groupTransform(s.result(), reference)]));
  return (clip, states) => {
    const t = transforms.get(clip.item.speaker);
    if (!t) throw new Error(`speaker normalisation: no statistics for speaker ${clip.item.speaker} (clip ${clip.item.id})`);
    return applyTransform(states, t);
  };
}
