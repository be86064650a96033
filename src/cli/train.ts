import { type Command, Option } from 'commander';
import * as z from 'zod';
import { type TrainConfig, type TrainConfigInput, TrainConfigFields, defaultTrainConfig, llmDefaults, readTrainConfig } from '../train/config.ts';
import { train } from '../train/trainer.ts';
import { readJsonObject } from '../util/fs.ts';
import { downloadProgress, progress } from './progress.ts';

/** A training option on the command line: the commander option and the config field it sets. */
interface ConfigFlag {
  option: Option;
  /** the field's path in the config, e.g. ['lora', 'r'] */
  path: string[];
  /** the flag's text value to the field's value (switches pass booleans through) */
  parse: (v: unknown) => unknown;
}

const kebab = (s: string) => s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
const show = (v: unknown) => (typeof v === 'boolean' ? (v ? 'on' : 'off') : Array.isArray(v) ? v.join(',') : String(v));
const list = (v: unknown) => String(v).split(',').map((s) => s.trim()).filter(Boolean);

/** The schema under .optional() / .default() / .prefault(), and its constant default if any. */
function unwrap(s: z.ZodType): { base: z.ZodType; fallback?: unknown } {
  let base = s;
  let fallback: unknown;
  for (;;) {
    const def = base.def as { type: string; innerType?: z.ZodType; defaultValue?: unknown };
    if (def.type === 'default' || def.type === 'prefault') fallback ??= def.defaultValue;
    else if (def.type !== 'optional') return { base, fallback };
    base = def.innerType!;
  }
}

function valueAt(o: unknown, p: string[]): unknown {
  return p.reduce<unknown>((v, k) => (v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined), o);
}

/** The flags, built from the config schema's fields (descriptions, types, defaults); nested objects flattened. */
function configFlags(shape: Record<string, z.ZodType> = TrainConfigFields.shape, prefix: string[] = []): ConfigFlag[] {
  const flags: ConfigFlag[] = [];
  const tiny = llmDefaults('tiny');
  const real = llmDefaults('');
  for (const [key, field] of Object.entries(shape)) {
    const meta = field.meta() ?? {};
    const p = [...prefix, key];
    const { base, fallback } = unwrap(field);
    if (meta.cli === false) continue;
    if (base instanceof z.ZodObject) {
      flags.push(...configFlags(base.shape as Record<string, z.ZodType>, p));
      continue;
    }
    const [tinyValue, realValue] = [valueAt(tiny, p), valueAt(real, p)];
    const byLlm = tinyValue !== undefined;
    const name = meta.flag ?? kebab(key);
    const help = meta.description ?? key;
    const shown = byLlm
      ? tinyValue === realValue
        ? ` (default ${show(tinyValue)})`
        : ` (default ${show(tinyValue)} with the tiny LLM, ${show(realValue)} otherwise)`
      : fallback !== undefined && (typeof fallback !== 'object' || Array.isArray(fallback))
        ? ` (default ${show(fallback)})`
        : '';
    if (base instanceof z.ZodBoolean) {
      const same = { path: p, parse: (v: unknown) => v };
      if (byLlm) {
        flags.push({ ...same, option: new Option(`--${name}`, help + shown) });
        flags.push({ ...same, option: new Option(`--no-${name}`, `the opposite of --${name}`) });
      } else flags.push({ ...same, option: fallback === true ? new Option(`--no-${name}`, `turn off: ${help}${shown}`) : new Option(`--${name}`, help + shown) });
      continue;
    }
    const element = base instanceof z.ZodArray ? unwrap(base.element as z.ZodType).base : undefined;
    const arg =
      meta.arg ?? (base instanceof z.ZodEnum ? base.options.join('|') : element ? (element instanceof z.ZodNumber ? 'i,j,...' : 'a,b,...') : base instanceof z.ZodNumber ? 'n' : 'value');
    const parse = element
      ? (v: unknown) => list(v).map((x) => (element instanceof z.ZodNumber ? Number(x) : x))
      : base instanceof z.ZodNumber
        ? (v: unknown) => Number(v)
        : (v: unknown) => v;
    flags.push({ path: p, parse, option: new Option(`--${name} <${arg}>`, help + shown) });
  }
  return flags;
}

const CONFIG_FLAGS = configFlags();

function setAt(o: Record<string, unknown>, p: string[], v: unknown): void {
  let at = o;
  for (const k of p.slice(0, -1)) {
    const next = at[k];
    at = at[k] = next && typeof next === 'object' && !Array.isArray(next) ? { ...(next as object) } : {};
  }
  at[p[p.length - 1]] = v;
}

const startsWith = (p: PropertyKey[], prefix: string[]) => prefix.every((k, i) => p[i] === k);

/**
 * The run configuration from a command's options: the schema's defaults, then the --config file, then the flags
 * the user gave (commander's own defaults for `--no-x` switches would override the file). A bad value is a
 * one-line error naming the flag, or the file, and the field.
 */
export function trainConfigFromCommand(cmd: Command): TrainConfig {
  const opts = cmd.opts();
  const file = opts.config as string | undefined;
  const input = file ? readJsonObject(file) : {};
  const given: ConfigFlag[] = [];
  for (const f of CONFIG_FLAGS) {
    const attr = f.option.attributeName();
    if (cmd.getOptionValueSource(attr) !== 'cli') continue;
    setAt(input, f.path, f.parse(opts[attr]));
    given.push(f);
  }
  const flagOf = (flags: ConfigFlag[], p: PropertyKey[]) => flags.find((f) => startsWith(p, f.path))?.option.long;
  return defaultTrainConfig(input as TrainConfigInput, (p) => flagOf(given, p) ?? file ?? flagOf(CONFIG_FLAGS, p));
}

/** Runs training with a progress bar (or lines, off a terminal). */
export async function runTrain(config: TrainConfig, out: string, resume: boolean) {
  const download = downloadProgress();
  const features = progress('features');
  const bar = progress('train');
  try {
    return await train(config, out, {
      resume,
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

/** The training options, shared by `train` and `cv`: --out, --config and one flag per config field. */
export function addTrainOptions(cmd: Command): Command {
  cmd
    .requiredOption('--out <dir>', 'run folder (checkpoints, history, and the trained model)')
    .option('--config <file>', 'JSON file with training options (the keys of train_config.json); flags override it');
  for (const f of CONFIG_FLAGS) cmd.addOption(f.option);
  return cmd;
}

/** The options and action of `emosllm train` (its name and description are in commands.ts). */
export function defineTrain(cmd: Command): void {
  addTrainOptions(cmd)
    .option('--resume', 'continue the run in --out exactly where its last checkpoint stopped (with its saved configuration)')
    .action(async (flags: { out: string; resume?: boolean }, c: Command) => {
      const config = flags.resume ? readTrainConfig(flags.out) : trainConfigFromCommand(c);
      if (config.cacheDir) process.env.EMOSLLM_CACHE_DIR = config.cacheDir;
      const r = await runTrain(config, flags.out, flags.resume === true);
      console.log(JSON.stringify({ out: r.out, steps: r.steps, ...(r.resumedFrom !== undefined ? { resumed_from: r.resumedFrom } : {}), steps_run: r.stepsRun, best_step: r.bestStep, valid_ua: r.valid?.metrics.ua ?? null, valid_wa: r.valid?.metrics.wa ?? null, seconds: Math.round(r.seconds) }));
    });
}
