/**
 * Group normalisation of prepared clips (models/normalize.ts states the maths): the statistics of each speaker's
 * clips, or of each recording, computed through the feature cache, as a transform the trainer and the evaluation
 * apply to every clip's states before batching or scoring.
 */
import type { EmoSLLM } from '../models/emosllm.ts';
import { type ChannelStats, FrameStats, type NormalizeMode, functionalGroupStats } from '../models/normalize.ts';
import type { ClipStates } from '../models/processor.ts';
import type { FeatureCache } from './cache.ts';
import { type ClipRef, statesOf } from './clips.ts';

/** A clip's states -> the states the model reads. */
export type StatesTransform = (clip: ClipRef, states: ClipStates) => ClipStates;

/** Clips per feature-cache read. */
const CHUNK = 32;

/**
 * The transform for `mode` over these clips (undefined for 'none'): 'speaker' uses the statistics of every clip
 * of the clip's speaker among `clips` (so a caller passes the whole set of a speaker's clips at once), 'recording'
 * those of the clip itself. The model gives the reference (its training-set featureNorm) and, for a mapper with a
 * stat token, the functionals whose per-speaker statistics speaker mode adds (`statToken: false` leaves them out:
 * the trainer's first pass, before the stat token's own training statistics exist).
 */
export async function groupNormalization(
  cache: FeatureCache,
  clips: ClipRef[],
  mode: NormalizeMode,
  model: EmoSLLM,
  opts: { statToken?: boolean } = {},
): Promise<StatesTransform | undefined> {
  if (mode === 'none') return undefined;
  const { numHiddenStates: layers, dIn: dim } = model.mapperConfig;
  if (mode === 'recording')
    return (_clip, states) => {
      const s = new FrameStats(layers, dim);
      s.add(states);
      return model.normalizeGroup(states, s.result());
    };
  const frameStats = new Map<string, FrameStats>();
  for (let i = 0; i < clips.length; i += CHUNK) {
    const part = clips.slice(i, i + CHUNK);
    const states = await statesOf(cache, part);
    part.forEach((c, k) => {
      let s = frameStats.get(c.item.speaker);
      if (!s) frameStats.set(c.item.speaker, (s = new FrameStats(layers, dim)));
      s.add(states[k]!);
    });
  }
  const frames = new Map([...frameStats].map(([spk, s]) => [spk, s.result()]));
  const groupOf = (clip: ClipRef): ChannelStats => {
    const g = frames.get(clip.item.speaker);
    if (!g) throw new Error(`speaker normalisation: no statistics for speaker ${clip.item.speaker} (clip ${clip.item.id})`);
    return g;
  };
  // second pass: the stat token's inputs of every frame-normalised clip, by speaker
  const functionals = new Map<string, ChannelStats | undefined>();
  if (model.mapperConfig.statChannels && (opts.statToken ?? true)) {
    const rows = new Map<string, Float32Array[]>();
    for (let i = 0; i < clips.length; i += CHUNK) {
      const part = clips.slice(i, i + CHUNK);
      const states = await statesOf(cache, part);
      const f = await model.clipFunctionals(states.map((s, k) => model.normalizeGroup(s, groupOf(part[k]!))));
      part.forEach((c, k) => {
        let r = rows.get(c.item.speaker);
        if (!r) rows.set(c.item.speaker, (r = []));
        r.push(f[k]!);
      });
    }
    for (const [spk, r] of rows) functionals.set(spk, functionalGroupStats(r));
  }
  return (clip, states) => model.normalizeGroup(states, groupOf(clip), functionals.get(clip.item.speaker));
}
