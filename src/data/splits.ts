/**
 * Speaker-independent splits. Emotion models learn speaker identity shortcuts easily, so every split here is
 * disjoint by speaker (or session). All are deterministic functions of (items, seed): groups are sorted before
 * the seeded shuffle, so input order does not matter.
 */
import { UserError } from '../util/errors.ts';
import { Rng } from '../util/rng.ts';
import type { DatasetItem } from './types.ts';

const sortStrings = (xs: Iterable<string>) => [...new Set(xs)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

export interface SpeakerSplit {
  train: DatasetItem[];
  valid: DatasetItem[];
  test: DatasetItem[];
  speakers: { train: string[]; valid: string[]; test: string[] };
}

/**
 * Assign whole speakers to train / valid / test. `valid` and `test` are fractions of the speakers
 * (rounded, at least one speaker when the fraction is > 0); the rest train.
 */
export function speakerSplit(items: DatasetItem[], opts: { valid?: number; test?: number; seed?: number | string } = {}): SpeakerSplit {
  const fv = opts.valid ?? 0.1;
  const ft = opts.test ?? 0.2;
  if (!(fv >= 0 && ft >= 0 && fv + ft < 1)) throw new UserError(`split fractions must be >= 0 and sum below 1 (valid ${fv}, test ${ft})`);
  const speakers = sortStrings(items.map((i) => i.speaker));
  const n = speakers.length;
  const count = (f: number) => (f > 0 ? Math.max(1, Math.round(f * n)) : 0);
  const nv = count(fv);
  const nt = count(ft);
  if (n - nv - nt < 1) throw new UserError(`${n} speaker(s) cannot be split into train/valid/test by speaker (need at least ${nv + nt + 1})`);
  const order = new Rng(opts.seed ?? 0).shuffle([...speakers]);
  const test = sortStrings(order.slice(0, nt));
  const valid = sortStrings(order.slice(nt, nt + nv));
  const train = sortStrings(order.slice(nt + nv));
  const of = (set: string[]) => {
    const s = new Set(set);
    return items.filter((i) => s.has(i.speaker));
  };
  return { train: of(train), valid: of(valid), test: of(test), speakers: { train, valid, test } };
}

export interface Fold {
  /** e.g. `speaker=03` or `session=Ses01`. */
  name: string;
  group: string;
  train: DatasetItem[];
  test: DatasetItem[];
  /** Present when `validSpeakers` > 0: speakers carved out of the training side. */
  valid?: DatasetItem[];
}

/**
 * Leave-one-group-out folds, one per speaker or session (in sorted group order). With `validSpeakers`, that
 * many speakers of each fold's training side are moved to a validation set (seeded per fold).
 */
export function leaveOneGroupOut(
  items: DatasetItem[],
  key: 'speaker' | 'session',
  opts: { validSpeakers?: number; seed?: number | string } = {},
): Fold[] {
  const missing = items.filter((i) => !i[key]);
  if (missing.length) {
    throw new UserError(`${missing.length} clip(s) have no ${key} (e.g. ${missing[0]!.id}); leave-one-${key}-out needs it on every clip`);
  }
  const groups = sortStrings(items.map((i) => i[key]!));
  if (groups.length < 2) throw new UserError(`leave-one-${key}-out needs at least 2 ${key}s, found ${groups.length}`);
  const nv = opts.validSpeakers ?? 0;
  if (!Number.isInteger(nv) || nv < 0) throw new UserError(`validSpeakers must be a non-negative integer, got ${nv}`);
  return groups.map((g) => {
    const test = items.filter((i) => i[key] === g);
    let train = items.filter((i) => i[key] !== g);
    const fold: Fold = { name: `${key}=${g}`, group: g, train, test };
    if (nv > 0) {
      const spk = sortStrings(train.map((i) => i.speaker));
      if (spk.length - nv < 1) throw new UserError(`fold ${fold.name}: ${spk.length} training speaker(s), cannot hold out ${nv} for validation`);
      const pick = new Set(new Rng(`${opts.seed ?? 0}:${fold.name}`).shuffle(spk).slice(0, nv));
      fold.valid = train.filter((i) => pick.has(i.speaker));
      train = train.filter((i) => !pick.has(i.speaker));
      fold.train = train;
    }
    return fold;
  });
}
