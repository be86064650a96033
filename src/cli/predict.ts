import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { loadAudio16k } from '../audio/decode.ts';
import { firstColumn, toCsv } from '../data/csv.ts';
import { isAudioFile, walkFiles } from '../data/scan.ts';
import { SEGMENT_MODES, type SegmentMode } from '../audio/segments.ts';
import { type PredictOptions, gatherSpeakerStats, predictSamples } from '../eval/predict.ts';
import { EmoSLLM } from '../models/emosllm.ts';
import { normalizeFlag } from '../models/normalize.ts';
import { UserError, oneLine } from '../util/errors.ts';
import { trainedModelFolder } from './hub.ts';
import { progress } from './progress.ts';

export interface PredictFlags {
  model: string;
  out?: string;
  format?: 'jsonl' | 'csv';
  labels?: string;
  transcript?: string;
  segment?: SegmentMode;
  window?: string;
  hop?: string;
  maxSeconds?: string;
  normalize?: string;
}

/** Audio files named on the command line; folders are walked (sorted, so runs are repeatable). */
export function expandInputs(inputs: string[]): string[] {
  const files: string[] = [];
  for (const p of inputs) {
    const st = fs.statSync(p, { throwIfNoEntry: false });
    if (!st) throw new UserError('no such file or folder', p);
    if (st.isDirectory()) files.push(...walkFiles(p).filter(isAudioFile).sort());
    else files.push(p);
  }
  return files;
}

/**
 * Lines already in a results file (JSONL: one object per line with "file"; CSV: first column). A last line
 * cut short by a crash is dropped (and truncated away), so a resumed run redoes exactly that file.
 */
export function doneFiles(out: string, format: 'jsonl' | 'csv'): Set<string> {
  const done = new Set<string>();
  if (!fs.existsSync(out)) return done;
  const text = fs.readFileSync(out, 'utf8');
  let keep = 0;
  let pos = 0;
  for (const line of text.split('\n')) {
    const end = pos + line.length + 1;
    if (end > text.length) break; // no newline: an unfinished line
    if (line.trim()) {
      let file: string | undefined;
      if (format === 'jsonl') {
        try {
          file = JSON.parse(line).file;
        } catch {
          throw new UserError(`line ${text.slice(0, pos).split('\n').length} is not JSON: not a results file of emosllm predict?`, out);
        }
      } else file = firstColumn(line, out)[0];
      if (file && file !== 'file') done.add(file);
    }
    keep = end;
    pos = end;
  }
  if (keep < Buffer.byteLength(text)) fs.truncateSync(out, Buffer.byteLength(text.slice(0, keep)));
  return done;
}

const num = (name: string, v: string | undefined) => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!(n > 0)) throw new UserError(`${name} must be a positive number of seconds, got "${v}"`);
  return n;
};

