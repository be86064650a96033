import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { loadDataset } from '../data/dataset.ts';
import { formatSummary, summarizeDataset, type DatasetSummary } from '../data/summary.ts';
import { ensureSynthCorpus, type SynthOptions } from '../data/synth.ts';
import type { Dataset } from '../data/types.ts';
import { type SpeakerSplit, speakerSplit } from '../data/splits.ts';
import { peerFunctionals, runClassicalPeer } from '../eval/classical.ts';
import type { Metrics } from '../eval/metrics.ts';
import { TRAIN_CONFIG_FILE, type TrainConfigInput } from '../train/config.ts';
import { train } from '../train/trainer.ts';
import { runEval } from '../eval/run.ts';
import { progress } from './progress.ts';

export interface DemoOptions {
  /** Use this corpus (any layout `loadDataset` accepts) instead of synthesising one. */
  data?: string;
  /** Output folder (default runs/demo); the synthetic corpus goes to <out>/corpus. */
  out?: string;
  /** Synthesis parameters (tests use a smaller corpus). */
  synth?: SynthOptions;
  /** Training options over the defaults (tests train fewer steps). */
  train?: Omit<TrainConfigInput, 'data'>;
  log?: (line: string) => void;
}

/** What each step produced; later steps (training, evaluation) add their results here. */
export interface DemoState {
  out: string;
  corpusDir: string;
  modelDir: string;
  dataset?: Dataset;
  summary?: DatasetSummary;
  split?: SpeakerSplit;
  trainSeconds?: number;
  metrics?: Metrics;
  /** the classical peer (functionals + SVM) trained on the same training speakers, UA on the same test speakers */
  peerUa?: number;
}

/**
 * The demo as a list of steps, run in order: the corpus (synthesised, or --data), its summary, a
 * speaker-independent split, training (the defaults), the classical peer on the same split, evaluation on the
 * test speakers beside the peer.
 */
export async function runDemo(opts: DemoOptions = {}): Promise<DemoState> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const out = path.resolve(opts.out ?? path.join('runs', 'demo'));
  const corpusDir = opts.data ? path.resolve(opts.data) : path.join(out, 'corpus');
  // one model folder per corpus, so --data runs never pick up the synthetic corpus's model
  const modelDir = path.join(out, opts.data ? `model-${crypto.createHash('sha256').update(corpusDir).digest('hex').slice(0, 8)}` : 'model');
  const state: DemoState = { out, corpusDir, modelDir };

  const steps: Array<{ name: string; run: () => Promise<void> }> = [
    {
      name: 'corpus',
      run: async () => {
        if (opts.data) {
          log(`corpus: using ${state.corpusDir}`);
          return;
        }
        const r = await ensureSynthCorpus(state.corpusDir, {
          seed: 0,
          ...opts.synth,
          onProgress: (done, total) => {
            if (done === total || done % 50 === 0) log(`  synthesised ${done}/${total} clips`);
          },
        });
        log(
          r.reused
            ? `corpus: reusing the SYNTHETIC corpus in ${r.dir} (${r.clips} clips)`
            : `corpus: synthesised ${r.clips} SYNTHETIC clips with espeak-ng in ${r.seconds.toFixed(1)} s -> ${r.dir}`,
        );
      },
    },
    {
      name: 'summary',
      run: async () => {
        state.dataset = await loadDataset(state.corpusDir);
        state.summary = await summarizeDataset(state.dataset);
        log('');
        log(formatSummary(state.summary));
      },
    },
    {
      name: 'train',
      run: async () => {
        // speaker-independent: whole speakers for validation (model selection) and test (the reported figures)
        const split = speakerSplit(state.dataset!.items, { valid: 0.15, test: 0.3, seed: 0 });
        state.split = split;
        log('');
        log(
          `train: fbank + tiny LLM on speakers ${split.speakers.train.join(', ')} (${split.train.length} clips); ` +
            `validation ${split.speakers.valid.join(', ')} (${split.valid.length}); test ${split.speakers.test.join(', ')} (${split.test.length})`,
        );
        const bar = progress('train');
        // a second demo run continues (or reuses) the first one's model instead of refusing to overwrite it
        const resume = fs.existsSync(path.join(state.modelDir, TRAIN_CONFIG_FILE));
        if (resume) log(`train: continuing the model in ${state.modelDir} (delete it to train from scratch)`);
        try {
          const r = await train({ data: state.corpusDir, ...opts.train }, state.modelDir, {
            resume,
            items: { train: split.train, valid: split.valid },
            hooks: { log, onStep: (p) => bar.update(p.step, p.totalSteps, { loss: p.loss.toFixed(3), 'clips/s': p.samplesPerSecond.toFixed(1) }) },
          });
          state.trainSeconds = r.seconds;
        } finally {
          bar.stop();
        }
      },
    },
    {
      name: 'peer',
      run: async () => {
        // the classical baseline the built-in model is measured against (src/eval/classical.ts), same speakers
        const labels = [...new Set(state.dataset!.items.map((i) => i.label))].sort();
        const cacheDir = opts.train?.cacheDir;
        const [tr, te] = [await peerFunctionals(state.split!.train, { cacheDir }), await peerFunctionals(state.split!.test, { cacheDir })];
        state.peerUa = (await runClassicalPeer(tr, te, { speakerNorm: false, labels })).ua;
      },
    },
    {
      name: 'evaluate',
      run: async () => {
        const bar = progress('eval');
        let r;
        try {
          r = await runEval({
            model: state.modelDir,
            data: state.corpusDir,
            out: path.join(out, 'eval'),
            only: new Set(state.split!.test.map((i) => i.id)),
            info: { 'classical peer UA (same split)': `${(100 * state.peerUa!).toFixed(1)}% (functionals + RBF SVM, trained on the same speakers)` },
            log,
            onProgress: (d, t) => bar.update(d, t),
          });
        } finally {
          bar.stop();
        }
        state.metrics = r.metrics;
        log('');
        log(`demo: test speakers ${state.split!.speakers.test.join(', ')}: UA ${(100 * r.metrics.ua).toFixed(1)}%, WA ${(100 * r.metrics.wa).toFixed(1)}%, macro-F1 ${(100 * r.metrics.macro_f1).toFixed(1)}% (chance UA ${(100 / r.metrics.labels.length).toFixed(1)}%)`);
        const diff = 100 * (r.metrics.ua - state.peerUa!);
        log(`demo: the classical peer (functionals + RBF SVM) on the same split: UA ${(100 * state.peerUa!).toFixed(1)}%; the model is ${Math.abs(diff).toFixed(1)} points ${diff >= 0 ? 'above' : 'below'} it`);
        log(`demo: model in ${state.modelDir}; metrics.json and report.html in ${path.join(out, 'eval')}`);
        if (!opts.data) log('demo: the corpus is SYNTHETIC (espeak-ng prosody): these figures say the pipeline works, not how well it recognises real emotion.');
      },
    },
  ];
  for (const s of steps) await s.run();
  return state;
}

/** The options and action of `emosllm demo` (its name and description are in commands.ts). */
export function defineDemo(cmd: Command): void {
  cmd
    .option('--data <dir>', 'use this corpus (folder with manifest.csv, a manifest, or a known corpus layout) instead of synthesising one')
    .option('--out <dir>', 'output folder', path.join('runs', 'demo'))
    .action(async (o: { data?: string; out?: string }) => {
      await runDemo({ data: o.data, out: o.out });
    });
}
