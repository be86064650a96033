import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { loadDataset } from '../data/dataset.ts';
import { leaveOneGroupOut } from '../data/splits.ts';
import { type EvalResult, evaluateClips } from '../eval/evaluate.ts';
import { type Metrics, aggregateFolds } from '../eval/metrics.ts';
import { type Curve, writeReport } from '../eval/report.ts';
import { cacheRoot } from '../graph/runtime.ts';
import { EmoSLLM } from '../models/emosllm.ts';
import { FeatureCache } from '../train/feature-cache.ts';
import { prepareClips } from '../train/features.ts';
import { historyCurves, train } from '../train/trainer.ts';
import { UserError } from '../util/errors.ts';
import { writeFileAtomic } from '../util/fs.ts';
import { type TrainFlags, addTrainOptions, givenFlags, trainConfigFromFlags } from './train.ts';
import { progress } from './progress.ts';

/** metrics.json: the headline figures first, then the rest of the metrics. */
function metricsJson(m: Metrics, extra: Record<string, unknown>): string {
  return `${JSON.stringify({ wa: m.wa, ua: m.ua, macro_f1: m.macro_f1, labels: m.labels, confusion: m.confusion, n: m.n, per_class: m.per_class, ...extra }, null, 2)}\n`;
}

function writePredictions(file: string, r: EvalResult): void {
  writeFileAtomic(file, r.predictions.map((p) => JSON.stringify(p)).join('\n') + (r.predictions.length ? '\n' : ''));
}

/** Evaluates a model folder on a corpus; writes metrics.json, predictions.jsonl and report.html to `out`. */
export async function runEval(f: { model: string; data: string; out: string; labelMap?: string; log?: (l: string) => void; only?: Set<string> }): Promise<EvalResult> {
  const log = f.log ?? ((l: string) => console.error(l));
  const model = EmoSLLM.load(f.model);
  try {
    const ds = await loadDataset(f.data, { labelMap: f.labelMap });
    for (const w of ds.warnings) log(`warning: ${w}`);
    const known = new Set(model.labels);
    const all = f.only ? ds.items.filter((i) => f.only!.has(i.id)) : ds.items;
    const items = all.filter((i) => known.has(i.label));
    if (items.length < all.length) log(`note: ${all.length - items.length} clip(s) with labels outside the model's [${model.labels.join(', ')}] are left out`);
    if (items.length === 0) throw new UserError(`no clip has one of the model's labels [${model.labels.join(', ')}]`, f.data);
    const cache = new FeatureCache(cacheRoot(), model.encoder, { layers: model.spec.encoderLayers, onWarning: log });
    const bar = progress('eval');
    let prep;
    let r: EvalResult;
    try {
      prep = await prepareClips(cache, items, { onProgress: (d, t) => bar.update(d, 2 * t) });
      for (const w of prep.warnings) log(`warning: ${w}`);
      r = await evaluateClips(model, cache, prep.clips, { onProgress: (d, t) => bar.update(t + d, 2 * t) });
    } finally {
      bar.stop();
    }
    fs.mkdirSync(f.out, { recursive: true });
    writeFileAtomic(path.join(f.out, 'metrics.json'), metricsJson(r.metrics, { model: path.resolve(f.model), data: path.resolve(f.data), skipped: prep.warnings }));
    writePredictions(path.join(f.out, 'predictions.jsonl'), r);
    const history = path.join(f.model, 'history.json');
    const curves: Curve[] = fs.existsSync(history) ? historyCurves(JSON.parse(fs.readFileSync(history, 'utf8')), 'training') : [];
    writeReport(path.join(f.out, 'report.html'), {
      title: 'EmoSLLM evaluation',
      info: { model: path.resolve(f.model), data: path.resolve(f.data), clips: String(r.metrics.n), corpus: ds.corpus },
      metrics: r.metrics,
      curves,
      synthetic: isSynthetic(f.data),
    });
    log(`eval: ${r.metrics.n} clips, UA ${(100 * r.metrics.ua).toFixed(1)}%, WA ${(100 * r.metrics.wa).toFixed(1)}%, macro-F1 ${(100 * r.metrics.macro_f1).toFixed(1)}% -> ${f.out}`);
    return r;
  } finally {
    await model.release();
  }
}

/** A corpus made by the demo's synthesiser says so in its README; reports then carry a banner. */
export function isSynthetic(data: string): boolean {
  const dir = fs.statSync(data, { throwIfNoEntry: false })?.isDirectory() ? data : path.dirname(data);
  const readme = path.join(dir, 'README.md');
  return fs.existsSync(readme) && /SYNTHETIC/.test(fs.readFileSync(readme, 'utf8'));
}

export interface CvResult {
  folds: Array<{ name: string; metrics: Metrics; seconds: number }>;
  mean: { wa: number; ua: number; macro_f1: number };
  std: { wa: number; ua: number; macro_f1: number };
  seconds: number;
}

/**
 * Leave-one-speaker-out (or -session-out) cross-validation: for every group, train on the others (validation
 * speakers carved out of them) and evaluate on the held-out group. Folds already finished in `out` are reused,
 * so an interrupted run continues where it stopped.
 */
