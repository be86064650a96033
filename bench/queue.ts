/**
 * Queue benchmark (`npm run bench -- queue`): the same emodb-dev clips labelled three ways, each timed wall
 * clock from process start to the last result, model loading included:
 *   - `emosllm predict --out FILE CLIPS...` (one process, the folder run);
 *   - `emosllm queue add` then 1 `emosllm worker` (a fresh Redis database);
 *   - `emosllm queue add` then 2 workers (another fresh database).
 * Redis is a real redis-server on loopback (append-only file fsynced on every write, as the tests run it).
 *
 * Figures: clips, predict_clips_per_s, worker1_clips_per_s, worker2_clips_per_s (clips / wall seconds),
 * add_s (hashing and enqueueing all clips, one `queue add` process, start-up included), overhead_ms_per_job
 * (with 1 worker, mean over jobs of BullMQ's time from taking a job to acknowledging it minus the time inside the
 * worker's function: locking, fetching, acknowledging), wall_overhead_ms_per_job (1 worker's wall time minus
 * predict's, per clip; start-up of both included, so it moves with the machine's load), speedup_2_workers
 * (worker2 / worker1 clips per second). Environment: EMOSLLM_BENCH_CLIPS (default 300), EMOSLLM_BENCH_MODEL
 * (a model folder; default: train the small test model, ~20 s).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openQueue, queueCounts } from '../src/serve/distributed/jobs.ts';
import { trainSmallModel } from '../test/fixtures-gen/model.ts';
import { REPO_ROOT, emodbDev } from '../test/fixtures-gen/paths.ts';
import { startRedis } from '../test/fixtures-gen/redis.ts';
import { log, round } from './util.ts';

const CLI = path.join(REPO_ROOT, 'bin/emosllm.mjs');

function run(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`emosllm ${args[0]} exited with ${code}`))));
  });
}

export async function benchQueue(): Promise<Record<string, number>> {
  const n = Number(process.env.EMOSLLM_BENCH_CLIPS ?? 300);
  if (!(Number.isInteger(n) && n > 0)) throw new Error(`EMOSLLM_BENCH_CLIPS must be a positive integer, got "${process.env.EMOSLLM_BENCH_CLIPS}"`);
  const { wavDir } = emodbDev();
  const clips = fs.readdirSync(wavDir).filter((f) => f.endsWith('.wav')).sort().slice(0, n).map((f) => path.join(wavDir, f));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-bench-queue-'));
  const redis = await startRedis(path.join(tmp, 'redis'));
  try {
    const model = process.env.EMOSLLM_BENCH_MODEL ?? (await trainSmallModel(tmp));
    log(`${clips.length} clips, model ${model}`);

    let t0 = performance.now();
    await run(['predict', '--model', model, '--out', path.join(tmp, 'predict.jsonl'), ...clips]);
    const predictS = (performance.now() - t0) / 1000;
    log(`predict: ${predictS.toFixed(1)} s`);

    const viaQueue = async (db: number, workers: number) => {
      const url = `${redis.url}/${db}`;
      const t = performance.now();
      await run(['queue', 'add', '--queue', url, '--model', model, ...clips]);
      const addS = (performance.now() - t) / 1000;
      const q = await openQueue(url, { persistent: true });
      const start = performance.now();
      const procs = Array.from({ length: workers }, () => spawn(process.execPath, [CLI, 'worker', '--queue', url, '--model', model, '--out', path.join(tmp, `out-${db}`)], { stdio: 'ignore' }));
      let gapMs = NaN;
      try {
        for (;;) {
          const c = await queueCounts(q.queue);
          if (c.completed + c.failed >= clips.length) break;
          await new Promise((r) => setTimeout(r, 50));
        }
        // per job: BullMQ's time from taking it to acknowledging it (the next job is taken in the same step) minus
        // the time inside the worker's function (hash, decode, predict, write), which it returns
        const jobs = await q.queue.getCompleted(0, -1);
        gapMs = jobs.reduce((a, j) => a + (j.finishedOn! - j.processedOn! - (j.returnvalue as { ms: number }).ms), 0) / jobs.length;
      } finally {
        await q.close();
        await Promise.all(procs.map((p) => new Promise((r) => (p.once('exit', r), p.kill('SIGTERM')))));
      }
      const s = (performance.now() - start) / 1000;
      log(`${workers} worker(s): ${s.toFixed(1)} s (add ${addS.toFixed(1)} s)`);
      return { s, addS, gapMs };
    };
    const one = await viaQueue(1, 1);
    const two = await viaQueue(2, 2);
    return {
      clips: clips.length,
      predict_clips_per_s: round(clips.length / predictS, 2),
      worker1_clips_per_s: round(clips.length / one.s, 2),
      worker2_clips_per_s: round(clips.length / two.s, 2),
      speedup_2_workers: round(one.s / two.s, 2),
      add_s: round(one.addS, 2),
      overhead_ms_per_job: round(one.gapMs, 2),
      wall_overhead_ms_per_job: round((1000 * (one.s - predictS)) / clips.length, 2),
    };
  } finally {
    await redis.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
