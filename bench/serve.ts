/**
 * Server benchmark (`npm run bench -- serve`): `emosllm serve` (startServer, in this process) on loopback under
 * a load test with autocannon: 50 concurrent clients for 60 s, each posting a 3 s WAV (EmoDB clips back to
 * back) to POST /v1/emotion, keep-alive, as fast as the answers come.
 *
 * The model is a tiny real one trained for 2 steps like in src/serve/server.test.ts (fbank encoder + the
 * built-in tiny LLM, ~10 s to train), or the model folder in EMOSLLM_BENCH_MODEL. The server runs with its
 * defaults: one request at a time, queue 64 (SERVE_DEFAULTS.queue), so 50 clients are all queued and none is
 * turned away; a 503 would be deliberate load shedding and is counted apart. Any other non-2xx answer or
 * request error is a failure (must be 0).
 *
 * Figures: requests (answers received), ok (2xx), rejected_503, failures, p50_ms / p99_ms (latency of the
 * successful requests, queueing included), rps (successful requests per second), rss_before_mb (the server
 * idle with the model loaded, before the load) and rss_after_mb (right after it), plus the settings.
 *
 * Environment: EMOSLLM_BENCH_SECONDS (default 60), EMOSLLM_BENCH_CONNECTIONS (default 50),
 * EMOSLLM_BENCH_QUEUE (default: the server's), EMOSLLM_BENCH_MODEL (a model folder; default: train one).
 * Loopback only, bounded in time: it stops by itself.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { loadAudio16k } from '../src/audio/decode.ts';
import { encodeWav } from '../src/audio/wav.ts';
import { SERVE_DEFAULTS, startServer } from '../src/serve/server.ts';
import { defaultTrainConfig } from '../src/train/config.ts';
import { train } from '../src/train/trainer.ts';
import { emodbDev } from '../test/fixtures-gen/paths.ts';
import { emodbSubset } from '../test/fixtures-gen/subset.ts';
import { log, round } from './util.ts';

/** The part of autocannon's API used here (the package ships no types). */
interface AutocannonInstance extends PromiseLike<{ errors: number; timeouts: number; non2xx: number; duration: number; totalRequests: number }> {
  on(event: 'response', fn: (client: unknown, statusCode: number, resBytes: number, responseTime: number) => void): void;
  on(event: 'reqError', fn: (err: Error) => void): void;
}
type Autocannon = (opts: Record<string, unknown>) => AutocannonInstance;

/** Resident set size of this process now (VmRSS), MB. */
function rssNowMb(): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : process.memoryUsage().rss / 1024 / 1024;
}

export const env = (name: string, def: number) => {
  const v = process.env[name];
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!(n > 0)) throw new Error(`${name} must be a positive number, got "${v}"`);
  return n;
};

export function quantile(sorted: number[], q: number): number {
  if (!sorted.length) return -1;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/** 3 s of speech at 16 kHz: EmoDB clips back to back. */
export async function threeSecondWav(): Promise<Uint8Array<ArrayBuffer>> {
  const { wavDir } = emodbDev();
  const out = new Float32Array(3 * 16000);
  let o = 0;
  for (const f of fs.readdirSync(wavDir).sort()) {
    if (o >= out.length) break;
    const x = await loadAudio16k(path.join(wavDir, f));
    out.set(x.subarray(0, out.length - o), o);
    o += x.length;
  }
  return new Uint8Array(encodeWav(out, 16000));
}

/** EMOSLLM_BENCH_MODEL, or a tiny real model trained for 2 steps in `tmp` (fbank encoder + the built-in tiny LLM). */
export async function benchModelDir(tmp: string): Promise<string> {
  if (process.env.EMOSLLM_BENCH_MODEL) return process.env.EMOSLLM_BENCH_MODEL;
  const modelDir = path.join(tmp, 'model');
  log('training a tiny model (2 steps)...');
  const data = emodbSubset(path.join(tmp, 'subset'), ['03', '08'], 8);
  await train(defaultTrainConfig({ data, maxSteps: 2, cacheDir: path.join(tmp, 'cache') }), modelDir, { hooks: { log: () => undefined } });
  return modelDir;
}

export async function benchServe(): Promise<Record<string, number>> {
  const seconds = env('EMOSLLM_BENCH_SECONDS', 60);
  const connections = env('EMOSLLM_BENCH_CONNECTIONS', 50);
  const queue = env('EMOSLLM_BENCH_QUEUE', SERVE_DEFAULTS.queue);
  const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-bench-serve-'));
  try {
    const modelDir = await benchModelDir(tmp);
    const body = await threeSecondWav();
    const statusLines = new Map<string, number>();
    const server = await startServer({
      model: modelDir,
      port: 0,
      queue,
      // one line per request would be thousands of lines: count them by status instead
      log: (l) => {
        const m = /^\S+ \S+ (\d+|-)/.exec(l);
        if (m) statusLines.set(m[1], (statusLines.get(m[1]) ?? 0) + 1);
        else log(`server: ${l}`);
      },
    });
    try {
      const url = `${server.url}/v1/emotion`;
      const headers = { 'content-type': 'audio/wav' };
      // warm-up: a few requests one after the other
      for (let i = 0; i < 5; i++) {
        const r = await fetch(url, { method: 'POST', body, headers });
        if (r.status !== 200) throw new Error(`warm-up request answered ${r.status}: ${await r.text()}`);
        await r.arrayBuffer().catch(() => undefined);
      }
      const rssBefore = rssNowMb();
      log(`serve: ${connections} clients for ${seconds} s against ${url} (queue ${queue}, 3 s WAV of ${body.length} bytes)`);
      const okMs: number[] = [];
      let rejected = 0;
      let failures = 0;
      let requests = 0;
      const other = new Map<number, number>();
      const inst = autocannon({
        url,
        method: 'POST',
        headers,
        body: Buffer.from(body),
        connections,
        duration: seconds,
        // a client waits for its answer as long as the server may take (the server's timeout answers 504 first)
        timeout: SERVE_DEFAULTS.timeoutMs / 1000 + 10,
      });
      inst.on('response', (_c, status, _bytes, ms) => {
        requests++;
        if (status >= 200 && status < 300) okMs.push(ms);
        else if (status === 503) rejected++;
        else {
          failures++;
          other.set(status, (other.get(status) ?? 0) + 1);
        }
      });
      inst.on('reqError', () => {
        failures++;
      });
      const res = await inst;
      const rssAfter = rssNowMb();
      // (reqError counts request errors and timeouts; requests still in flight when the time is up are dropped
      // by autocannon, neither answered nor failed)
      if (other.size) log(`serve: unexpected statuses ${JSON.stringify(Object.fromEntries(other))}`);
      okMs.sort((a, b) => a - b);
      log(`serve: server log lines by status ${JSON.stringify(Object.fromEntries(statusLines))}`);
      return {
        requests,
        ok: okMs.length,
        rejected_503: rejected,
        failures,
        p50_ms: round(quantile(okMs, 0.5)),
        p99_ms: round(quantile(okMs, 0.99)),
        rps: round(okMs.length / res.duration, 2),
        rss_before_mb: round(rssBefore),
        rss_after_mb: round(rssAfter),
        connections,
        queue,
        seconds: res.duration,
        audio_seconds: 3,
      };
    } finally {
      await server.close();
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
