import fs from 'node:fs';
import type { Command } from 'commander';
import { type TrainConfig, defaultTrainConfig, train } from '../train/trainer.ts';
import { UserError } from '../util/errors.ts';
import { downloadProgress, progress } from './progress.ts';

const int = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n)) throw new UserError(`${name} must be an integer, got "${v}"`);
  return n;
};
const num = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UserError(`${name} must be a number, got "${v}"`);
  return n;
};
const list = (v: string) => v.split(',').map((s) => s.trim()).filter(Boolean);

export interface TrainFlags {
  data?: string;
  out: string;
  config?: string;
  resume?: boolean;
  validData?: string;
  validFraction?: number;
  labelMap?: string;
  labels?: string[];
  encoder?: string;
  fbankStack?: number;
  fbankCmvn?: boolean;
  featureNorm?: boolean;
  encoderLayers?: string[];
  llm?: string;
  llmTrain?: string;
  loraR?: number;
  loraAlpha?: number;
  loraTargets?: string[];
  mapperWidth?: number;
  mapperHeads?: number;
  mapperLayers?: number;
  queries?: number;
  transcript?: boolean;
  epochs?: number;
  steps?: number;
  batchSize?: number;
  gradAccum?: number;
  lr?: number;
  warmup?: number;
  weightDecay?: number;
  clip?: number;
  balance?: boolean;
  bucket?: boolean;
  augment?: boolean;
  cropSeconds?: number;
  evalEvery?: number;
  checkpointEvery?: number;
  keepLast?: number;
  patience?: number;
  seed?: number;
  cacheDir?: string;
}

/**
 * The flags the user gave: commander fills in defaults for `--no-x` switches, which would override the
 * --config file and the configuration's own defaults.
 */
export function givenFlags<T extends object>(cmd: Command, f: T): T {
  return Object.fromEntries(Object.entries(f).filter(([k]) => cmd.getOptionValueSource(k) !== 'default')) as T;
}

/** The run configuration: defaults, then the --config file, then flags. */
export function trainConfigFromFlags(f: TrainFlags): TrainConfig {
  let fromFile: Partial<TrainConfig> = {};
  if (f.config) {
    try {
      fromFile = JSON.parse(fs.readFileSync(f.config, 'utf8'));
    } catch (e) {
      throw new UserError(`cannot read the config file: ${(e as Error).message.split('\n')[0]}`, f.config);
    }
  }
  const data = f.data ?? fromFile.data;
  if (!data) throw new UserError('--data is required (a corpus folder or manifest)');
  const llm = f.llm ?? fromFile.llm ?? 'tiny';
  const base = defaultTrainConfig({ data, llm, ...fromFile });
  const set = <K extends keyof TrainConfig>(k: K, v: TrainConfig[K] | undefined) => {
    if (v !== undefined) base[k] = v;
  };
  set('validData', f.validData);
  set('validFraction', f.validFraction);
  set('labelMap', f.labelMap);
  set('labels', f.labels);
  set('encoder', f.encoder);
  set('fbankStack', f.fbankStack);
  set('fbankCmvn', f.fbankCmvn);
  set('featureNorm', f.featureNorm);
  set('encoderLayers', f.encoderLayers?.map(int('--encoder-layers')));
  set('llmTrain', f.llmTrain as TrainConfig['llmTrain'] | undefined);
  base.lora = { r: f.loraR ?? base.lora.r, alpha: f.loraAlpha ?? base.lora.alpha, targetModules: f.loraTargets ?? base.lora.targetModules };
  base.mapper = {
    dModel: f.mapperWidth ?? base.mapper.dModel,
    numHeads: f.mapperHeads ?? base.mapper.numHeads,
    numLayers: f.mapperLayers ?? base.mapper.numLayers,
    nQueries: f.queries ?? base.mapper.nQueries,
  };
  set('useTranscript', f.transcript);
  set('epochs', f.epochs);
  set('maxSteps', f.steps);
  set('batchSize', f.batchSize);
  set('gradAccum', f.gradAccum);
  set('lr', f.lr);
  set('warmupRatio', f.warmup);
  set('weightDecay', f.weightDecay);
  set('clipNorm', f.clip);
  set('balance', f.balance);
  set('bucket', f.bucket);
  set('augment', f.augment);
  set('cropSeconds', f.cropSeconds);
  set('evalEvery', f.evalEvery);
  set('checkpointEvery', f.checkpointEvery);
  set('keepLast', f.keepLast);
  set('patience', f.patience);
  set('seed', f.seed);
  set('cacheDir', f.cacheDir);
  return base;
}

/** Runs training with a progress bar (or lines, off a terminal). */
export async function runTrain(f: TrainFlags) {
  const config = f.resume ? defaultTrainConfig({ data: f.data ?? '' }) : trainConfigFromFlags(f);
  const features = progress('features');
  const bar = progress('train');
  const download = downloadProgress();
  try {
    return await train(config, f.out, {
      resume: f.resume,
      hooks: {
        onDownload: (p) => download.update(p),
        onFeatures: (d, t) => {
          download.stop();
          features.update(d, t);
        },
        onStep: (p) =>
          bar.update(p.step, p.totalSteps, { epoch: String(p.epoch), loss: p.loss.toFixed(4), 'clips/s': p.samplesPerSecond.toFixed(1) }),
      },
    });
  } finally {
    download.stop();
    features.stop();
    bar.stop();
  }
}

