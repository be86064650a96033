/**
 * Clips -> frozen-encoder states, through the feature cache: each clip is decoded and encoded once, then only
 * its cache key is kept; batches fetch states by key (memory LRU, then disk). A clip that cannot be decoded is
 * left out with a one-line warning, so one broken file does not stop a run over a corpus; so is a clip below the
 * minimum duration (MIN_CLIP_SECONDS, the check predict and the server run too).
 */
import { loadAudio16k } from '../audio/decode.ts';
import { checkClipDuration } from '../audio/segments.ts';
import type { DatasetItem } from '../data/types.ts';
import { oneLine } from '../util/errors.ts';
import type { ClipStates } from '../models/processor.ts';
import type { FeatureCache } from './cache.ts';

export interface ClipRef {
  item: DatasetItem;
  key: string;
  frames: number;
}

export interface PrepareResult {
  clips: ClipRef[];
  warnings: string[];
}

/** Decodes and encodes every item (cache misses only), `batch` clips per encoder call. */
export async function prepareClips(
  cache: FeatureCache,
  items: DatasetItem[],
  opts: { maxSeconds?: number; batch?: number; onProgress?: (done: number, total: number) => void } = {},
): Promise<PrepareResult> {
  const clips: ClipRef[] = [];
  const warnings: string[] = [];
  const batch = opts.batch ?? 16;
  for (let i = 0; i < items.length; i += batch) {
    const part = items.slice(i, i + batch);
    const decoded: Array<{ item: DatasetItem; samples: Float32Array }> = [];
    for (const item of part) {
      try {
        const samples = await loadAudio16k(item.path, { maxSeconds: opts.maxSeconds });
        checkClipDuration(samples.length, 16000);
        decoded.push({ item, samples });
      } catch (e) {
        warnings.push(`skipped ${item.path}: ${oneLine(e).replace(`${item.path}: `, '')}`);
      }
    }
    const states = await cache.getMany(decoded.map((d) => d.samples));
    decoded.forEach((d, k) => clips.push({ item: d.item, key: cache.key(d.samples), frames: states[k].frames }));
    opts.onProgress?.(Math.min(i + batch, items.length), items.length);
  }
  return { clips, warnings };
}

/** The states of prepared clips (recomputed from the audio if the cache lost them). */
export async function statesOf(cache: FeatureCache, clips: ClipRef[]): Promise<ClipStates[]> {
  const out: ClipStates[] = new Array(clips.length);
  const missing: number[] = [];
  clips.forEach((c, i) => {
    const s = cache.lookup(c.key);
    if (s) out[i] = s;
    else missing.push(i);
  });
  if (missing.length) {
    const samples = await Promise.all(missing.map((i) => loadAudio16k(clips[i].item.path)));
    const states = await cache.getMany(samples);
    missing.forEach((i, k) => (out[i] = states[k]));
  }
  return out;
}
