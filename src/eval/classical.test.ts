import fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { emodbDev, tempDir } from '../../test/fixtures-gen/paths.ts';
import { loadDataset } from '../data/dataset.ts';
import { leaveOneGroupOut } from '../data/splits.ts';
import { MFCC_CHANNELS } from '../models/frame-features-graph.ts';
import { PEER_MEL_BINS, type PeerFeatures, clipFunctionals, peerEncoder, peerFeatureNames, peerFunctionals, runClassicalPeer, speakerNormalise } from './classical.ts';

const tmp = tempDir('classical');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('classical peer: functionals + RBF SVM', () => {
  it('functionals of known series: moments, percentiles (numpy linear), mean |delta|, louder-half F0, duration', () => {
    const enc = peerEncoder();
    const width = enc.hiddenSize;
    expect(width).toBe(PEER_MEL_BINS + MFCC_CHANNELS + 3);
    const frames = 11;
    const states = new Float32Array(frames * width);
    const f0 = PEER_MEL_BINS + MFCC_CHANNELS;
    for (let t = 0; t < frames; t++) {
      states[t * width] = t; // fbank_0: 0..10
      states[t * width + f0] = t < 5 ? 1 : 2; // log-F0
      states[t * width + f0 + 2] = t; // log-energy rises: the louder half is t >= 5
    }
    const x = clipFunctionals(states, frames, width, 100);
    const names = peerFeatureNames();
    expect(x).toHaveLength(names.length);
    const get = (n: string) => x[names.indexOf(n)]!;
    expect(get('fbank_0.mean')).toBeCloseTo(5, 10);
    expect(get('fbank_0.std')).toBeCloseTo(Math.sqrt(10), 10);
    expect([get('fbank_0.min'), get('fbank_0.max')]).toEqual([0, 10]);
    expect([get('fbank_0.p10'), get('fbank_0.p50'), get('fbank_0.p90')].map((v) => +v.toFixed(10))).toEqual([1, 5, 9]);
    expect(get('fbank_0.mean_abs_delta')).toBeCloseTo(1, 10);
    expect(get('fbank_0_delta.mean')).toBeCloseTo(1, 10);
    expect(get('fbank_0_delta.std')).toBeCloseTo(0, 10);
    expect(get('log_f0_louder_half.mean')).toBeCloseTo(2, 10); // only frames with log-energy >= the median
    expect(get('duration_s')).toBeCloseTo(0.11, 10);
  });

  it('speaker normalisation z-normalises each feature within each speaker', () => {
    const rows = [[1, 10], [3, 30], [100, 5], [300, 5]].map((r) => Float64Array.from(r));
    const z = speakerNormalise(rows, ['a', 'a', 'b', 'b']);
    expect(z.map((r) => Array.from(r))).toEqual([[-1, -1], [1, 1], [-1, 0], [1, 0]]);
  });

  it('on a leave-one-speaker-out fold of emodb-dev it beats chance clearly, with and without speaker normalisation', async () => {
    const ds = await loadDataset(emodbDev().dir);
    const fold = leaveOneGroupOut(ds.items, 'speaker')[0]!;
    const [train, test] = [await peerFunctionals(fold.train, { cacheDir: tmp }), await peerFunctionals(fold.test, { cacheDir: tmp })];
    expect(train.warnings).toEqual([]);
    expect(test.features[0]!.every(Number.isFinite)).toBe(true);
    const labels = [...new Set(ds.items.map((i) => i.label))].sort();
    const chance = 1 / labels.length;
    for (const speakerNorm of [false, true]) {
      const r = await runClassicalPeer(train, test, { speakerNorm, labels });
      expect(r.predictions).toHaveLength(test.items.length);
      expect(r.ua, `speakerNorm ${speakerNorm}`).toBeGreaterThan(chance + 0.25);
    }
    // the same recipe with each training clip given another clip's label has nothing to learn: near chance
    const shuffled: PeerFeatures = { ...train, items: train.items.map((it, i) => ({ ...it, label: train.items[(i * 7 + 3) % train.items.length]!.label })) };
    const r = await runClassicalPeer(shuffled, test, { speakerNorm: false, labels });
    expect(r.ua).toBeLessThan(chance + 0.15);
  }, 300_000);
});
