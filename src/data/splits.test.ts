import { describe, expect, it } from 'vitest';
import { leaveOneGroupOut, speakerSplit } from './splits.ts';
import { loadDataset } from './dataset.ts';
import type { DatasetItem } from './types.ts';
import { emodbDev } from '../../test/fixtures-gen/paths.ts';

const speakersOf = (xs: DatasetItem[]) => [...new Set(xs.map((i) => i.speaker))].sort();

describe('speakerSplit', () => {
  it('is speaker-disjoint, covers every clip once, and is seeded', async () => {
    const ds = await loadDataset(emodbDev().manifest);
    const s = speakerSplit(ds.items, { valid: 0.1, test: 0.2, seed: 1 });
    expect(s.speakers.valid.length).toBe(1);
    expect(s.speakers.test.length).toBe(1);
    expect(s.speakers.train.length).toBe(5);
    const all = [...s.speakers.train, ...s.speakers.valid, ...s.speakers.test];
    expect(new Set(all).size).toBe(7);
    expect(speakersOf(s.train)).toEqual(s.speakers.train);
    expect(s.train.length + s.valid.length + s.test.length).toBe(ds.items.length);
    expect(new Set([...s.train, ...s.valid, ...s.test].map((i) => i.id)).size).toBe(ds.items.length);
    // Deterministic, independent of input order; other seeds differ.
    const again = speakerSplit([...ds.items].reverse(), { valid: 0.1, test: 0.2, seed: 1 });
    expect(again.speakers).toEqual(s.speakers);
    const seeds = new Set(Array.from({ length: 8 }, (_, k) => JSON.stringify(speakerSplit(ds.items, { seed: k }).speakers)));
    expect(seeds.size).toBeGreaterThan(1);
  });

  it('refuses impossible splits', () => {
    const items = ['a', 'b'].map((s, i) => ({ id: String(i), path: '/x', label: 'anger', speaker: s }));
    expect(() => speakerSplit(items, { valid: 0.1, test: 0.2 })).toThrow(/2 speaker\(s\) cannot be split/);
    expect(() => speakerSplit(items, { valid: 0.5, test: 0.5 })).toThrow(/sum below 1/);
  });
});

describe('leaveOneGroupOut', () => {
  it('one fold per speaker, test = that speaker, optional seeded validation speakers', async () => {
    const ds = await loadDataset(emodbDev().manifest);
    const folds = leaveOneGroupOut(ds.items, 'speaker', { validSpeakers: 1, seed: 3 });
    expect(folds.map((f) => f.name)).toEqual(['speaker=03', 'speaker=08', 'speaker=09', 'speaker=10', 'speaker=11', 'speaker=13', 'speaker=14']);
    for (const f of folds) {
      expect(speakersOf(f.test)).toEqual([f.group]);
      expect(speakersOf(f.valid!).length).toBe(1);
      expect(speakersOf(f.train)).not.toContain(f.group);
      expect(speakersOf(f.train)).not.toContain(speakersOf(f.valid!)[0]);
      expect(f.train.length + f.valid!.length + f.test.length).toBe(ds.items.length);
    }
    const again = leaveOneGroupOut(ds.items, 'speaker', { validSpeakers: 1, seed: 3 });
    expect(again.map((f) => speakersOf(f.valid!))).toEqual(folds.map((f) => speakersOf(f.valid!)));
  });

  it('by session; clips without the key are an error', () => {
    const mk = (id: string, speaker: string, session?: string): DatasetItem => ({ id, path: '/x', label: 'anger', speaker, session });
    const items = [mk('1', 'Ses01F', 'Ses01'), mk('2', 'Ses01M', 'Ses01'), mk('3', 'Ses02F', 'Ses02'), mk('4', 'Ses02M', 'Ses02')];
    const folds = leaveOneGroupOut(items, 'session');
    expect(folds.map((f) => [f.name, f.test.map((i) => i.id), f.train.map((i) => i.id)])).toEqual([
      ['session=Ses01', ['1', '2'], ['3', '4']],
      ['session=Ses02', ['3', '4'], ['1', '2']],
    ]);
    expect(() => leaveOneGroupOut([...items, mk('5', 'x')], 'session')).toThrow(/1 clip\(s\) have no session \(e\.g\. 5\)/);
    expect(() => leaveOneGroupOut(items.slice(0, 2), 'session')).toThrow(/at least 2 sessions/);
  });
});
