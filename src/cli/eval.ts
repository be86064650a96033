import type { Command } from 'commander';
import { runCv } from '../eval/cv.ts';
import { type RunEvalOptions, runEval } from '../eval/run.ts';
import { train } from '../train/trainer.ts';
import { normalizeFlag } from '../models/normalize.ts';
import { UserError } from '../util/errors.ts';
import { addTrainOptions, trainConfigFromCommand } from './train.ts';
import { trainedModelFolder } from './hub.ts';
import { progress } from './progress.ts';

/** `eval` with a progress bar. */
async function evalWithProgress(f: RunEvalOptions) {
  const bar = progress('eval');
  try {
    return await runEval({ ...f, onProgress: (d, t) => bar.update(d, t) });
  } finally {
    bar.stop();
  }
}

/** The options and action of `emosllm cv` (its name and description are in commands.ts). */
export function defineCv(cmd: Command): void {
  cmd
    .requiredOption('--by <speaker|session>', 'the group held out in each fold')
    .option('--folds <g,...>', 'run only these groups (e.g. 03,08)', (v: string) => v.split(',').map((x) => x.trim()).filter(Boolean));
  addTrainOptions(cmd).action(async (f: { by: string; folds?: string[]; out: string }, c: Command) => {
    if (f.by !== 'speaker' && f.by !== 'session') throw new UserError(`--by must be speaker or session, got "${f.by}"`);
    const base = trainConfigFromCommand(c);
    const r = await runCv({
      data: base.data,
      labelMap: base.labelMap,
      labels: base.labels,
      by: f.by,
      folds: f.folds,
      out: f.out,
      info: { encoder: base.encoder, llm: base.llm },
      trainFold: (fold) => train({ ...base, labels: fold.labels }, fold.dir, { resume: fold.resume, items: { train: fold.train }, hooks: { log: fold.log } }),
    });
    console.log(JSON.stringify({ mean: r.mean, std: r.std, folds: r.folds.map((x) => ({ name: x.name, ua: x.metrics.ua, wa: x.metrics.wa })), seconds: Math.round(r.seconds) }));
  });
}

/** The options and action of `emosllm eval` (its name and description are in commands.ts). */
export function defineEval(cmd: Command): void {
  cmd
    .requiredOption('--model <dir|id>', 'a trained model folder, or a Hub id org/name[@rev] of one')
    .requiredOption('--data <dir|manifest>', 'labelled corpus')
    .requiredOption('--out <dir>', 'where to write metrics.json, predictions.jsonl and report.html')
    .option('--label-map <map>', 'rename/merge/drop labels, e.g. "exc=hap,sur=-"')
    .option('--normalize <none|speaker|recording>', "group normalisation of the encoder states (default: the model's own); speaker statistics come from each speaker's clips in --data")
    .action(async (f: { model: string; data: string; out: string; labelMap?: string; normalize?: string }) => {
      const r = await evalWithProgress({ ...f, model: await trainedModelFolder(f.model), normalize: normalizeFlag(f.normalize) });
      console.log(JSON.stringify({ wa: r.metrics.wa, ua: r.metrics.ua, macro_f1: r.metrics.macro_f1, n: r.metrics.n }));
    });
}
