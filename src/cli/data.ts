import type { Command } from 'commander';
import { UserError } from '../util/errors.ts';
import { loadDataset } from '../data/dataset.ts';
import { formatSummary, summarizeDataset } from '../data/summary.ts';
import { CORPUS_KINDS, type CorpusKind } from '../data/types.ts';

export interface DataSummaryOptions {
  json?: boolean;
  corpus?: string;
  labelMap?: string;
  skipInvalid?: boolean;
  durations?: boolean;
}

/** `emosllm data summary`: load a corpus (any supported layout) and print its statistics. */
export async function dataSummary(spec: string, opts: DataSummaryOptions, out: (s: string) => void = console.log): Promise<void> {
  if (opts.corpus !== undefined && !CORPUS_KINDS.includes(opts.corpus as CorpusKind)) {
    throw new UserError(`--corpus must be one of ${CORPUS_KINDS.join(', ')}, got ${JSON.stringify(opts.corpus)}`);
  }
  const ds = await loadDataset(spec, {
    corpus: opts.corpus as CorpusKind | undefined,
    labelMap: opts.labelMap,
    onInvalid: opts.skipInvalid ? 'skip' : 'error',
  });
  const summary = await summarizeDataset(ds, { durations: opts.durations ?? true });
  out(opts.json ? JSON.stringify(summary, null, 2) : formatSummary(summary));
}

/** The options and action of `emosllm data` (its name and description are in commands.ts). */
export function defineData(data: Command): void {
  data
    .command('summary')
    .description('clips per label and per speaker, and clip durations, of a corpus folder or manifest')
    .argument('<dir|manifest>', 'a folder (with manifest.csv, or in a known corpus layout) or a .csv/.jsonl manifest')
    .option('--json', 'print the summary as JSON')
    .option('--corpus <kind>', `force the layout instead of detecting it (${CORPUS_KINDS.join(', ')})`)
    .option('--label-map <map>', 'rename/merge/drop labels, e.g. "exc=hap,sur=-" or a JSON object')
    .option('--skip-invalid', 'skip clips whose name/metadata does not parse (default: stop at the first)')
    .option('--no-durations', 'do not read clip durations')
    .action(async (spec: string, opts: DataSummaryOptions) => {
      await dataSummary(spec, opts);
    });
}
