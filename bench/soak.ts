/**
 * Soak benchmark (`npm run bench -- soak`): a real `emosllm serve` process (bin/emosllm.mjs, default limits) on
 * loopback under a mixed load for EMOSLLM_BENCH_SECONDS (default 600):
 *   - valid clients (EMOSLLM_SOAK_VALID, default 3): a 3 s WAV, raw or as a multipart form, back to back;
 *   - malformed clients (2): one of a fixed list of bad requests, each with the status it must get (400, 415, 422);
 *   - stalled clients (EMOSLLM_SOAK_STALLED, default 12, from 127.0.0.2-127.0.0.4): headers and 100 bytes of a
 *     100 kB body, then silence, reopened as soon as the server closes them; each must get 408 at --body-timeout
 *     or, past the 8 uploads an address may have in progress, 429 at once.
 * The model is the tiny one of the serve bench (or EMOSLLM_BENCH_MODEL). At the end the server gets SIGTERM with
 * the stalled uploads still open.
 *
 * Figures: requests (answers received), by_status (counts), valid_ok, shed_503 (valid requests turned away by
 * queue_full / too_many_uploads: deliberate load shedding), unexpected (an answer other than its client kind
 * expects, or a request error), unexpected_5xx (of those, 5xx answers), p50_ms / p99_ms (valid 200s),
 * rss_start_mb (server ready, idle), rss_warmup_mb (after the first 10% of the run, at most 60 s),
 * rss_peak_mb (highest sampled once a second, and the kernel's high-water mark), rss_end_mb (load stopped),
 * rss_end_vs_warmup_pct, exit_code and shutdown_ms of the SIGTERM, stalled_cut_at_shutdown (stalled uploads still
 * open then, which must be answered 503 shutting_down or closed). Acceptance: unexpected_5xx 0 and
 * |rss_end_vs_warmup_pct| <= 20.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { encodeWav } from '../src/audio/wav.ts';
import { REPO_ROOT, emodbDev } from '../test/fixtures-gen/paths.ts';
import { benchModelDir, env, quantile, threeSecondWav } from './serve.ts';
import { log, round } from './util.ts';

const STALLED_ADDRESSES = ['127.0.0.2', '127.0.0.3', '127.0.0.4'];

/** VmRSS and VmHWM of a process, MB. */
function rssOf(pid: number): { rss: number; hwm: number } {
  const st = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(st)?.[1] ?? 0) / 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

interface BadRequest {
  what: string;
  status: number;
  init: () => Promise<{ body?: Uint8Array | FormData; type?: string; query?: string }>;
}

async function multipartBytes(wav: Uint8Array): Promise<{ bytes: Uint8Array; type: string }> {
  const form = new FormData();
  form.append('audio', new Blob([wav as Uint8Array<ArrayBuffer>], { type: 'audio/wav' }), 'clip.wav');
  const r = new Request('http://localhost/', { method: 'POST', body: form });
  return { bytes: new Uint8Array(await r.arrayBuffer()), type: r.headers.get('content-type')! };
}

