/**
 * Manifest files: CSV (header row) or JSON Lines, one clip per row. Columns (CSV) / keys (JSONL):
 * `path` (relative to the manifest's folder, or absolute), `emotion` or `label`, `speaker`, and optionally
 * `id`, `transcript`, `session`, `gender`, `duration_s`, `split`; other columns are ignored. This is the format
 * of ../shared/data/emodb-dev/manifest.csv and of the synthetic demo corpus.
 */
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../util/errors.ts';
import { writeFileAtomic } from '../util/fs.ts';
import { parseCsvTable, toCsv } from './csv.ts';
import { canonicalLabel } from './labels.ts';
import { Reporter } from './scan.ts';
import type { Dataset, DatasetItem } from './types.ts';

/** Largest manifest we read into memory (a bigger one is almost certainly the wrong file). */
const MAX_MANIFEST_BYTES = 256 << 20;

function readText(file: string): string {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new UserError('manifest not found', file);
  }
  if (!st.isFile()) throw new UserError('manifest is not a file', file);
  if (st.size > MAX_MANIFEST_BYTES) throw new UserError(`manifest is ${st.size} bytes, over the ${MAX_MANIFEST_BYTES}-byte limit`, file);
  const buf = fs.readFileSync(file);
  if (buf.includes(0)) throw new UserError('manifest is not a text file (contains NUL bytes)', file);
  return buf.toString('utf8');
}

type Row = Record<string, unknown>;

/** Load a CSV or JSONL manifest. */
export function loadManifest(file: string, opts: { onInvalid?: 'error' | 'skip'; checkFiles?: boolean } = {}): Dataset {
  file = path.resolve(file);
  const rep = new Reporter(opts.onInvalid);
  const checkFiles = opts.checkFiles ?? true;
  const text = readText(file);
  const base = path.dirname(file);
  const rows: Array<{ line: number; row: Row }> = [];
  const isJsonl = /\.jsonl?$/i.test(file) || /^\s*\{/.test(text);
  if (isJsonl) {
    text.split(/\r?\n/).forEach((l, i) => {
      if (!l.trim()) return;
      let j: unknown;
      try {
        j = JSON.parse(l);
      } catch (e) {
        throw new UserError(`line ${i + 1}: invalid JSON (${(e as Error).message.split('\n')[0]})`, file);
      }
      if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new UserError(`line ${i + 1}: expected a JSON object`, file);
      rows.push({ line: i + 1, row: j as Row });
    });
  } else {
    const t = parseCsvTable(text, file);
    const has = (c: string) => t.header.includes(c);
    if (!has('path')) throw new UserError(`missing column "path" (columns: ${t.header.join(', ')})`, file);
    if (!has('emotion') && !has('label')) throw new UserError(`missing column "emotion" or "label" (columns: ${t.header.join(', ')})`, file);
    if (!has('speaker')) throw new UserError(`missing column "speaker" (columns: ${t.header.join(', ')})`, file);
    for (const r of t.records) rows.push({ line: r.line, row: r.values });
  }
  if (rows.length === 0) throw new UserError('manifest lists no clips', file);

  const items: DatasetItem[] = [];
  const ids = new Map<string, number>();
  const str = (v: unknown): string | undefined => (v === undefined || v === null ? undefined : typeof v === 'string' ? v.trim() : typeof v === 'number' ? String(v) : undefined);
  for (const { line, row } of rows) {
    const where = `${file}:${line}`;
    const p = str(row.path);
    const label = str(row.emotion) ?? str(row.label);
    const speaker = str(row.speaker);
    if (!p) {
      rep.invalid(where, 'empty path');
      continue;
    }
    if (!label) {
      rep.invalid(where, `no emotion/label for ${p}`);
      continue;
    }
    if (!speaker) {
      rep.invalid(where, `no speaker for ${p}`);
      continue;
    }
    const abs = path.resolve(base, p);
    const id = str(row.id) || p.replace(/\.[^./\\]+$/, '');
    const prev = ids.get(id);
    if (prev !== undefined) {
      rep.invalid(where, `duplicate clip id ${JSON.stringify(id)} (first on line ${prev})`);
      continue;
    }
    const durRaw = row.duration_s ?? row.duration ?? row.durationS;
    let durationS: number | undefined;
    if (durRaw !== undefined && durRaw !== '') {
      durationS = typeof durRaw === 'number' ? durRaw : Number(String(durRaw).trim());
      if (!Number.isFinite(durationS) || durationS <= 0) {
        rep.invalid(where, `duration_s ${JSON.stringify(durRaw)} is not a positive number`);
        continue;
      }
    }
    if (checkFiles) {
      let ok = false;
      try {
        ok = fs.statSync(abs).isFile();
      } catch {
        ok = false;
      }
      if (!ok) {
        rep.invalid(where, `audio file ${p} not found`);
        continue;
      }
    }
    ids.set(id, line);
    const item: DatasetItem = { id, path: abs, label: canonicalLabel(label), speaker };
    const transcript = str(row.transcript) ?? str(row.text);
    if (transcript) item.transcript = transcript;
    const session = str(row.session);
    if (session) item.session = session;
    const gender = str(row.gender);
    if (gender) item.gender = gender.toLowerCase();
    if (durationS !== undefined) item.durationS = durationS;
    const split = str(row.split);
    if (split) item.split = split;
    items.push(item);
  }
  if (items.length === 0) throw new UserError('no valid clips in the manifest', file);
  return { corpus: 'manifest', root: file, items, warnings: rep.warnings, notes: rep.notes };
}

/** Columns written by `writeManifest`, in the emodb-dev order. */
export const MANIFEST_COLUMNS = ['path', 'speaker', 'gender', 'emotion', 'sentence', 'transcript', 'duration_s', 'sample_rate'] as const;

export type ManifestRow = Partial<Record<(typeof MANIFEST_COLUMNS)[number] | string, string | number | undefined>>;

/** Write a CSV manifest atomically (columns: MANIFEST_COLUMNS, then any extra keys). */
export function writeManifest(file: string, rows: ManifestRow[]): void {
  const extra = [...new Set(rows.flatMap((r) => Object.keys(r)))].filter((k) => !(MANIFEST_COLUMNS as readonly string[]).includes(k));
  const cols = [...MANIFEST_COLUMNS, ...extra];
  writeFileAtomic(file, toCsv([cols, ...rows.map((r) => cols.map((c) => r[c]))]));
}
