/**
 * `emosllm queue add|status|collect|retry-failed|drain` and `emosllm worker`: archive-scale prediction over a
 * BullMQ queue on Redis (src/serve/distributed/). Workers run on any number of machines that see the same
 * files; results land as JSON lines under each worker's --out folder and `queue collect` merges them.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { SEGMENT_MODES, type SegmentMode } from '../audio/segments.ts';
import { parseCsvTable } from '../data/csv.ts';
import { isAudioFile } from '../data/scan.ts';
import { type JobOptions, addJobs, drainQueue, failedJobs, modelId, openQueue, queueCounts, recentRate, retryFailed } from '../serve/distributed/jobs.ts';
import { collectResults } from '../serve/distributed/sink.ts';
import { startWorker } from '../serve/distributed/worker.ts';
import { UserError } from '../util/errors.ts';
import { trainedModelFolder } from './hub.ts';
import { expandInputs } from './predict.ts';
import { progress } from './progress.ts';

interface AddFlags {
  queue: string;
  model: string;
  labels?: string;
  transcript?: string;
  segment?: SegmentMode;
  window?: string;
  hop?: string;
  maxSeconds?: string;
}

const LIST_EXTENSIONS = ['.csv', '.jsonl', '.txt', '.lst'];

/** The paths a list names: a CSV with a "path" column, JSON lines with "path", or one path per line (relative to the list's folder). */
function listedFiles(text: string, where: string, base: string): string[] {
  let paths: string[];
  if (where.endsWith('.csv')) {
    const t = parseCsvTable(text, where);
    if (!t.header.includes('path')) throw new UserError(`missing column "path" (columns: ${t.header.join(', ')})`, where);
    paths = t.records.map((r) => r.values.path!);
  } else if (where.endsWith('.jsonl')) {
    paths = text.split('\n').flatMap((l, i) => {
      if (!l.trim()) return [];
      let p: unknown;
      try {
        p = JSON.parse(l).path;
      } catch {
        throw new UserError(`line ${i + 1} is not JSON`, where);
      }
      if (typeof p !== 'string') throw new UserError(`line ${i + 1} has no "path"`, where);
      return [p];
    });
  } else paths = text.split('\n').map((l) => l.trim()).filter(Boolean);
  return paths.map((p) => (path.isAbsolute(p) ? p : path.join(base, p)));
}

/** FILES|DIR|MANIFEST|- -> audio files: folders are walked, a list file (.csv/.jsonl/.txt/.lst) or stdin names them. */
async function queueInputs(inputs: string[]): Promise<string[]> {
  const files: string[] = [];
  for (const input of inputs) {
    if (input === '-') {
      let text = '';
      for await (const chunk of process.stdin) text += chunk;
      files.push(...listedFiles(text, 'stdin', process.cwd()));
    } else if (LIST_EXTENSIONS.includes(path.extname(input).toLowerCase()) && !isAudioFile(input) && fs.statSync(input, { throwIfNoEntry: false })?.isFile()) {
      files.push(...listedFiles(fs.readFileSync(input, 'utf8'), input, path.dirname(input)));
    } else files.push(...expandInputs([input]));
  }
  return files;
}

const seconds = (name: string, v: string | undefined) => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!(n > 0)) throw new UserError(`${name} must be a positive number of seconds, got "${v}"`);
  return n;
};

async function runAdd(inputs: string[], f: AddFlags): Promise<number> {
  if (f.segment !== undefined && !SEGMENT_MODES.includes(f.segment)) throw new UserError(`--segment must be one of ${SEGMENT_MODES.join(', ')}, got "${f.segment}"`);
  const options: JobOptions = {
    segment: f.segment,
    windowSeconds: seconds('--window', f.window),
    hopSeconds: seconds('--hop', f.hop),
    transcript: f.transcript,
    labels: f.labels?.split(',').map((s) => s.trim()).filter(Boolean),
    maxSeconds: seconds('--max-seconds', f.maxSeconds),
  };
  const files = await queueInputs(inputs);
  if (files.length === 0) throw new UserError(`no audio files in ${inputs.join(', ')}`);
  const model = await modelId(await trainedModelFolder(f.model));
  const q = await openQueue(f.queue);
  const bar = progress('queue add');
  try {
    // hashing is what takes time: a bar for archives, nothing for a handful of files
    const r = await addJobs(q.queue, files, model, options, files.length >= 1000 ? (n, total) => bar.update(n, total) : undefined);
    bar.stop();
    console.error(`queue add: ${files.length} file(s), ${r.existing} already queued or done, model ${model}`);
    return r.added;
  } finally {
    bar.stop();
    await q.close();
  }
}

async function runStatus(f: { queue: string; json?: boolean; failed?: boolean; watch?: boolean }): Promise<void> {
  const q = await openQueue(f.queue, { persistent: f.watch }); // --watch rides out a Redis restart
  try {
    if (f.failed) {
      for (const j of await failedJobs(q.queue)) console.log(JSON.stringify(j));
      return;
    }
    if (f.json) {
      const c = await queueCounts(q.queue);
      const rate = await recentRate(q.queue);
      console.log(JSON.stringify({ ...c, rate_per_s: rate ?? null, eta_s: rate ? Math.round((c.waiting + c.active) / rate) : null }));
      return;
    }
    const bar = progress('queue', { format: 'queue |{bar}| {value}/{total} done {info} | ETA {eta_formatted}' });
    for (;;) {
      const c = await queueCounts(q.queue);
      const rate = await recentRate(q.queue);
      const total = c.waiting + c.active + c.completed + c.failed;
      const info = { waiting: String(c.waiting), active: String(c.active), failed: String(c.failed), rate: rate ? `${rate.toFixed(2)}/s` : '-' };
      if (!f.watch) {
        const eta = rate && c.waiting + c.active ? `, ETA ${Math.round((c.waiting + c.active) / rate)} s` : '';
        console.log(`waiting ${c.waiting}, active ${c.active}, done ${c.completed}, failed ${c.failed}${c.retrying ? ` (${c.retrying} waiting to retry)` : ''}, rate ${info.rate}${eta}`);
        return;
      }
      bar.update(c.completed + c.failed, Math.max(total, 1), info);
      if (c.waiting + c.active === 0) break;
      await new Promise((r) => setTimeout(r, 2000));
    }
    bar.stop();
  } finally {
    await q.close();
  }
}