export async function runPredict(inputs: string[], f: PredictFlags, write: (line: string) => void = (l) => process.stdout.write(l)): Promise<{ done: number; skipped: number; failed: number }> {
  const files = expandInputs(inputs);
  if (files.length === 0) throw new UserError(`no audio files in ${inputs.join(', ')}`);
  const format = f.format ?? (f.out?.endsWith('.csv') ? 'csv' : 'jsonl');
  if (format !== 'jsonl' && format !== 'csv') throw new UserError(`--format must be jsonl or csv, got "${format}"`);
  const segment = f.segment ?? 'auto';
  if (!SEGMENT_MODES.includes(segment)) throw new UserError(`--segment must be one of ${SEGMENT_MODES.join(', ')}, got "${segment}"`);
  const model = EmoSLLM.load(await trainedModelFolder(f.model));
  const labels = f.labels ? f.labels.split(',').map((s) => s.trim()).filter(Boolean) : model.labels;
  const o: PredictOptions = { segment, windowSeconds: num('--window', f.window), hopSeconds: num('--hop', f.hop), transcript: f.transcript, labels, normalize: normalizeFlag(f.normalize) };
  const maxSeconds = num('--max-seconds', f.maxSeconds) ?? 3600;
  if ((o.normalize ?? model.normalize) === 'speaker') {
    // the files of one call are one speaker's: their statistics first (a file that cannot be read is its error row later)
    async function* recordings() {
      for (const file of files) {
        const samples = await loadAudio16k(file, { maxSeconds }).catch((e: unknown) => {
          if (e instanceof UserError) return undefined;
          throw e;
        });
        if (samples) yield samples;
      }
    }
    o.speakerStats = await gatherSpeakerStats(model, recordings, o);
  }

  const done = f.out ? doneFiles(f.out, format) : new Set<string>();
  let fd: number | undefined;
  if (f.out) {
    fs.mkdirSync(path.dirname(path.resolve(f.out)), { recursive: true });
    const fresh = !fs.existsSync(f.out) || fs.statSync(f.out).size === 0;
    fd = fs.openSync(f.out, 'a');
    if (fresh && format === 'csv') fs.writeSync(fd, toCsv([['file', 'label', 'seconds', ...labels.map((l) => `p_${l}`), 'segments', 'error']]));
  }
  // Each result is one line written and flushed at once: an interrupted run loses at most the file in progress.
  const emit = (row: Record<string, unknown>) => {
    let line: string;
    if (format === 'jsonl') line = `${JSON.stringify(row)}\n`;
    else {
      const p = (row.probabilities ?? {}) as Record<string, number>;
      line = toCsv([[row.file as string, (row.label as string) ?? '', (row.seconds as number) ?? '', ...labels.map((l) => p[l] ?? ''), row.segments ? JSON.stringify(row.segments) : '', (row.error as string) ?? '']]);
    }
    if (fd !== undefined) {
      fs.writeSync(fd, line);
      fs.fsyncSync(fd);
    } else write(line);
  };
  const todo = files.filter((file) => !done.has(file));
  const bar = progress('predict');
  let failed = 0;
  try {
    for (let i = 0; i < todo.length; i++) {
      const file = todo[i];
      const t0 = performance.now();
      try {
        const samples = await loadAudio16k(file, { maxSeconds });
        const r = await predictSamples(model, samples, o);
        emit({ file, label: r.label, probabilities: r.probabilities, seconds: r.seconds, segments: r.segments, elapsed_ms: Math.round(performance.now() - t0) });
      } catch (e) {
        if (!(e instanceof UserError)) throw e;
        failed++;
        console.error(`emosllm: ${oneLine(e)}`);
        emit({ file, error: oneLine(e) });
      }
      if (f.out) bar.update(i + 1, todo.length);
    }
  } finally {
    bar.stop();
    if (fd !== undefined) fs.closeSync(fd);
    await model.release();
  }
  return { done: todo.length, skipped: files.length - todo.length, failed };
}

/** The options and action of `emosllm predict` (its name and description are in commands.ts). */
export function definePredict(cmd: Command): void {
  cmd
    .requiredOption('--model <dir|id>', 'a trained model folder (the output of emosllm train), or a Hub id org/name[@rev] of one')
    .argument('<files...>', 'audio files or folders')
    .option('--out <file>', 'write results here (.jsonl or .csv); a rerun skips files already in it')
    .option('--format <jsonl|csv>', 'output format (default from --out, else jsonl)')
    .option('--labels <a,b,...>', "label set to choose from (default: the model's)")
    .option('--transcript <text>', 'transcript given to the LLM with every file')
    .option('--segment <auto|whole|window|vad>', 'auto: clips up to 10 s whole, longer ones in windows (default auto)')
    .option('--window <s>', "window length in seconds (default: the model's training crop, 3 s)")
    .option('--hop <s>', 'window hop in seconds (default half the window)')
    .option('--max-seconds <s>', 'longest accepted file (default 3600)')
    .option('--normalize <none|speaker|recording>', "group normalisation (default: the model's own): speaker = the files of this call are one speaker's clips; recording = each file on its own statistics")
    .action(async (files: string[], f: PredictFlags) => {
      const r = await runPredict(files, f);
      if (f.out) console.error(`predict: ${r.done} file(s) done, ${r.skipped} already in ${f.out}, ${r.failed} failed`);
      if (r.failed) process.exitCode = 1;
    });
}
