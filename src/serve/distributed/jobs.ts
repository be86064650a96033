/**
 * Jobs of the distributed queue (BullMQ on Redis): one job per audio file, its id derived from the file's
 * content, the model and the prediction options, so adding the same archive twice enqueues nothing twice (BullMQ
 * ignores a job whose id already exists, in any state). The commands that manage the queue (add, status,
 * retry-failed, drain) are here; the worker is in worker.ts.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { type Job, Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { SegmentMode } from '../../audio/segments.ts';
import { UserError } from '../../util/errors.ts';
import { QUEUE_NAME, connectRedis } from './connection.ts';

/** The options a job is predicted with: those of `emosllm predict` (unset = the model's defaults). */
export interface JobOptions {
  segment?: SegmentMode;
  windowSeconds?: number;
  hopSeconds?: number;
  transcript?: string;
  labels?: string[];
  maxSeconds?: number;
}

/** What a job carries: the file as it was added, what its content hashed to, the model id and the options. */
export interface PredictJobData {
  file: string;
  sha256: string;
  model: string;
  options: JobOptions;
}

/** Attempts per job before it lands in the failed set, with exponential backoff between them. */
export const JOB_ATTEMPTS = 3;
export const BACKOFF_MS = 1000;

/** sha256 of a file's bytes, streamed (archives hold long recordings). */
export async function fileSha256(file: string): Promise<string> {
  const hash = crypto.createHash('sha256');
  try {
    for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserError(code === 'ENOENT' ? 'file not found' : `cannot read: ${code ?? (e as Error).message}`, file);
  }
  return hash.digest('hex');
}

/**
 * The model's id: a hash of emosllm.json and the weight files the model folder holds itself (a Hub or local
 * LLM it references is pinned by emosllm.json's path/revision), so every machine running the same model folder
 * agrees on it wherever the folder is mounted.
 */
export async function modelId(dir: string): Promise<string> {
  const hash = crypto.createHash('sha256');
  const files = ['emosllm.json', 'mapper.safetensors', 'feature_norm.safetensors', 'llm_weights.safetensors', 'adapter/adapter_model.safetensors', 'adapter/adapter_config.json'];
  for (const f of files) {
    const p = path.join(dir, f);
    if (!fs.existsSync(p)) continue;
    hash.update(`${f}\n${await fileSha256(p)}\n`);
  }
  return hash.digest('hex').slice(0, 16);
}

/** A job's id: content hash + model id + options (BullMQ ids may not contain ':'). */
export function jobId(sha256: string, model: string, options: JobOptions): string {
  const canonical = JSON.stringify(Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : 1))));
  return crypto.createHash('sha256').update(`${sha256}\n${model}\n${canonical}`).digest('hex').slice(0, 32);
}

/**
 * A BullMQ queue on a connected client (closed with `close`, which also ends the client). `persistent` keeps
 * reconnecting through a Redis restart (a monitor); otherwise a lost server fails the next command.
 */
export async function openQueue(url: string, o: { persistent?: boolean } = {}): Promise<{ queue: Queue<PredictJobData>; redis: Redis; close: () => Promise<void> }> {
  const redis = await connectRedis(url, o);
  const queue = new Queue<PredictJobData>(QUEUE_NAME, { connection: redis });
  queue.on('error', () => {}); // a lost connection also rejects the command that needed it, which reports it
  return {
    queue,
    redis,
    close: async () => {
      await queue.close();
      redis.disconnect();
    },
  };
}

/** Enough jobs per addBulk call to amortise the round trips, few enough to keep each call's memory small. */
const BATCH = 500;

/**
 * Adds one job per file (hashing files as it goes) and returns how many were new; files whose job already
 * exists (waiting, running, done or failed) are left as they are.
 */
export async function addJobs(
  queue: Queue<PredictJobData>,
  files: string[],
  model: string,
  options: JobOptions,
  onProgress: (hashed: number, total: number) => void = () => {},
): Promise<{ added: number; existing: number }> {
  let added = 0;
  for (let i = 0; i < files.length; i += BATCH) {
    const batch: Array<{ id: string; data: PredictJobData }> = [];
    for (const file of files.slice(i, i + BATCH)) {
      const sha256 = await fileSha256(file);
      batch.push({ id: jobId(sha256, model, options), data: { file, sha256, model, options } });
      onProgress(i + batch.length, files.length);
    }
    const unique = [...new Map(batch.map((j) => [j.id, j])).values()]; // the same content named twice is one job
    const states = await Promise.all(unique.map((j) => queue.getJobState(j.id)));
    const fresh = unique.filter((_, k) => states[k] === 'unknown');
    await queue.addBulk(
      fresh.map((j) => ({
        name: 'predict',
        data: j.data,
        opts: { jobId: j.id, attempts: JOB_ATTEMPTS, backoff: { type: 'exponential', delay: BACKOFF_MS } },
      })),
    );
    added += fresh.length;
  }
  return { added, existing: files.length - added };
}

export interface QueueCounts {
  /** not started yet: waiting, prioritized, or delayed (a failed attempt waiting for its retry) */
  waiting: number;
  active: number;
  completed: number;
  failed: number;
  /** the part of `waiting` that is a retry after a failed attempt */
  retrying: number;
}

export async function queueCounts(queue: Queue<PredictJobData>): Promise<QueueCounts> {
  const c = await queue.getJobCounts('wait', 'prioritized', 'delayed', 'active', 'completed', 'failed');
  const n = (k: string) => c[k] ?? 0;
  return { waiting: n('wait') + n('prioritized') + n('delayed'), active: n('active'), completed: n('completed'), failed: n('failed'), retrying: n('delayed') };
}

/** Jobs finished per second over the last (up to) 100 completions, or undefined before two of them. */
export async function recentRate(queue: Queue<PredictJobData>): Promise<number | undefined> {
  const done = (await queue.getCompleted(0, 99)).map((j) => j.finishedOn).filter((t): t is number => typeof t === 'number');
  if (done.length < 2) return undefined;
  const span = (Math.max(...done) - Math.min(...done)) / 1000;
  return span > 0 ? (done.length - 1) / span : undefined;
}

export interface FailedJob {
  job: string;
  file: string;
  error: string;
  attempts: number;
}

/** The failed set, each job with its one-line error. */
export async function failedJobs(queue: Queue<PredictJobData>): Promise<FailedJob[]> {
  const jobs = (await queue.getFailed(0, -1)) as Job<PredictJobData>[];
  return jobs.map((j) => ({ job: String(j.id), file: j.data.file, error: j.failedReason, attempts: j.attemptsMade }));
}

/** Moves every failed job back to waiting (with its attempts reset); returns how many. */
export async function retryFailed(queue: Queue<PredictJobData>): Promise<number> {
  const n = (await queueCounts(queue)).failed;
  await queue.retryJobs({ state: 'failed' });
  return n;
}

/** Removes every job not started yet (waiting and retry-delayed); running jobs finish. Returns how many. */
export async function drainQueue(queue: Queue<PredictJobData>): Promise<number> {
  const n = (await queueCounts(queue)).waiting;
  await queue.drain(true);
  return n;
}
