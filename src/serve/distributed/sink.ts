/**
 * The result sink of the distributed queue: every worker appends JSON lines to its own file under the --out
 * folder (fsynced one by one, so an acknowledged job's result is on disk), and `collect` merges the files,
 * one line per job. A worker that dies between writing a result and acknowledging its job leaves that job
 * to another worker, which writes it again: collect keeps the first line of each job.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../../util/errors.ts';
import { writeFileAtomic } from '../../util/fs.ts';

/** One result line: the job id, the file as it was added, and what `emosllm predict` gives for it. */
export interface ResultLine {
  job: string;
  file: string;
  label: string;
  probs: Record<string, number>;
  seconds: number;
  /** the timeline: one entry per scored segment (one for a clip scored whole) */
  segments: Array<{ start: number; end: number; label: string; probabilities: Record<string, number> }>;
}

/** A worker's own results file (host, pid and a random part: workers of many machines may share the folder). */
export class ResultSink {
  readonly file: string;
  private fd: number | undefined;

  constructor(dir: string) {
    fs.mkdirSync(dir, { recursive: true });
    this.file = path.join(dir, `results-${os.hostname()}-${process.pid}-${crypto.randomBytes(3).toString('hex')}.jsonl`);
  }

  write(line: ResultLine): void {
    this.fd ??= fs.openSync(this.file, 'a');
    fs.writeSync(this.fd, `${JSON.stringify(line)}\n`);
    fs.fsyncSync(this.fd);
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }
}

/** The complete lines of a results file; a last line without its newline (a worker killed mid-write) is left out. */
function readResults(file: string): ResultLine[] {
  const text = fs.readFileSync(file, 'utf8');
  const lines = text.split('\n');
  lines.pop(); // after the last newline: empty, or a line cut short
  return lines.flatMap((l, i) => {
    if (!l.trim()) return [];
    let r: ResultLine;
    try {
      r = JSON.parse(l);
    } catch {
      throw new UserError(`line ${i + 1} is not JSON: not a results file of emosllm worker?`, file);
    }
    if (typeof r?.job !== 'string' || typeof r.file !== 'string') throw new UserError(`line ${i + 1} has no "job" and "file": not a results file of emosllm worker?`, file);
    return [r];
  });
}

/**
 * Merges the results files (*.jsonl) of the given folders into `out`, one line per job (the first one seen;
 * a duplicate is the same job predicted again), sorted by file then job; written atomically.
 */
export function collectResults(dirs: string[], out: string): { results: number; duplicates: number; files: number } {
  const files: string[] = [];
  for (const dir of dirs) {
    if (!fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) throw new UserError('not a folder', dir);
    for (const name of fs.readdirSync(dir).sort()) if (name.endsWith('.jsonl') && path.resolve(dir, name) !== path.resolve(out)) files.push(path.join(dir, name));
  }
  const byJob = new Map<string, ResultLine>();
  let duplicates = 0;
  for (const f of files) {
    for (const r of readResults(f)) {
      if (byJob.has(r.job)) duplicates++;
      else byJob.set(r.job, r);
    }
  }
  const merged = [...byJob.values()].sort((a, b) => (a.file === b.file ? (a.job < b.job ? -1 : 1) : a.file < b.file ? -1 : 1));
  writeFileAtomic(out, merged.map((r) => `${JSON.stringify(r)}\n`).join(''));
  return { results: merged.length, duplicates, files: files.length };
}