/** The options and actions of `emosllm queue ...` (its name and description are in commands.ts). */
export function defineQueue(cmd: Command): void {
  const url = '--queue <url>';
  const urlHelp = 'the Redis server: redis://[:PASSWORD@]HOST:PORT[/DB], or rediss:// for TLS';
  cmd
    .command('add')
    .description('enqueue one job per audio file (files, folders, a .csv/.jsonl/.txt list of paths, or - for paths on stdin); a file already queued or done is not added again')
    .requiredOption(url, urlHelp)
    .requiredOption('--model <dir|id>', 'the trained model folder (or Hub id) the workers run; part of the job id')
    .argument('<inputs...>', 'audio files, folders, path lists, or -')
    .option('--labels <a,b,...>', "label set to choose from (default: the model's)")
    .option('--transcript <text>', 'transcript given to the LLM with every file')
    .option('--segment <auto|whole|window|vad>', 'as in emosllm predict (default auto)')
    .option('--window <s>', "window length in seconds (default: the model's training crop)")
    .option('--hop <s>', 'window hop in seconds (default half the window)')
    .option('--max-seconds <s>', 'longest accepted file (default 3600)')
    .action(async (inputs: string[], f: AddFlags) => {
      console.log(`${await runAdd(inputs, f)} jobs added`);
    });
  cmd
    .command('status')
    .description('jobs waiting, active, done and failed, the recent rate and the ETA')
    .requiredOption(url, urlHelp)
    .option('--json', 'one JSON object: integer waiting, active, completed, failed (+ retrying, rate_per_s, eta_s)')
    .option('--failed', 'list the failed jobs as JSON lines {job, file, error, attempts}')
    .option('--watch', 'a progress bar until nothing waits or runs')
    .action(runStatus);
  cmd
    .command('collect')
    .description('merge the workers\' results files into one JSONL file, one line per job (duplicates removed)')
    .argument('<dirs...>', 'the --out folders of the workers')
    .requiredOption('--out <file.jsonl>', 'the merged results (written atomically)')
    .action((dirs: string[], f: { out: string }) => {
      const r = collectResults(dirs, f.out);
      console.log(`${r.results} results from ${r.files} file(s) in ${f.out}, ${r.duplicates} duplicate(s) removed`);
    });
  cmd
    .command('retry-failed')
    .description('move every failed job back to waiting, its attempts reset')
    .requiredOption(url, urlHelp)
    .action(async (f: { queue: string }) => {
      const q = await openQueue(f.queue);
      try {
        console.log(`${await retryFailed(q.queue)} failed jobs moved back to waiting`);
      } finally {
        await q.close();
      }
    });
  cmd
    .command('drain')
    .description('remove every job not started yet (running jobs finish; done and failed ones stay)')
    .requiredOption(url, urlHelp)
    .action(async (f: { queue: string }) => {
      const q = await openQueue(f.queue);
      try {
        console.log(`${await drainQueue(q.queue)} waiting jobs removed`);
      } finally {
        await q.close();
      }
    });
}

/** The options and action of `emosllm worker`. */
export function defineWorker(cmd: Command): void {
  cmd
    .requiredOption('--queue <url>', 'the Redis server: redis://[:PASSWORD@]HOST:PORT[/DB], or rediss:// for TLS')
    .requiredOption('--model <dir|id>', 'the trained model folder (or Hub id) the jobs were added with')
    .requiredOption('--out <dir>', 'folder for this worker\'s results file (JSON lines, fsynced)')
    .option('--concurrency <n>', 'jobs at once in this process (default 1: ONNX Runtime already uses every core)', '1')
    .option('--lock-seconds <s>', 'a job of a worker that died is taken over after about this long (default 30)', '30')
    .action(async (f: { queue: string; model: string; out: string; concurrency: string; lockSeconds: string }) => {
      const w = await startWorker({ url: f.queue, model: await trainedModelFolder(f.model), out: f.out, concurrency: Number(f.concurrency), lockSeconds: Number(f.lockSeconds) });
      await new Promise<void>((resolve, reject) => {
        let signals = 0;
        const onSignal = (sig: NodeJS.Signals) => {
          if (++signals > 1) {
            console.error(`worker: ${sig} again: exiting now (the running job goes back to the queue after the lock time)`);
            process.exit(sig === 'SIGINT' ? 130 : 143);
          }
          console.error(`worker: ${sig}: finishing the running job(s), then exiting (${sig} again to exit now)`);
          w.close().then((r) => {
            console.error(`worker: ${r.done} job(s) done, ${r.failed} failed; results in ${w.file}`);
            resolve();
          }, reject);
        };
        process.on('SIGTERM', onSignal);
        process.on('SIGINT', onSignal);
      });
    });
}
