/**
 * The classical peer (src/eval/classical.ts) on emodb-dev, leave-one-speaker-out: the peer half of the
 * accuracy figures. `benchPeer()` is what `npm run bench -- accuracy` spreads into its JSON; on its own it is
 * `npm run bench -- peer`.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadDataset } from '../src/data/dataset.ts';
import { classicalPeerLoso, peerFunctionals } from '../src/eval/classical.ts';

const EMODB_DEV = path.resolve(import.meta.dirname, '../../shared/data/emodb-dev');

/** Mean UA over emodb-dev's leave-one-speaker-out folds, without and with speaker normalisation. */
export async function benchPeer(data = EMODB_DEV): Promise<Record<string, number>> {
  const items = (await loadDataset(data)).items;
  // a fresh cache: the feature time is part of the figure, not a leftover of an earlier run
  const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-bench-peer-'));
  try {
    const t0 = performance.now();
    const features = await peerFunctionals(items, { cacheDir });
    const featureS = (performance.now() - t0) / 1000;
    const plain = await classicalPeerLoso(features, { speakerNorm: false });
    const t1 = performance.now();
    const norm = await classicalPeerLoso(features, { speakerNorm: true });
    const foldS = (performance.now() - t1) / 1000 / norm.folds.length;
    console.error(`peer per-fold UA: ${plain.folds.map((f) => `${f.speaker} ${(100 * f.ua).toFixed(1)}`).join(', ')}`);
    console.error(`peer per-fold UA, speaker norm: ${norm.folds.map((f) => `${f.speaker} ${(100 * f.ua).toFixed(1)}`).join(', ')}`);
    return {
      peer_loso_ua: plain.ua,
      peer_loso_ua_speaker_norm: norm.ua,
      peer_folds: norm.folds.length,
      peer_feature_s: featureS,
      peer_train_s_per_fold: foldS,
    };
  } finally {
    fs.rmSync(cacheDir, { recursive: true, force: true });
  }
}
