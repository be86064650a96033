/**
 * `eval` as a job: a model folder scored on a corpus (or the clips of it a caller names), written out as
 * metrics.json, predictions.jsonl and report.html. The CLI, the demo and cross-validation all run this.
 */
import fs from 'node:fs';
import path from 'node:path';
import { loadDataset } from '../data/dataset.ts';
import { FeatureCache } from '../features/cache.ts';
import { prepareClips } from '../features/clips.ts';
import { groupNormalization } from '../features/normalize.ts';
import { cacheRoot } from '../graph/runtime.ts';
import { EmoSLLM } from '../models/emosllm.ts';
import type { NormalizeMode } from '../models/normalize.ts';
import { UserError } from '../util/errors.ts';
import { writeFileAtomic } from '../util/fs.ts';
import { type EvalResult, evaluateClips } from './evaluate.ts';
import type { Metrics } from './metrics.ts';
import { type Curve, historyCurves, writeReport } from './report.ts';

/** metrics.json: the headline figures first, then the rest of the metrics. */
export function metricsJson(m: Metrics, extra: Record<string, unknown>): string {
  return `${JSON.stringify({ wa: m.wa, ua: m.ua, macro_f1: m.macro_f1, labels: m.labels, confusion: m.confusion, n: m.n, per_class: m.per_class, ...extra }, null, 2)}\n`;
}

function writePredictions(file: string, r: EvalResult): void {
  writeFileAtomic(file, r.predictions.map((p) => JSON.stringify(p)).join('\n') + (r.predictions.length ? '\n' : ''));
}

export interface RunEvalOptions {
  model: string;
  data: string;
  out: string;
  labelMap?: string;
  log?: (l: string) => void;
  /** group normalisation (default: the model's own, emosllm.json "normalize"); speaker statistics come from the evaluated clips */
  normalize?: NormalizeMode;
  /** extra lines for the report (a peer's figure, ...) */
  info?: Record<string, string>;
  /** evaluate only these clip ids (a held-out fold or split) */
  only?: Set<string>;
  /** features then scoring, each counted over the clips: done of 2 * clips */
  onProgress?: (done: number, total: number) => void;
}

/** Evaluates a model folder on a corpus; writes metrics.json, predictions.jsonl and report.html to `out`. */
export async function runEval(f: RunEvalOptions): Promise<EvalResult> {
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
    const prep = await prepareClips(cache, items, { onProgress: (d, t) => f.onProgress?.(d, 2 * t) });
    for (const w of prep.warnings) log(`warning: ${w}`);
    const normalize = f.normalize ?? model.normalize;
    if (normalize !== 'none') log(`eval: normalize ${normalize}${f.normalize ? '' : ' (the model\'s setting)'}`);
    const transform = await groupNormalization(cache, prep.clips, normalize, model);
    const r = await evaluateClips(model, cache, prep.clips, { transform, onProgress: (d, t) => f.onProgress?.(t + d, 2 * t) });
    fs.mkdirSync(f.out, { recursive: true });
    writeFileAtomic(path.join(f.out, 'metrics.json'), metricsJson(r.metrics, { model: path.resolve(f.model), data: path.resolve(f.data), normalize, skipped: prep.warnings }));
    writePredictions(path.join(f.out, 'predictions.jsonl'), r);
    const history = path.join(f.model, 'history.json');
    const curves: Curve[] = fs.existsSync(history) ? historyCurves(JSON.parse(fs.readFileSync(history, 'utf8')), 'training') : [];
    writeReport(path.join(f.out, 'report.html'), {
      title: 'EmoSLLM evaluation',
      info: { model: path.resolve(f.model), data: path.resolve(f.data), clips: String(r.metrics.n), corpus: ds.corpus, normalize, ...f.info },
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
