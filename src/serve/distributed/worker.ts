/**
 * The worker of the distributed queue: loads the model once, takes jobs from BullMQ, predicts each file the
 * way `emosllm predict` does (loadAudio16k + predictSamples: the same decoding, segmenting and aggregation),
 * appends the result to its sink file, then acknowledges the job.
 *
 * Failure handling is BullMQ's: a job whose worker died (SIGKILL, power loss) loses its lock and is moved back
 * to waiting by the stalled-job check of any live worker after `lockSeconds`; a failed attempt is retried with
 * exponential backoff and, after the last one, lands in the failed set with its one-line error. A broken file
 * is a failed job, never a crashed worker. While Redis is away the worker keeps reconnecting.
 */
import { UnrecoverableError, Worker } from 'bullmq';
import { loadAudio16k } from '../../audio/decode.ts';
import { predictSamples } from '../../eval/predict.ts';
import { EmoSLLM } from '../../models/emosllm.ts';
import { UserError, oneLine } from '../../util/errors.ts';
import { QUEUE_NAME, openRedis, redactUrl } from './connection.ts';
import { type PredictJobData, fileSha256, modelId } from './jobs.ts';
import { ResultSink } from './sink.ts';

export interface WorkerOptions {
  url: string;
  /** a trained model folder */
  model: string;
  out: string;
  concurrency?: number;
  /** how long a job's lock lasts without renewal: a killed worker's job is taken over after about this long */
  lockSeconds?: number;
  log?: (line: string) => void;
}

export interface RunningWorker {
  /** the worker's results file */
  file: string;
  /** stops taking jobs, lets the running ones finish (acknowledged), releases the model */
  close: () => Promise<{ done: number; failed: number }>;
}

const DEFAULT_LOCK_SECONDS = 30;
/** Stalls a job may go through (its worker died, Redis restarted mid-job) before BullMQ fails it. */
const MAX_STALLS = 3;

export async function startWorker(o: WorkerOptions): Promise<RunningWorker> {
  const log = o.log ?? ((l: string) => console.error(l));
  const concurrency = o.concurrency ?? 1;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new UserError(`--concurrency must be an integer >= 1, got ${o.concurrency}`);
  const lockMs = 1000 * (o.lockSeconds ?? DEFAULT_LOCK_SECONDS);
  if (!(lockMs >= 1000)) throw new UserError(`--lock-seconds must be >= 1, got ${o.lockSeconds}`);
  const id = await modelId(o.model);
  const model = EmoSLLM.load(o.model);
  const sink = new ResultSink(o.out);
  const redis = openRedis(o.url, { persistent: true });
  let done = 0;
  let failed = 0;

  const worker = new Worker<PredictJobData>(
    QUEUE_NAME,
    async (job) => {
      const t0 = performance.now();
      const d = job.data;
      if (d.model !== id) throw new UnrecoverableError(`the job is for model ${d.model}, this worker runs ${id} (${o.model})`);
      if ((await fileSha256(d.file)) !== d.sha256) throw new UnrecoverableError(`${d.file}: the file changed since it was added`);
      const samples = await loadAudio16k(d.file, d.options.maxSeconds === undefined ? {} : { maxSeconds: d.options.maxSeconds });
      const r = await predictSamples(model, samples, d.options);
      sink.write({ job: String(job.id), file: d.file, label: r.label, probs: r.probabilities, seconds: r.seconds, segments: r.segments });
      // the time inside this function, so the queue's own cost per job can be told apart (npm run bench -- queue)
      return { label: r.label, ms: performance.now() - t0 };
    },
    {
      connection: redis,
      concurrency,
      lockDuration: lockMs,
      stalledInterval: lockMs,
      maxStalledCount: MAX_STALLS,
      autorun: false,
    },
  );
  worker.on('completed', () => done++);
  worker.on('failed', (job, err) => {
    if (!job) return;
    const last = job.attemptsMade >= (job.opts.attempts ?? 1) || err instanceof UnrecoverableError;
    if (last) failed++;
    log(`worker: ${last ? 'failed' : `attempt ${job.attemptsMade} failed, will retry`}: ${oneLine(err)}`);
  });
  // connection errors repeat while Redis is away: one line per few seconds, naming the server without its password
  let lastError = 0;
  worker.on('error', (err) => {
    if (Date.now() - lastError < 5000) return;
    lastError = Date.now();
    log(`worker: ${redactUrl(o.url)}: ${oneLine(err)} (retrying)`);
  });
  const running = worker.run();
  await worker.waitUntilReady();
  log(`worker: model ${id} from ${o.model}, queue ${redactUrl(o.url)}, concurrency ${concurrency}, results in ${sink.file}`);

  let closing: Promise<{ done: number; failed: number }> | undefined;
  return {
    file: sink.file,
    close: () =>
      (closing ??= (async () => {
        await worker.close();
        await running;
        sink.close();
        redis.disconnect();
        await model.release();
        return { done, failed };
      })()),
  };
}
