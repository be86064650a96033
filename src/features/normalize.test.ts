/**
 * Speaker normalisation through the feature cache on a real trained model (fbank + stat token + tiny LLM):
 * each speaker's clips get the speaker's frame statistics and, with enough clips, the statistics of the stat
 * token's functionals, and those reach the scoring graph.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadDataset } from '../data/dataset.ts';
import { EmoSLLM } from '../models/emosllm.ts';
import { MIN_STAT_GROUP_CLIPS, columnStats, statGroupAffine } from '../models/normalize.ts';
import type { ClipStates } from '../models/processor.ts';
import { trainSmallModel } from '../../test/fixtures-gen/model.ts';
import { tempDir } from '../../test/fixtures-gen/paths.ts';
import { emodbSubset } from '../../test/fixtures-gen/subset.ts';
import { FeatureCache } from './cache.ts';
import { prepareClips, statesOf } from './clips.ts';
import { groupNormalization } from './normalize.ts';

const tmp = tempDir('features-normalize');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('groupNormalization speaker', () => {
  it("gives each speaker's clips the speaker's functional statistics (>= 8 clips), and the scores depend on them", async () => {
    const model = EmoSLLM.load(await trainSmallModel(tmp, { steps: 2 }));
    try {
      expect(model.mapperConfig.statChannels).toBeGreaterThan(0); // the default has a stat token
      // speaker 10 with enough clips, speaker 11 with too few
      const big = await loadDataset(emodbSubset(path.join(tmp, 'big'), ['10'], MIN_STAT_GROUP_CLIPS + 2));
      const small = await loadDataset(emodbSubset(path.join(tmp, 'small'), ['11'], MIN_STAT_GROUP_CLIPS - 2));
      const cache = new FeatureCache(path.join(tmp, 'cache'), model.encoder, { layers: model.spec.encoderLayers });
      const clips = (await prepareClips(cache, [...big.items, ...small.items])).clips;
      const norm = (await groupNormalization(cache, clips, 'speaker', model))!;
      const raw = await statesOf(cache, clips);
      const seen = clips.map((c, k) => norm(c, raw[k]!));
      const spk10 = seen.filter((_, k) => clips[k]!.item.speaker === '10');
      expect(spk10.length).toBe(MIN_STAT_GROUP_CLIPS + 2);
      seen.forEach((s, k) => expect(s.statGroup !== undefined, clips[k]!.item.id).toBe(clips[k]!.item.speaker === '10'));

      // the group statistics are those of the speaker's frame-normalised clips' functionals: standardised with
      // them (what the graph computes from statNorm and the affine), the speaker's functionals are z-normalised
      const f = await model.clipFunctionals(spk10);
      const t = statGroupAffine(spk10[0]!.statGroup!, model.statNorm!);
      const z = columnStats(f.map((row) => Float32Array.from(row, (v, j) => ((v - model.statNorm!.mean[j]!) / model.statNorm!.std[j]!) * t.scale[j]! + t.shift[j]!)));
      z.mean.forEach((m, j) => expect(Math.abs(m), `column ${j}`).toBeLessThan(1e-3));
      // std 1, except columns whose group std was floored (below 5% of the training std) or constant
      const group = spk10[0]!.statGroup!;
      const free = Array.from(group.std, (s, j) => s >= 0.05 * model.statNorm!.std[j]! && s !== 1);
      expect(free.filter(Boolean).length).toBeGreaterThan(free.length / 2);
      z.std.forEach((s, j) => free[j] && expect(Math.abs(s - 1), `column ${j}`).toBeLessThan(1e-3));

      // the scoring graph reads them: other probabilities with the group's statistics, the same with the training
      // set's own (the identity)
      const { statGroup, ...plain } = spk10[0]!;
      const p = async (s: ClipStates) => (await model.scoreStates(s)).probabilities;
      const without = await p(plain);
      const withGroup = await p({ ...plain, statGroup });
      const identity = await p({ ...plain, statGroup: model.statNorm });
      expect(Math.max(...without.map((v, i) => Math.abs(v - withGroup[i]!)))).toBeGreaterThan(1e-4);
      identity.forEach((v, i) => expect(v).toBeCloseTo(without[i]!, 6));
    } finally {
      await model.release();
    }
  }, 300_000);
});
