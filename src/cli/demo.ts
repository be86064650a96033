import path from 'node:path';
import type { Command } from 'commander';
import { loadDataset } from '../data/dataset.ts';
import { formatSummary, summarizeDataset, type DatasetSummary } from '../data/summary.ts';
import { ensureSynthCorpus, type SynthOptions } from '../data/synth.ts';
import type { Dataset } from '../data/types.ts';

export interface DemoOptions {
  /** Use this corpus (any layout `loadDataset` accepts) instead of synthesising one. */
  data?: string;
  /** Output folder (default runs/demo); the synthetic corpus goes to <out>/corpus. */
  out?: string;
  /** Synthesis parameters (tests use a smaller corpus). */
  synth?: SynthOptions;
  log?: (line: string) => void;
}

/** What each step produced; later steps (training, evaluation) add their results here. */
export interface DemoState {
  out: string;
  corpusDir: string;
  dataset?: Dataset;
  summary?: DatasetSummary;
}

/**
 * The demo as a list of steps, run in order. Training and evaluation will be added as further steps
 * (`train`, `evaluate`) that read `state.dataset` and write under `state.out`.
 */
export async function runDemo(opts: DemoOptions = {}): Promise<DemoState> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const out = path.resolve(opts.out ?? path.join('runs', 'demo'));
  const state: DemoState = { out, corpusDir: opts.data ? path.resolve(opts.data) : path.join(out, 'corpus') };

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
        log('');
        log('train/evaluate: not built yet. Training and evaluating EmoSLLM on this corpus come with the EmoSLLM model work;');
        log('this demo currently stops after preparing and summarising the data.');
      },
    },
  ];
  for (const s of steps) await s.run();
  return state;
}

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('synthesise a small labelled corpus (or use --data), summarise it; training/evaluation are not built yet')
    .option('--data <dir>', 'use this corpus (folder with manifest.csv, a manifest, or a known corpus layout) instead of synthesising one')
    .option('--out <dir>', 'output folder', path.join('runs', 'demo'))
    .action(async (o: { data?: string; out?: string }) => {
      await runDemo({ data: o.data, out: o.out });
    });
}