/** The training options, shared by `train` and `cv`. */
export function addTrainOptions(cmd: Command): Command {
  return cmd
    .option('--data <dir|manifest>', 'training corpus: a folder with manifest.csv, a manifest, or a known corpus layout')
    .requiredOption('--out <dir>', 'run folder (checkpoints, history, and the trained model)')
    .option('--config <file>', 'JSON file with training options (the keys of train_config.json); flags override it')
    .option('--valid-data <dir|manifest>', 'validation corpus (default: speakers held out of --data)')
    .option('--valid-fraction <f>', 'fraction of training speakers held out for validation (default 0.15)', num('--valid-fraction'))
    .option('--label-map <map>', 'rename/merge/drop labels, e.g. "exc=hap,sur=-"')
    .option('--labels <a,b,...>', 'label set (default: the labels of the training data)', list)
    .option('--encoder <fbank|dir|id>', 'speech encoder: the built-in fbank, or a Hugging Face wav2vec2/HuBERT/WavLM folder or Hub id org/name[@rev] (default fbank)')
    .option('--fbank-stack <n>', 'fbank frames concatenated per mapper frame (default 4)', int('--fbank-stack'))
    .option('--fbank-cmvn', 'fbank with per-utterance mean/variance normalisation (default off: it removes loudness cues)')
    .option('--no-feature-norm', "do not normalise encoder channels with the training data's mean and std")
    .option('--encoder-layers <i,j,...>', 'encoder hidden states mixed by the mapper (default all)', list)
    .option('--llm <tiny|dir|id>', 'LLM: the built-in tiny Llama, or a Llama checkpoint folder or Hub id org/name[@rev] (default tiny)')
    .option('--llm-train <lora|full|frozen>', 'how the LLM is adapted (default: full for tiny, lora otherwise)')
    .option('--lora-r <r>', 'LoRA rank (default 8)', int('--lora-r'))
    .option('--lora-alpha <a>', 'LoRA alpha (default 16)', num('--lora-alpha'))
    .option('--lora-targets <m,...>', 'LoRA target modules (default q_proj,v_proj)', list)
    .option('--mapper-width <d>', 'QPMapper width (default 768; 256 with the tiny LLM)', int('--mapper-width'))
    .option('--mapper-heads <h>', 'QPMapper attention heads (default 8; 4 with the tiny LLM)', int('--mapper-heads'))
    .option('--mapper-layers <n>', 'QPMapper transformer layers (default 2)', int('--mapper-layers'))
    .option('--queries <n>', 'number of audio tokens n_q (default 32)', int('--queries'))
    .option('--transcript', 'put transcripts in the prompt (default with a real LLM)')
    .option('--no-transcript', 'no transcripts in the prompt (default with the tiny LLM)')
    .option('--epochs <n>', 'epochs (default 20 with the tiny LLM, 10 otherwise)', int('--epochs'))
    .option('--steps <n>', 'stop after this many optimiser steps', int('--steps'))
    .option('--batch-size <n>', 'clips per micro-batch (default 16)', int('--batch-size'))
    .option('--grad-accum <n>', 'micro-batches per optimiser step (default 1)', int('--grad-accum'))
    .option('--lr <lr>', 'peak learning rate (default 1e-3 tiny, 1e-4 otherwise)', num('--lr'))
    .option('--warmup <f>', 'warmup as a fraction of all steps (default 0.05)', num('--warmup'))
    .option('--weight-decay <w>', 'AdamW weight decay (default 0.01)', num('--weight-decay'))
    .option('--clip <norm>', 'global gradient-norm clipping (default 1.0)', num('--clip'))
    .option('--no-balance', 'plain shuffling instead of class-balanced sampling')
    .option('--no-bucket', 'no length bucketing')
    .option('--no-augment', 'no SpecAugment-style masking of training crops')
    .option('--crop-seconds <s>', 'training crop length (default 3)', num('--crop-seconds'))
    .option('--eval-every <steps>', 'validate every N steps (default: every epoch)', int('--eval-every'))
    .option('--checkpoint-every <steps>', 'checkpoint every N steps (default: every epoch)', int('--checkpoint-every'))
    .option('--keep-last <k>', 'checkpoints kept besides the best (default 2)', int('--keep-last'))
    .option('--patience <n>', 'early stop after N validations without a better UA (default 8; 0 = off)', int('--patience'))
    .option('--seed <n>', 'seed of every random choice (default 0)', int('--seed'))
    .option('--cache-dir <dir>', 'cache root for features and compiled graphs (default ~/.cache/emosllm)');
}

/** The options and action of `emosllm train` (its name and description are in commands.ts). */
export function defineTrain(cmd: Command): void {
  addTrainOptions(cmd)
    .option('--resume', 'continue the run in --out exactly where its last checkpoint stopped')
    .action(async (flags: TrainFlags, cmd: Command) => {
      const f = givenFlags(cmd, flags);
      if (f.cacheDir) process.env.EMOSLLM_CACHE_DIR = f.cacheDir;
      const r = await runTrain(f);
      console.log(JSON.stringify({ out: r.out, steps: r.steps, ...(r.resumedFrom !== undefined ? { resumed_from: r.resumedFrom } : {}), steps_run: r.stepsRun, best_step: r.bestStep, valid_ua: r.valid?.metrics.ua ?? null, valid_wa: r.valid?.metrics.wa ?? null, seconds: Math.round(r.seconds) }));
    });
}
