/**
 * The training configuration, once: this zod schema gives the TypeScript type, the defaults, the validation
 * (one-line errors naming the file or flag and the field) and the `train` / `cv` command-line options, which
 * cli/train.ts builds from the fields' metadata. A new field is one line here: a schema with its `.default()`
 * (or `.optional()`) and `.meta({ description })`; it gets a flag `--kebab-name` unless `flag` names another
 * one or `cli: false` keeps it to config files.
 *
 * Defaults that depend on the LLM (the built-in tiny LLM is small, random and cannot read; a real one is
 * pretrained) come from `llmDefaults`, filled in before validation.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as z from 'zod';
import { UserError } from '../util/errors.ts';
import { readJsonObject } from '../util/fs.ts';
import { parseOrThrow } from '../util/schema.ts';

declare module 'zod' {
  interface GlobalMeta {
    /** the command-line flag without `--` (default: the field's name in kebab-case) */
    flag?: string;
    /** the flag's value placeholder (default from the type) */
    arg?: string;
    /** false: config files only, no flag */
    cli?: false;
  }
}

const posInt = () => z.int().positive();
const count = () => z.int().nonnegative();
const names = () => z.array(z.string().min(1)).min(1);

/** Defaults that depend on `llm`: 'tiny' (built-in) or a checkpoint folder. */
export function llmDefaults(llm: string) {
  const tiny = llm === 'tiny';
  return {
    // a random LLM has nothing to keep: train it in full (every weight but the token embeddings)
    llmTrain: tiny ? 'full' : 'lora',
    // the paper's mapper for real LLMs; a narrower one for the tiny LLM, whose width is 128
    mapper: { dModel: tiny ? 256 : 768, numHeads: tiny ? 4 : 8 },
    // the tiny LLM starts from random weights and cannot read: to it a transcript is tokens to memorise
    // (emodb-dev leave-one-speaker-out, first four folds: mean UA 53% without, 49% with)
    useTranscript: !tiny,
    epochs: tiny ? 20 : 10,
    lr: tiny ? 1e-3 : 1e-4,
  } as const;
}

