/**
 * Canonical emotion labels. Every corpus spells emotions its own way (EmoDB `W`, RAVDESS `05`, CREMA-D `ANG`,
 * IEMOCAP `ang`, TESS `angry`): loaders map them to one vocabulary so corpora can be mixed and label maps
 * written once. Label maps accept the same aliases ("exc=hap" means excited -> happiness).
 */
import { UserError } from '../util/errors.ts';
import type { DatasetItem } from './types.ts';

const ALIASES: Record<string, string[]> = {
  anger: ['ang', 'angry', 'anger'],
  boredom: ['bor', 'bored', 'boredom'],
  calm: ['cal', 'calm'],
  contempt: ['con', 'contempt'],
  disgust: ['dis', 'disgust', 'disgusted'],
  excited: ['exc', 'excited', 'excitement'],
  fear: ['fea', 'fear', 'fearful', 'afraid'],
  frustration: ['fru', 'frustrated', 'frustration'],
  // MELD's "joy" is the same category as happiness in the other corpora.
  happiness: ['hap', 'happy', 'happiness', 'joy'],
  neutral: ['neu', 'neutral'],
  other: ['oth', 'other'],
  sadness: ['sad', 'sadness'],
  surprise: ['sur', 'surprise', 'surprised', 'ps', 'pleasant_surprise', 'pleasant_surprised', 'pleasant surprise'],
};

const LOOKUP = new Map<string, string>();
for (const [canon, names] of Object.entries(ALIASES)) for (const n of names) LOOKUP.set(n, canon);

/** The canonical name of a label (lower-cased raw name when it is not a known alias). */
export function canonicalLabel(raw: string): string {
  const k = raw.trim().toLowerCase();
  return LOOKUP.get(k) ?? LOOKUP.get(k.replace(/[\s-]+/g, '_')) ?? k;
}

/** Canonical label -> new label, or null to drop the clip. */
export type LabelMap = Record<string, string | null>;

/**
 * Parse a label map from JSON-like object or the CLI form `"exc=hap,sur=-"` (`-` or empty = drop).
 * Keys and values go through the alias table.
 */
export function parseLabelMap(spec: LabelMap | string): LabelMap {
  const out: LabelMap = {};
  const add = (from: string, to: string | null, where: string) => {
    const k = canonicalLabel(from);
    if (!k) throw new UserError(`label map entry ${JSON.stringify(where)} has an empty source label`);
    out[k] = to === null ? null : canonicalLabel(to) || null;
  };
  if (typeof spec === 'string') {
    const s = spec.trim();
    if (s.startsWith('{')) {
      let j: unknown;
      try {
        j = JSON.parse(s);
      } catch (e) {
        throw new UserError(`label map is not valid JSON: ${(e as Error).message.split('\n')[0]}`);
      }
      return parseLabelMap(j as LabelMap);
    }
    for (const part of s.split(',').map((p) => p.trim()).filter(Boolean)) {
      const m = /^([^=]+)=(.*)$/.exec(part);
      if (!m) throw new UserError(`label map entry ${JSON.stringify(part)} is not from=to (or from=- to drop)`);
      const to = m[2]!.trim();
      add(m[1]!, to === '-' || to === '' ? null : to, part);
    }
    return out;
  }
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) throw new UserError('label map must be an object of from: to|null');
  for (const [k, v] of Object.entries(spec)) {
    if (v !== null && typeof v !== 'string') throw new UserError(`label map value for ${JSON.stringify(k)} must be a string or null`);
    add(k, v, k);
  }
  return out;
}

/** Apply a label map; returns the kept items (relabelled copies) and a count of what changed. */
export function applyLabelMap(items: DatasetItem[], map: LabelMap): { items: DatasetItem[]; renamed: number; dropped: number } {
  let renamed = 0;
  let dropped = 0;
  const out: DatasetItem[] = [];
  for (const it of items) {
    if (!(it.label in map)) {
      out.push(it);
      continue;
    }
    const to = map[it.label];
    if (to === null || to === undefined) {
      dropped++;
      continue;
    }
    if (to !== it.label) renamed++;
    out.push({ ...it, label: to });
  }
  return { items: out, renamed, dropped };
}

/** One-line description of a label map for notes / logs. */
export function describeLabelMap(map: LabelMap): string {
  return Object.entries(map)
    .map(([k, v]) => `${k}=${v ?? '-'}`)
    .join(',');
}
