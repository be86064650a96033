/**
 * `loadDataset(spec)`: one entry point for every way a labelled corpus can be given - a folder with a
 * manifest.csv, a .csv / .jsonl manifest file, or a folder in the published layout of a known corpus
 * (auto-detected). Label maps are applied last.
 */
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../util/errors.ts';
import { detectCorpus, loadCorpusFolder } from './corpora.ts';
import { applyLabelMap, describeLabelMap, parseLabelMap } from './labels.ts';
import { loadManifest } from './manifest.ts';
import { CORPUS_KINDS, type Dataset, type LoadOptions } from './types.ts';

export type { Dataset, DatasetItem, LoadOptions, CorpusKind } from './types.ts';

export async function loadDataset(spec: string, opts: LoadOptions = {}): Promise<Dataset> {
  const abs = path.resolve(spec);
  let st: fs.Stats;
  try {
    st = fs.statSync(abs);
  } catch {
    throw new UserError('no such file or folder', abs);
  }
  if (opts.corpus !== undefined && !CORPUS_KINDS.includes(opts.corpus)) {
    throw new UserError(`unknown corpus kind ${JSON.stringify(opts.corpus)} (one of ${CORPUS_KINDS.join(', ')})`);
  }
  const manifestOpts = { onInvalid: opts.onInvalid, checkFiles: opts.checkFiles };
  let ds: Dataset;
  if (st.isFile()) {
    if (!/\.(csv|jsonl|json)$/i.test(abs)) throw new UserError('expected a folder or a .csv / .jsonl manifest', abs);
    ds = loadManifest(abs, manifestOpts);
  } else if (st.isDirectory()) {
    const kind = opts.corpus ?? detectCorpus(abs);
    if (kind === 'manifest') {
      const csv = path.join(abs, 'manifest.csv');
      ds = loadManifest(fs.existsSync(csv) ? csv : path.join(abs, 'manifest.jsonl'), manifestOpts);
    } else {
      ds = loadCorpusFolder(abs, kind, opts);
    }
  } else {
    throw new UserError('not a file or folder', abs);
  }
  if (opts.labelMap !== undefined) {
    const map = parseLabelMap(opts.labelMap);
    const r = applyLabelMap(ds.items, map);
    ds.notes.push(`label map ${describeLabelMap(map)}: ${r.renamed} relabelled, ${r.dropped} dropped`);
    if (r.items.length === 0) throw new UserError(`the label map ${describeLabelMap(map)} drops every clip`, abs);
    ds.items = r.items;
  }
  return ds;
}
