/**
 * `npm run bench -- accuracy`: leave-one-speaker-out on emodb-dev for the built-in defaults (`emosllm cv --by
 * speaker`, nothing but --data and --normalize given) and for the classical peer on the same folds, each without
 * and with speaker normalisation. Every fold trains from scratch in a fresh temporary folder and cache, so the
 * training time per fold includes the features. EMOSLLM_BENCH_FOLDS=03,08 limits the folds (then the JSON says so).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCv } from '../src/eval/cv.ts';
import { defaultTrainConfig } from '../src/train/config.ts';
import { train } from '../src/train/trainer.ts';
import { benchPeer } from './peer.ts';

const EMODB_DEV = path.resolve(import.meta.dirname, '../../shared/data/emodb-dev');

async function loso(normalize: 'none' | 'speaker', folds: string[] | undefined, root: string) {
  const out = path.join(root, `cv-${normalize}`);
  const base = defaultTrainConfig({ data: EMODB_DEV, normalize, cacheDir: path.join(root, 'cache') });
  let trainSeconds = 0;
  const r = await runCv({
    data: EMODB_DEV,
    by: 'speaker',
    folds,
    out,
    trainFold: async (fold) => {
      const t0 = performance.now();
      const run = await train({ ...base, labels: fold.labels }, fold.dir, { resume: fold.resume, items: { train: fold.train }, hooks: { log: fold.log } });
      trainSeconds += (performance.now() - t0) / 1000;
      return run;
    },
    log: (l) => console.error(l),
  });
  console.error(`built-in defaults, normalize ${normalize}: ${r.folds.map((f) => `${f.name} ${(100 * f.metrics.ua).toFixed(1)}`).join(', ')}`);
  return { ua: r.mean.ua, secondsPerFold: trainSeconds / r.folds.length };
}

export async function benchAccuracy(): Promise<Record<string, number>> {
  const folds = process.env.EMOSLLM_BENCH_FOLDS?.split(',').filter(Boolean);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-bench-accuracy-'));
  try {
    const plain = await loso('none', folds, root);
    const norm = await loso('speaker', folds, root);
    const peer = await benchPeer(EMODB_DEV, folds);
    return {
      loso_ua: plain.ua,
      loso_ua_speaker_norm: norm.ua,
      peer_loso_ua: peer.peer_loso_ua!,
      peer_loso_ua_speaker_norm: peer.peer_loso_ua_speaker_norm!,
      train_s_per_fold: plain.secondsPerFold,
      train_s_per_fold_speaker_norm: norm.secondsPerFold,
      folds: folds?.length ?? peer.peer_folds!,
    };
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}