export async function runCv(flags: TrainFlags & { by: 'speaker' | 'session'; folds?: string[] }, log: (l: string) => void = (l) => console.error(l)): Promise<CvResult> {
  const t0 = performance.now();
  const base = trainConfigFromFlags(flags);
  const ds = await loadDataset(base.data, { labelMap: base.labelMap });
  // one label set for every fold (a fold's training side may lack a class), so folds aggregate
  base.labels ??= [...new Set(ds.items.map((i) => i.label))].sort();
  let folds = leaveOneGroupOut(ds.items, flags.by);
  if (flags.folds) folds = folds.filter((f) => flags.folds!.includes(f.group));
  if (folds.length === 0) throw new UserError(`no fold matches --folds ${flags.folds?.join(',')}`);
  const results: CvResult['folds'] = [];
  const curves: Curve[] = [];
  for (const fold of folds) {
    const dir = path.join(flags.out, fold.name.replace('=', '-'));
    const metricsFile = path.join(dir, 'eval', 'metrics.json');
    if (fs.existsSync(metricsFile) && fs.existsSync(path.join(dir, 'fold.json'))) {
      const done = JSON.parse(fs.readFileSync(path.join(dir, 'fold.json'), 'utf8'));
      log(`cv: ${fold.name} already done (UA ${(100 * done.metrics.ua).toFixed(1)}%)`);
      results.push(done);
      continue;
    }
    log(`cv: ${fold.name}: training on ${fold.train.length} clips, testing on ${fold.test.length}`);
    const ft = performance.now();
    const resume = fs.existsSync(path.join(dir, 'train_config.json'));
    const tr = await train(base, dir, { resume, items: { train: fold.train }, hooks: { log: (l) => log(`  ${l}`) } });
    const r = await runEval({ model: dir, data: base.data, out: path.join(dir, 'eval'), labelMap: base.labelMap, log: (l) => log(`  ${l}`), only: new Set(fold.test.map((i) => i.id)) });
    const entry = { name: fold.name, metrics: r.metrics, seconds: (performance.now() - ft) / 1000 };
    writeFileAtomic(path.join(dir, 'fold.json'), `${JSON.stringify(entry)}\n`);
    results.push(entry);
    curves.push(...historyCurves(tr.history, fold.name).filter((c) => c.kind !== 'valid_loss'));
  }
  const agg = aggregateFolds(results.map((r) => ({ name: r.name, metrics: r.metrics })));
  const seconds = (performance.now() - t0) / 1000;
  const extra = { by: flags.by, mean: agg.mean, std: agg.std, folds: results.map((r) => ({ name: r.name, wa: r.metrics.wa, ua: r.metrics.ua, macro_f1: r.metrics.macro_f1, n: r.metrics.n, seconds: r.seconds })), seconds };
  writeFileAtomic(path.join(flags.out, 'metrics.json'), metricsJson({ ...agg.pooled, wa: agg.mean.wa, ua: agg.mean.ua, macro_f1: agg.mean.macro_f1 }, { pooled: { wa: agg.pooled.wa, ua: agg.pooled.ua, macro_f1: agg.pooled.macro_f1 }, ...extra }));
  writeReport(path.join(flags.out, 'report.html'), {
    title: `EmoSLLM leave-one-${flags.by}-out`,
    info: {
      data: path.resolve(base.data),
      encoder: base.encoder,
      llm: base.llm,
      folds: String(results.length),
      'mean UA': `${(100 * agg.mean.ua).toFixed(1)}% ± ${(100 * agg.std.ua).toFixed(1)}`,
      'mean WA': `${(100 * agg.mean.wa).toFixed(1)}% ± ${(100 * agg.std.wa).toFixed(1)}`,
      'wall time': `${seconds.toFixed(0)} s`,
    },
    metrics: agg.pooled,
    folds: results.map((r) => ({ name: r.name, metrics: r.metrics })),
    curves,
    synthetic: isSynthetic(base.data),
  });
  log(`cv: mean UA ${(100 * agg.mean.ua).toFixed(1)}% (± ${(100 * agg.std.ua).toFixed(1)}), mean WA ${(100 * agg.mean.wa).toFixed(1)}% over ${results.length} folds, ${seconds.toFixed(0)} s -> ${flags.out}`);
  return { folds: results, mean: agg.mean, std: agg.std, seconds };
}

export function registerCv(program: Command): void {
  const cmd = program
    .command('cv')
    .description('leave-one-speaker-out (or -session-out) cross-validation: train and evaluate one model per fold')
    .requiredOption('--by <speaker|session>', 'the group held out in each fold')
    .option('--folds <g,...>', 'run only these groups (e.g. 03,08)', (v: string) => v.split(',').map((x) => x.trim()).filter(Boolean));
  addTrainOptions(cmd).action(async (flags: TrainFlags & { by: string; folds?: string[] }, c: Command) => {
    const f = givenFlags(c, flags);
    if (f.by !== 'speaker' && f.by !== 'session') throw new UserError(`--by must be speaker or session, got "${f.by}"`);
    const r = await runCv({ ...f, by: f.by });
    console.log(JSON.stringify({ mean: r.mean, std: r.std, folds: r.folds.map((x) => ({ name: x.name, ua: x.metrics.ua, wa: x.metrics.wa })), seconds: Math.round(r.seconds) }));
  });
}

export function registerEval(program: Command): void {
  program
    .command('eval')
    .description('evaluate a trained model on a labelled corpus: metrics.json, predictions.jsonl, report.html')
    .requiredOption('--model <dir>', 'a trained model folder')
    .requiredOption('--data <dir|manifest>', 'labelled corpus')
    .requiredOption('--out <dir>', 'where to write metrics.json, predictions.jsonl and report.html')
    .option('--label-map <map>', 'rename/merge/drop labels, e.g. "exc=hap,sur=-"')
    .action(async (f: { model: string; data: string; out: string; labelMap?: string }) => {
      const r = await runEval(f);
      console.log(JSON.stringify({ wa: r.metrics.wa, ua: r.metrics.ua, macro_f1: r.metrics.macro_f1, n: r.metrics.n }));
    });
}