/** Every field (the CLI walks them for its options); those in `llmDefaults` have no `.default()` here. */
export const TrainConfigFields = z.strictObject({
  data: z.string().min(1).meta({ description: 'training corpus: a folder with manifest.csv, a manifest, or a known corpus layout', arg: 'dir|manifest' }),
  validData: z.string().min(1).optional().meta({ description: 'validation corpus (default: speakers held out of --data)', arg: 'dir|manifest' }),
  validFraction: z.number().min(0).lt(1).default(0.15).meta({ description: 'fraction of the training speakers held out for validation when there is no --valid-data (0 = none)' }),
  labelMap: z.string().optional().meta({ description: 'rename/merge/drop labels, e.g. "exc=hap,sur=-"', arg: 'map' }),
  labels: names().optional().meta({ description: 'label set (default: the labels of the training data, sorted)' }),
  // log-mel + MFCCs + pitch/voicing/energy (frame-encoders.ts): emodb-dev leave-one-speaker-out, see the README
  encoder: z.string().min(1).default('fbank+mfcc+prosody').meta({ description: "speech encoder: built-in frame features joined with '+' (fbank, mfcc, prosody: e.g. fbank+prosody), or a Hugging Face wav2vec2/HuBERT/WavLM folder or Hub id org/name[@rev]", arg: 'name|dir|id' }),
  fbankStack: posInt().default(4).meta({ description: 'built-in encoders only: frames concatenated per mapper frame (100 fps / stack)' }),
  // absolute level and spectral tilt carry arousal: keep them (no per-utterance CMVN) and normalise each
  // channel with training-set statistics instead (measured on emodb-dev, one held-out speaker: validation UA
  // 55% against 41% with CMVN)
  fbankCmvn: z.boolean().default(false).meta({ description: 'fbank only: per-utterance mean/variance normalisation of the log-mel bins (removes loudness cues)' }),
  normalize: z
    .enum(['none', 'speaker', 'recording'])
    .default('none')
    .meta({ description: "group normalisation of the encoder states, stored with the model: each speaker's clips (manifest column) or each recording on its own statistics", arg: 'none|speaker|recording' }),
  statDropout: z.number().min(0).lt(1).default(0).meta({ description: "dropout of the stat token's inputs during training" }),
  statToken: z.boolean().default(true).meta({ description: "a mapper token of the clip's utterance functionals (mean, std, min, max, percentiles, mean |delta| of every channel)" }),
  featureNorm: z.boolean().default(true).meta({ description: "normalise each encoder channel with the training data's mean and std (stored with the model)" }),
  encoderLayers: z.array(count()).min(1).optional().meta({ description: 'encoder hidden states mixed by the mapper (default all)', arg: 'i,j,...' }),
  llm: z.string().min(1).default('tiny').meta({ description: 'LLM: the built-in tiny Llama, or a Llama checkpoint folder or Hub id org/name[@rev]', arg: 'tiny|dir|id' }),
  tinyLlm: z.strictObject({ hiddenSize: posInt(), layers: posInt(), heads: posInt() }).optional().meta({ description: 'size of the built-in tiny LLM', cli: false }),
  llmTrain: z.enum(['lora', 'full', 'frozen']).meta({ description: 'how the LLM is adapted' }),
  quantize: z.enum(['int8', 'int4']).optional().meta({ description: "quantise the frozen LLM's linear layers and embeddings (int8 per channel, int4 in 32x32 tiles); LoRA, mapper, norms and loss stay float32 (not with --llm-train full)" }),
  lora: z
    .strictObject({
      r: posInt().default(8).meta({ description: 'LoRA rank', flag: 'lora-r' }),
      alpha: z.number().positive().default(16).meta({ description: 'LoRA alpha', flag: 'lora-alpha' }),
      targetModules: names().default(['q_proj', 'v_proj']).meta({ description: 'LoRA target modules', flag: 'lora-targets' }),
    })
    .prefault({}),
  mapper: z.strictObject({
    dModel: posInt().meta({ description: 'QPMapper width', flag: 'mapper-width' }),
    numHeads: posInt().meta({ description: 'QPMapper attention heads', flag: 'mapper-heads' }),
    numLayers: posInt().default(2).meta({ description: 'QPMapper transformer layers', flag: 'mapper-layers' }),
    nQueries: posInt().default(32).meta({ description: 'number of audio tokens n_q', flag: 'queries' }),
  }),
  useTranscript: z.boolean().meta({ description: 'put transcripts in the prompt', flag: 'transcript' }),
  epochs: posInt().meta({ description: 'epochs' }),
  maxSteps: posInt().optional().meta({ description: 'stop after this many optimiser steps (default: the epochs)', flag: 'steps' }),
  batchSize: posInt().default(16).meta({ description: 'clips per micro-batch' }),
  gradAccum: posInt().default(1).meta({ description: 'micro-batches per optimiser step' }),
  lr: z.number().positive().meta({ description: 'peak learning rate' }),
  warmupRatio: z.number().min(0).max(1).default(0.05).meta({ description: 'warmup as a fraction of all steps', flag: 'warmup' }),
  weightDecay: z.number().nonnegative().default(0.01).meta({ description: 'AdamW weight decay' }),
  clipNorm: z.number().positive().default(1.0).meta({ description: 'global gradient-norm clipping', flag: 'clip' }),
  balance: z.boolean().default(true).meta({ description: 'class-balanced sampling (instead of plain shuffling)' }),
  bucket: z.boolean().default(true).meta({ description: 'length bucketing of micro-batches' }),
  // off by default: a masked band collapses the stat token's functionals of those channels (std 0, min = max), a
  // train/test mismatch that cost 23-38 UA points on emodb-dev's held-out speakers 03 and 08 (README)
  augment: z.boolean().default(false).meta({ description: 'SpecAugment-style channel and time masking of training crops' }),
  cropSeconds: z.number().positive().default(3).meta({ description: 'training crop length in seconds' }),
  evalEvery: count().default(0).meta({ description: 'validate every N steps (0: at the end of every epoch)' }),
  checkpointEvery: count().default(0).meta({ description: 'checkpoint every N steps (0: at the end of every epoch)' }),
  keepLast: posInt().default(2).meta({ description: 'checkpoints kept besides the best' }),
  patience: count().default(8).meta({ description: 'early stop after N validations without a better UA (0: never)' }),
  seed: z.int().default(0).meta({ description: 'seed of every random choice' }),
  cacheDir: z.string().min(1).optional().meta({ description: 'cache root for features and compiled graphs (default ~/.cache/emosllm)', arg: 'dir' }),
});

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The input with the LLM-dependent defaults filled in where it has none (nested objects field by field). */
function withLlmDefaults(input: unknown): unknown {
  if (!isObject(input)) return input;
  const out: Record<string, unknown> = { ...input };
  for (const [k, d] of Object.entries(llmDefaults(typeof input.llm === 'string' ? input.llm : 'tiny'))) {
    if (isObject(d)) out[k] = isObject(input[k]) || input[k] === undefined ? { ...d, ...(input[k] as object | undefined) } : input[k];
    else if (input[k] === undefined) out[k] = d;
  }
  return out;
}

export const TrainConfigSchema = z.preprocess(withLlmDefaults, TrainConfigFields);

export type TrainConfig = z.output<typeof TrainConfigFields>;
type Given = z.input<typeof TrainConfigFields>;
type LlmDefaulted = keyof ReturnType<typeof llmDefaults>;
/** What a caller gives: `data`, and any other field (nested objects in part); the rest are defaults. */
export type TrainConfigInput = Omit<Given, LlmDefaulted> & { [K in LlmDefaulted]?: Given[K] extends object ? Partial<Given[K]> : Given[K] };

/** The full configuration from what is given; a bad field is a one-line UserError naming `where` and the field. */
export function defaultTrainConfig(input: TrainConfigInput, where: Parameters<typeof parseOrThrow>[2] = 'training configuration'): TrainConfig {
  return parseOrThrow(TrainConfigSchema, input, where);
}

export const TRAIN_CONFIG_FILE = 'train_config.json';

/**
 * Reads a run's saved configuration (for --resume). A field the file lacks (written before the field existed)
 * takes today's default, the same one a new run gets; a bad or unknown field is a one-line error naming the file.
 */
export function readTrainConfig(runDir: string): TrainConfig {
  const file = path.join(runDir, TRAIN_CONFIG_FILE);
  if (!fs.existsSync(file)) throw new UserError(`no ${TRAIN_CONFIG_FILE}: nothing to resume here`, runDir);
  return parseOrThrow(TrainConfigSchema, readJsonObject(file), file);
}
