/**
 * A real trained model for tests that need one (predict, export, browser, server): the default fbank + tiny-LLM
 * configuration trained for a few steps on a small emodb-dev subset (~10-20 s on 2 cores). Its predictions are
 * not good (a few steps); they are what the code under test must reproduce.
 */
import path from 'node:path';
import { defaultTrainConfig } from '../../src/train/config.ts';
import { train } from '../../src/train/trainer.ts';
import { emodbSubset } from './subset.ts';

export async function trainSmallModel(dir: string, opts: { steps?: number; cacheDir?: string; encoder?: string; name?: string } = {}): Promise<string> {
  const data = emodbSubset(path.join(dir, 'data'), ['03', '08', '09'], 14);
  const out = path.join(dir, opts.name ?? 'model');
  const encoder = opts.encoder ? { encoder: opts.encoder } : {};
  await train(defaultTrainConfig({ data, maxSteps: opts.steps ?? 4, batchSize: 8, validFraction: 0, cacheDir: opts.cacheDir ?? path.join(dir, 'cache'), ...encoder }), out, {
    hooks: { log: () => {} },
  });
  return out;
}