export async function benchSoak(): Promise<Record<string, number>> {
  const seconds = env('EMOSLLM_BENCH_SECONDS', 600);
  const validClients = env('EMOSLLM_SOAK_VALID', 3);
  const stalledClients = env('EMOSLLM_SOAK_STALLED', 12);
  const warmupSeconds = Math.min(60, seconds / 10);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-bench-soak-'));
  const wav = await threeSecondWav();
  const form = await multipartBytes(wav);
  const notAudio = fs.readFileSync(path.join(REPO_ROOT, 'package.json'));
  const silent = new Uint8Array(encodeWav(new Float32Array(16000), 16000));
  const bad: BadRequest[] = [
    { what: 'not audio', status: 415, init: async () => ({ body: notAudio, type: 'application/octet-stream' }) },
    { what: 'truncated WAV', status: 415, init: async () => ({ body: wav.subarray(0, 100), type: 'audio/wav' }) },
    { what: 'one label', status: 400, init: async () => ({ body: wav, type: 'audio/wav', query: 'labels=anger' }) },
    { what: 'unknown parameter', status: 400, init: async () => ({ body: wav, type: 'audio/wav', query: 'segmnet=whole' }) },
    { what: 'wrong boundary', status: 400, init: async () => ({ body: wav, type: 'multipart/form-data; boundary=zzz' }) },
    { what: 'no boundary', status: 400, init: async () => ({ body: wav, type: 'multipart/form-data' }) },
    { what: 'form cut off', status: 400, init: async () => ({ body: form.bytes.subarray(0, form.bytes.length - 100), type: form.type }) },
    { what: 'JSON', status: 415, init: async () => ({ body: Buffer.from('{"audio": 1}'), type: 'application/json' }) },
    { what: 'empty body', status: 400, init: async () => ({ body: new Uint8Array(0), type: 'audio/wav' }) },
    { what: 'silence', status: 422, init: async () => ({ body: silent, type: 'audio/wav' }) },
  ];

  try {
    const modelDir = await benchModelDir(tmp);
    emodbDev(); // fails early with a clear message when the test data is missing
    const child = spawn(process.execPath, [path.join(REPO_ROOT, 'bin/emosllm.mjs'), 'serve', '--model', modelDir, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    let serverErrors = 0;
    let stderrTail = '';
    child.stderr.on('data', (d: Buffer) => {
      stderrTail = (stderrTail + d).slice(-4000);
      serverErrors += (String(d).match(/^error: /gm) ?? []).length; // the log line of every 500
    });
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d) => {
        out += d;
        const m = /listening on (http:\/\/\S+)/.exec(out);
        if (m) resolve(m[1]);
      });
      child.once('exit', () => reject(new Error(`serve exited early: ${stderrTail}`)));
    });
    const port = Number(new URL(url).port);
    const pid = child.pid!;
    const rssStart = rssOf(pid).rss;
    log(`soak: server ${url} (pid ${pid}, ${round(rssStart)} MB), ${seconds} s: ${validClients} valid, 2 malformed, ${stalledClients} stalled clients`);

    const byStatus = new Map<string, number>();
    const count = (k: string) => byStatus.set(k, (byStatus.get(k) ?? 0) + 1);
    let requests = 0;
    let validOk = 0;
    let shed = 0;
    let unexpected = 0;
    let unexpected5xx = 0;
    const okMs: number[] = [];
    const surprise = (what: string, status: number | string) => {
      unexpected++;
      if (typeof status === 'number' && status >= 500) unexpected5xx++;
      if (unexpected <= 20) log(`soak: unexpected: ${what} got ${status}`);
    };
    const t0 = performance.now();
    const running = () => performance.now() - t0 < seconds * 1000;

    let rssPeak = rssStart;
    let rssWarmup = 0;
    const sampler = setInterval(() => {
      const { rss } = rssOf(pid);
      rssPeak = Math.max(rssPeak, rss);
      if (!rssWarmup && performance.now() - t0 >= warmupSeconds * 1000) {
        rssWarmup = rss;
        log(`soak: RSS after ${warmupSeconds} s warm-up ${round(rss)} MB`);
      }
    }, 1000);

    async function send(body: Uint8Array | FormData | undefined, type: string | undefined, query = ''): Promise<{ status: number; code?: string; ms: number }> {
      const s0 = performance.now();
      const r = await fetch(`${url}/v1/emotion${query ? `?${query}` : ''}`, { method: 'POST', body: body as BodyInit, headers: type ? { 'content-type': type } : {} });
      const text = await r.text();
      let code: string | undefined;
      try {
        code = JSON.parse(text).error?.code;
      } catch {
        code = 'not_json';
      }
      requests++;
      count(String(r.status));
      return { status: r.status, code, ms: performance.now() - s0 };
    }

    const valid = async (i: number) => {
      for (let n = 0; running(); n++) {
        try {
          const a = (n + i) % 4 === 0 ? await send(form.bytes, form.type) : await send(wav, 'audio/wav');
          if (a.status === 200) {
            validOk++;
            okMs.push(a.ms);
          } else if (a.status === 503 && (a.code === 'queue_full' || a.code === 'too_many_uploads')) shed++;
          else surprise('valid request', a.status);
        } catch (e) {
          surprise('valid request', (e as Error).message);
        }
      }
    };
    const malformed = async (i: number) => {
      for (let n = i; running(); n++) {
        const b = bad[n % bad.length];
        try {
          const o = await b.init();
          const a = await send(o.body, o.type, o.query);
          if (a.status !== b.status) surprise(b.what, a.status);
        } catch (e) {
          surprise(b.what, (e as Error).message);
        }
      }
    };
    const openStalled = new Set<net.Socket>();
    let stalledOpened = 0;
    let cutAtShutdown = 0;
    const stalled = async (i: number) => {
      const localAddress = STALLED_ADDRESSES[i % STALLED_ADDRESSES.length];
      while (running()) {
        const socket = net.connect({ port, host: '127.0.0.1', localAddress });
        openStalled.add(socket);
        let got = '';
        socket.on('data', (d) => (got += d));
        socket.on('error', () => undefined);
        const closed = once(socket, 'close');
        try {
          await once(socket, 'connect');
        } catch {
          surprise('stalled upload (connect)', 'error');
          continue;
        }
        stalledOpened++;
        socket.write(`POST /v1/emotion HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/wav\r\nContent-Length: 100000\r\n\r\nRIFF${'\0'.repeat(96)}`);
        await closed; // the client never closes it while the run lasts: the server must
        openStalled.delete(socket);
        const status = Number(/^HTTP\/1\.1 (\d+) /.exec(got)?.[1] ?? 0);
        if (!running()) {
          // cut by the shutdown below: answered 503 shutting_down, or closed before the answer got out
          if (status === 503 && /"shutting_down"/.test(got)) cutAtShutdown++;
          else if (status) surprise('stalled upload at shutdown', status);
          else cutAtShutdown++;
          break;
        }
        requests++;
        count(String(status || 'closed without answer'));
        if (status !== 408 && status !== 429) surprise('stalled upload', status || 'closed without answer');
        if (status === 429) await new Promise((r) => setTimeout(r, 1000)); // its address is at its cap: retry later
      }
    };

    const clients = [
      ...Array.from({ length: validClients }, (_, i) => valid(i)),
      malformed(0),
      malformed(5),
      ...Array.from({ length: stalledClients }, (_, i) => stalled(i)),
    ];
    // valid and malformed clients stop at the deadline; stalled ones stay open into the shutdown
    await Promise.all(clients.slice(0, validClients + 2));
    clearInterval(sampler);
    const end = rssOf(pid);
    rssPeak = Math.max(rssPeak, end.rss, end.hwm);
    if (!rssWarmup) rssWarmup = end.rss;
    log(`soak: load over; ${openStalled.size} stalled uploads still open; SIGTERM`);
    const s0 = performance.now();
    child.kill('SIGTERM');
    const [exitCode] = await exited;
    const shutdownMs = performance.now() - s0;
    await Promise.all(clients.slice(validClients + 2));
    for (const s of openStalled) s.destroy();
    okMs.sort((a, b) => a - b);
    if (serverErrors) log(`soak: ${serverErrors} "error:" lines in the server log; its tail:\n${stderrTail}`);
    return {
      seconds: round((performance.now() - t0) / 1000 - shutdownMs / 1000),
      requests,
      ...Object.fromEntries([...byStatus].sort().map(([k, v]) => [`status_${k.replace(/\W+/g, '_')}`, v])),
      valid_ok: validOk,
      shed_503: shed,
      stalled_opened: stalledOpened,
      stalled_cut_at_shutdown: cutAtShutdown,
      unexpected,
      unexpected_5xx: unexpected5xx,
      server_error_lines: serverErrors,
      p50_ms: round(quantile(okMs, 0.5)),
      p99_ms: round(quantile(okMs, 0.99)),
      rss_start_mb: round(rssStart),
      rss_warmup_mb: round(rssWarmup),
      rss_peak_mb: round(rssPeak),
      rss_end_mb: round(end.rss),
      rss_end_vs_warmup_pct: round((100 * (end.rss - rssWarmup)) / rssWarmup),
      exit_code: exitCode ?? -1,
      shutdown_ms: Math.round(shutdownMs),
    };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
