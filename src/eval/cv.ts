/**
 * Leave-one-speaker-out (or -session-out) cross-validation: for every group, train on the others and evaluate
 * on the held-out group. Evaluation sits below training in the layers, so the caller passes the function that
 * trains one fold (the CLI passes `train`). Folds already finished in `out` are reused, so an interrupted run
 * continues where it stopped.
 */
import fs from 'node:fs';
import path from 'node:path';
import { loadDataset } from '../data/dataset.ts';
import { leaveOneGroupOut } from '../data/splits.ts';
import type { DatasetItem } from '../data/types.ts';
import { UserError } from '../util/errors.ts';
import { writeFileAtomic } from '../util/fs.ts';
import { type Metrics, aggregateFolds } from './metrics.ts';
import { type Curve, historyCurves, writeReport } from './report.ts';
import { isSynthetic, metricsJson, runEval } from './run.ts';

/** Trains one fold's model into `dir` (resuming it when `resume`); returns the run's history for the report. */
export type FoldTrainer = (fold: {
  name: string;
  dir: string;
  train: DatasetItem[];
  /** the label set shared by every fold */
  labels: string[];
  resume: boolean;
  log: (line: string) => void;
}) => Promise<{ history: Array<Record<string, number>> }>;

export interface CvOptions {
  data: string;
  labelMap?: string;
  /** label set (default: every label of the corpus, sorted) */
  labels?: string[];
  by: 'speaker' | 'session';
  /** run only these groups */
  folds?: string[];
  out: string;
  trainFold: FoldTrainer;
  /** extra report lines (encoder, LLM, ...) */
  info?: Record<string, string>;
  log?: (line: string) => void;
}

export interface CvResult {
  folds: Array<{ name: string; metrics: Metrics; seconds: number }>;
  mean: { wa: number; ua: number; macro_f1: number };
  std: { wa: number; ua: number; macro_f1: number };
  seconds: number;
}

export async function runCv(o: CvOptions): Promise<CvResult> {
  const log = o.log ?? ((l: string) => console.error(l));
  const t0 = performance.now();
  const ds = await loadDataset(o.data, { labelMap: o.labelMap });
  // one label set for every fold (a fold's training side may lack a class), so folds aggregate
  const labels = o.labels ?? [...new Set(ds.items.map((i) => i.label))].sort();
  let folds = leaveOneGroupOut(ds.items, o.by);
  if (o.folds) folds = folds.filter((f) => o.folds!.includes(f.group));
  if (folds.length === 0) throw new UserError(`no fold matches --folds ${o.folds?.join(',')}`);
  const results: CvResult['folds'] = [];
  const curves: Curve[] = [];
  for (const fold of folds) {
    const dir = path.join(o.out, fold.name.replace('=', '-'));
    const metricsFile = path.join(dir, 'eval', 'metrics.json');
    if (fs.existsSync(metricsFile) && fs.existsSync(path.join(dir, 'fold.json'))) {
      const done = JSON.parse(fs.readFileSync(path.join(dir, 'fold.json'), 'utf8'));
      log(`cv: ${fold.name} already done (UA ${(100 * done.metrics.ua).toFixed(1)}%)`);
      results.push(done);
      continue;
    }
    log(`cv: ${fold.name}: training on ${fold.train.length} clips, testing on ${fold.test.length}`);
    const ft = performance.now();
    const foldLog = (l: string) => log(`  ${l}`);
    const resume = fs.existsSync(path.join(dir, 'train_config.json'));
    const tr = await o.trainFold({ name: fold.name, dir, train: fold.train, labels, resume, log: foldLog });
    const r = await runEval({ model: dir, data: o.data, out: path.join(dir, 'eval'), labelMap: o.labelMap, log: foldLog, only: new Set(fold.test.map((i) => i.id)) });
    const entry = { name: fold.name, metrics: r.metrics, seconds: (performance.now() - ft) / 1000 };
    writeFileAtomic(path.join(dir, 'fold.json'), `${JSON.stringify(entry)}\n`);
    results.push(entry);
    curves.push(...historyCurves(tr.history, fold.name).filter((c) => c.kind !== 'valid_loss'));
  }
  const agg = aggregateFolds(results.map((r) => ({ name: r.name, metrics: r.metrics })));
  const seconds = (performance.now() - t0) / 1000;
  const extra = { by: o.by, mean: agg.mean, std: agg.std, folds: results.map((r) => ({ name: r.name, wa: r.metrics.wa, ua: r.metrics.ua, macro_f1: r.metrics.macro_f1, n: r.metrics.n, seconds: r.seconds })), seconds };
  writeFileAtomic(path.join(o.out, 'metrics.json'), metricsJson({ ...agg.pooled, wa: agg.mean.wa, ua: agg.mean.ua, macro_f1: agg.mean.macro_f1 }, { pooled: { wa: agg.pooled.wa, ua: agg.pooled.ua, macro_f1: agg.pooled.macro_f1 }, ...extra }));
  writeReport(path.join(o.out, 'report.html'), {
    title: `EmoSLLM leave-one-${o.by}-out`,
    info: {
      data: path.resolve(o.data),
      ...o.info,
      folds: String(results.length),
      'mean UA': `${(100 * agg.mean.ua).toFixed(1)}% ± ${(100 * agg.std.ua).toFixed(1)}`,
      'mean WA': `${(100 * agg.mean.wa).toFixed(1)}% ± ${(100 * agg.std.wa).toFixed(1)}`,
      'wall time': `${seconds.toFixed(0)} s`,
    },
    metrics: agg.pooled,
    folds: results.map((r) => ({ name: r.name, metrics: r.metrics })),
    curves,
    synthetic: isSynthetic(o.data),
  });
  log(`cv: mean UA ${(100 * agg.mean.ua).toFixed(1)}% (± ${(100 * agg.std.ua).toFixed(1)}), mean WA ${(100 * agg.mean.wa).toFixed(1)}% over ${results.length} folds, ${seconds.toFixed(0)} s -> ${o.out}`);
  return { folds: results, mean: agg.mean, std: agg.std, seconds };
}
