import { spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAudio16k } from '../audio/decode.ts';
import { encodeWav } from '../audio/wav.ts';
import { type ClipPrediction, type PredictOptions, predictSamples } from '../eval/predict.ts';
import { EmoSLLM } from '../models/emosllm.ts';
import { defaultTrainConfig } from '../train/config.ts';
import { train } from '../train/trainer.ts';
import { REPO_ROOT, emodbDev, tempDir } from '../../test/fixtures-gen/paths.ts';
import { emodbSubset } from '../../test/fixtures-gen/subset.ts';
import { ffmpeg } from '../../test/fixtures-gen/tools.ts';
import { type ServeOptions, type ServerHandle, startServer } from './server.ts';

const tmp = tempDir('serve');
const modelDir = path.join(tmp, 'model');
const CLI = path.join(REPO_ROOT, 'bin/emosllm.mjs');
const WAV = path.join(emodbDev().wavDir, '03a01Fa.wav');
const LONG = path.join(tmp, 'long60.wav');
let model: EmoSLLM; // the test's own copy, for in-process reference predictions
let main: ServerHandle; // loads the model folder itself, default limits
const logs: string[] = [];

beforeAll(async () => {
  const data = emodbSubset(path.join(tmp, 'subset'), ['03', '08'], 8);
  await train(defaultTrainConfig({ data, maxSteps: 2, cacheDir: path.join(tmp, 'cache') }), modelDir, { hooks: { log: () => undefined } });
  model = EmoSLLM.load(modelDir);
  // 60 s of speech: EmoDB clips back to back
  const files = fs.readdirSync(emodbDev().wavDir).sort();
  const clips: Float32Array[] = [];
  let n = 0;
  for (const f of files) {
    if (n >= 60 * 16000) break;
    const x = await loadAudio16k(path.join(emodbDev().wavDir, f));
    clips.push(x);
    n += x.length;
  }
  const long = new Float32Array(60 * 16000);
  let o = 0;
  for (const c of clips) {
    long.set(c.subarray(0, Math.min(c.length, long.length - o)), o);
    o += c.length;
    if (o >= long.length) break;
  }
  fs.writeFileSync(LONG, encodeWav(long, 16000));
  main = await startServer({ model: modelDir, port: 0, log: (l) => logs.push(l) });
}, 180_000);

afterAll(async () => {
  await main?.close();
  await model?.release();
  fs.rmSync(tmp, { recursive: true, force: true });
});

interface Answer {
  status: number;
  headers: Headers;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

async function answer(r: Response): Promise<Answer> {
  const text = await r.text();
  expect(text).not.toMatch(/\n\s+at /); // never a stack trace
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`not JSON (${r.status}): ${text.slice(0, 200)}`);
  }
  return { status: r.status, headers: r.headers, body };
}

async function post(url: string, body: Uint8Array | FormData, o: { query?: Record<string, string>; type?: string; headers?: Record<string, string> } = {}): Promise<Answer> {
  const q = o.query ? `?${new URLSearchParams(o.query)}` : '';
  const headers: Record<string, string> = { ...o.headers };
  if (!(body instanceof FormData)) headers['content-type'] = o.type ?? 'audio/wav';
  return answer(await fetch(`${url}/v1/emotion${q}`, { method: 'POST', body: body instanceof FormData ? body : new Uint8Array(body), headers }));
}

const get = async (url: string, p: string, headers: Record<string, string> = {}) => answer(await fetch(`${url}${p}`, { headers }));

function expectError(a: Answer, status: number, code: string) {
  expect(a.status, JSON.stringify(a.body)).toBe(status);
  expect(a.body.error.code).toBe(code);
  expect(typeof a.body.error.message).toBe('string');
  expect(a.body.error.message).not.toContain('\n');
  expect(a.body.error.message).not.toContain(tmp); // no temp paths
  expect(a.body.error.message).not.toMatch(/emosllm-serve-/);
}

function expectSame(got: ClipPrediction, want: ClipPrediction) {
  expect(got.label).toBe(want.label);
  expect(Object.keys(got.probabilities)).toEqual(Object.keys(want.probabilities));
  for (const [k, p] of Object.entries(want.probabilities)) expect(Math.abs(got.probabilities[k] - p)).toBeLessThan(1e-6);
  expect(got.seconds).toBeCloseTo(want.seconds, 9);
  expect(got.segments.length).toBe(want.segments.length);
  got.segments.forEach((s, i) => {
    expect(s.start).toBeCloseTo(want.segments[i].start, 9);
    expect(s.end).toBeCloseTo(want.segments[i].end, 9);
    expect(s.label).toBe(want.segments[i].label);
    for (const [k, p] of Object.entries(want.segments[i].probabilities)) expect(Math.abs(s.probabilities[k] - p)).toBeLessThan(1e-6);
  });
}

async function reference(file: string, o: PredictOptions = {}): Promise<ClipPrediction> {
  return predictSamples(model, await loadAudio16k(file), o);
}

/** A server on the test's own model instance (close() does not release it). */
async function withServer(o: Omit<ServeOptions, 'model'>, fn: (s: ServerHandle) => Promise<void>): Promise<void> {
  const s = await startServer({ model, port: 0, log: () => undefined, ...o });
  try {
    await fn(s);
  } finally {
    await s.close();
  }
}

/** Polls `ok` (the server runs in this process, or answers /healthz) until it holds; fails the test if it never does. */
async function until(ok: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (await ok()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  expect(await ok()).toBe(true);
}

interface Stalled {
  socket: net.Socket;
  /** resolves when the server closes the socket (the client never does), with the bytes it sent */
  closed: Promise<string>;
}

/**
 * A client that sends a POST /v1/emotion's headers and the first `sent` bytes of `body` (or of a 100 kB body
 * of which 100 bytes are sent), then nothing. `events` gets 'stalled closed' when the server closes it.
 */
async function stalledUpload(port: number, o: { localAddress?: string; body?: Buffer; sent?: number; events?: string[] } = {}): Promise<Stalled> {
  const body = o.body ?? Buffer.concat([Buffer.from('RIFF'), Buffer.alloc(100_000 - 4)]);
  const socket = net.connect({ port, host: '127.0.0.1', localAddress: o.localAddress ?? '127.0.0.1' });
  let got = '';
  socket.on('data', (d) => (got += d));
  socket.on('error', () => undefined); // a reset after the answer: the close below still comes
  const closed = new Promise<string>((resolve) =>
    socket.once('close', () => {
      o.events?.push('stalled closed');
      resolve(got);
    }),
  );
  await once(socket, 'connect');
  const head = `POST /v1/emotion HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/wav\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
  await new Promise((r) => socket.write(Buffer.concat([Buffer.from(head), body.subarray(0, o.sent ?? 100)]), r));
  return { socket, closed };
}

/** Status and error code of a raw HTTP answer ('' when the server sent nothing). */
function rawAnswer(got: string): { status: number; code?: string } {
  const m = /^HTTP\/1\.1 (\d+) /.exec(got);
  if (!m) return { status: 0 };
  const body = got.slice(got.indexOf('\r\n\r\n') + 4);
  return { status: Number(m[1]), code: body ? JSON.parse(body).error?.code : undefined };
}

describe('serve: answers', () => {
  it('GET /healthz and GET /v1/model', async () => {
    const h = await get(main.url, '/healthz');
    expect(h.status).toBe(200);
    expect(h.body).toEqual({ status: 'ok', running: 0, waiting: 0, uploading: 0 });
    const m = await get(main.url, '/v1/model');
    expect(m.status).toBe(200);
    expect(m.body.name).toBe('model');
    expect(m.body.labels).toEqual(model.labels);
    expect(m.body.encoder.kind).toBe('fbank');
    expect(m.body.llm.builtin).toBe('tiny');
    expect(m.body.llmTrain).toBe('full');
    expect(m.body.audio.maxSeconds).toBe(model.spec.audio.maxSeconds);
    expect(m.body.limits).toMatchObject({ maxBytes: 50 * 1024 * 1024, maxSeconds: 600, timeoutMs: 120_000, queue: 64, bodyTimeoutMs: 30_000, maxUploads: 64, maxUploadsPerClient: 8, drainTimeoutMs: 10_000 });
    expectError(await get(main.url, '/nope'), 404, 'not_found');
    // malformed HTTP: our error format too
    const { port } = new URL(main.url);
    const raw = await new Promise<string>((resolve, reject) => {
      let got = '';
      const sock = net.connect(Number(port), '127.0.0.1', () => sock.write('NOT HTTP AT ALL\r\n\r\n'));
      sock.on('data', (d) => (got += d));
      sock.on('end', () => resolve(got));
      sock.on('error', reject);
    });
    expect(raw).toMatch(/^HTTP\/1\.1 400 /);
    expect(JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)).error.code).toBe('bad_request');
  });

  it('a WAV from emodb-dev gives the probabilities of predictSamples in-process', async () => {
    const a = await post(main.url, fs.readFileSync(WAV));
    expect(a.status, JSON.stringify(a.body)).toBe(200);
    expectSame(a.body, await reference(WAV));
    expect(a.body.model).toBe('model');
    expect(a.body.elapsed_ms).toBeGreaterThanOrEqual(0);
    // octet-stream, other audio types and no Content-Type at all are raw audio too
    for (const type of ['application/octet-stream', 'audio/x-wav']) expectSame((await post(main.url, fs.readFileSync(WAV), { type })).body, await reference(WAV));
    const untyped = await answer(await fetch(`${main.url}/v1/emotion`, { method: 'POST', body: fs.readFileSync(WAV) }));
    expectSame(untyped.body, await reference(WAV));
    // one log line per request: method, path, status, ms
    expect(logs.some((l) => /^POST \/v1\/emotion 200 \d+ms$/.test(l))).toBe(true);
  });

  it('FLAC and MP3 bodies are decoded like files', async () => {
    for (const ext of ['flac', 'mp3']) {
      const f = path.join(tmp, `clip.${ext}`);
      ffmpeg('-i', WAV, f);
      const a = await post(main.url, fs.readFileSync(f), { type: 'application/octet-stream' });
      expect(a.status, JSON.stringify(a.body)).toBe(200);
      expectSame(a.body, await reference(f));
    }
  });

  it('a 60 s file gives a timeline covering 0..60 s', async () => {
    const a = await post(main.url, fs.readFileSync(LONG));
    expect(a.status, JSON.stringify(a.body)).toBe(200);
    expect(a.body.seconds).toBeCloseTo(60, 6);
    const segs = a.body.segments as ClipPrediction['segments'];
    expect(segs.length).toBeGreaterThan(10);
    expect(segs[0].start).toBe(0);
    expect(segs.at(-1)!.end).toBeCloseTo(60, 6);
    for (let i = 1; i < segs.length; i++) expect(segs[i].start).toBeLessThanOrEqual(segs[i - 1].end); // no gaps
    for (const s of segs) expect(model.labels).toContain(s.label);
    expectSame(a.body, await reference(LONG));
  });

  it('multipart/form-data with the file "audio" and option fields; the same options as query parameters', async () => {
    const opts = { labels: 'anger,neutral,sadness', transcript: 'Der Lappen liegt auf dem Eisschrank.', segment: 'window', window: '1', hop: '0.5' };
    const form = new FormData();
    for (const [k, v] of Object.entries(opts)) form.append(k, v);
    form.append('audio', new Blob([fs.readFileSync(WAV)], { type: 'audio/wav' }), 'clip.wav');
    const a = await post(main.url, form);
    expect(a.status, JSON.stringify(a.body)).toBe(200);
    expect(Object.keys(a.body.probabilities)).toEqual(['anger', 'neutral', 'sadness']);
    const want = await reference(WAV, { labels: ['anger', 'neutral', 'sadness'], transcript: opts.transcript, segment: 'window', windowSeconds: 1, hopSeconds: 0.5 });
    expect(want.segments.length).toBeGreaterThan(2);
    expectSame(a.body, want);
    expectSame((await post(main.url, fs.readFileSync(WAV), { query: opts })).body, want);

    const noFile = new FormData();
    noFile.append('labels', 'anger,neutral');
    expectError(await post(main.url, noFile), 400, 'empty_body');
    const wrongField = new FormData();
    wrongField.append('file', new Blob([fs.readFileSync(WAV)]), 'clip.wav');
    expectError(await post(main.url, wrongField), 400, 'bad_multipart');
  });
});

describe('serve: limits', () => {
  it('too big body: 413 (raw and multipart)', async () => {
    await withServer({ maxBytes: 200_000 }, async (s) => {
      expectError(await post(s.url, fs.readFileSync(LONG)), 413, 'body_too_large');
      const form = new FormData();
      form.append('audio', new Blob([fs.readFileSync(LONG)]), 'long.wav');
      expectError(await post(s.url, form), 413, 'body_too_large');
      expect((await post(s.url, fs.readFileSync(WAV))).status).toBe(200);
    });
  });

  it('too long audio: 422 (WAV from the header; FLAC when decoded)', async () => {
    await withServer({ maxSeconds: 30 }, async (s) => {
      const a = await post(s.url, fs.readFileSync(LONG));
      expectError(a, 422, 'audio_too_long');
      expect(a.body.error.message).toMatch(/60\.0 s long, over the 30 s limit \(--max-seconds\)/);
      const flac = path.join(tmp, 'long60.flac');
      ffmpeg('-i', LONG, flac);
      expectError(await post(s.url, fs.readFileSync(flac), { type: 'audio/flac' }), 422, 'audio_too_long');
    });
  });

  it('not audio / undecodable: 415; a non-audio Content-Type: 415; empty body: 400; silence: 422; under 0.25 s: 422 too_short', async () => {
    expectError(await post(main.url, fs.readFileSync(path.join(REPO_ROOT, 'package.json')), { type: 'application/octet-stream' }), 415, 'not_audio');
    expectError(await post(main.url, fs.readFileSync(WAV).subarray(0, 100)), 415, 'not_audio'); // truncated WAV
    const junkFlac = Buffer.concat([Buffer.from('fLaC'), Buffer.alloc(5000, 7)]); // sniffs as FLAC, does not decode
    const junk = await post(main.url, junkFlac, { type: 'audio/flac' });
    expectError(junk, 415, 'not_audio');
    expect(junk.body.error.message).toMatch(/^cannot decode the audio: /);
    expectError(await post(main.url, Buffer.from('{"audio": 1}'), { type: 'application/json' }), 415, 'unsupported_content_type');
    expectError(await post(main.url, new Uint8Array(0)), 400, 'empty_body');
    expectError(await post(main.url, encodeWav(new Float32Array(16000), 16000)), 422, 'silent_audio');
    // below the 0.25 s minimum: its own 422, however loud
    const clip = await loadAudio16k(WAV);
    for (const n of [1, 3999]) {
      const short = await post(main.url, encodeWav(clip.subarray(8000, 8000 + n), 16000));
      expectError(short, 422, 'too_short');
      expect(short.body.error.message).toMatch(/0\.25 s|250 ms/);
    }
    expect((await post(main.url, encodeWav(clip.subarray(8000, 12000), 16000))).status).toBe(200); // exactly 0.25 s
  });

  it('a multipart body with a missing or wrong boundary, or cut off: 400 bad_multipart', async () => {
    const wav = fs.readFileSync(WAV);
    expectError(await post(main.url, wav, { type: 'multipart/form-data; boundary=zzz' }), 400, 'bad_multipart');
    expectError(await post(main.url, wav, { type: 'multipart/form-data' }), 400, 'bad_multipart');
    const form = new FormData();
    form.append('audio', new Blob([wav], { type: 'audio/wav' }), 'clip.wav');
    const encoded = new Request('http://localhost/', { method: 'POST', body: form });
    const type = encoded.headers.get('content-type')!;
    const bytes = new Uint8Array(await encoded.arrayBuffer());
    expect((await post(main.url, bytes, { type })).status).toBe(200); // the whole form is fine
    expectError(await post(main.url, bytes.subarray(0, bytes.length - 100), { type }), 400, 'bad_multipart');
  });

  it('bad parameters: 400', async () => {
    const wav = fs.readFileSync(WAV);
    const bad: Array<Record<string, string>> = [{ labels: 'anger' }, { labels: 'anger,anger' }, { labels: 'anger,,neutral' }, { segment: 'sometimes' }, { window: 'abc' }, { window: '0' }, { hop: '5' }, { segmnet: 'whole' }];
    for (const query of bad) {
      const a = await post(main.url, wav, { query });
      expectError(a, 400, 'bad_parameter');
    }
    // a repeated parameter
    expectError(await answer(await fetch(`${main.url}/v1/emotion?labels=a,b&labels=c,d`, { method: 'POST', body: wav, headers: { 'content-type': 'audio/wav' } })), 400, 'bad_parameter');
  });

  it('per-request timeout: 504, and the worker is free again right after', async () => {
    await withServer({ timeoutMs: 300 }, async (s) => {
      const t0 = performance.now();
      const a = await post(s.url, fs.readFileSync(LONG)); // ~1.5 s of work
      expectError(a, 504, 'timeout');
      expect(performance.now() - t0).toBeLessThan(3000); // answered at the deadline, not after the ~1.5 s of work
      // the aborted job stops at its next segment: a short clip fits in the budget again
      let ok = 0;
      for (let i = 0; i < 5 && !ok; i++) if ((await post(s.url, fs.readFileSync(WAV))).status === 200) ok++;
      expect(ok).toBe(1);
    });
  });

  it('queue full: 503 with Retry-After', async () => {
    await withServer({ queue: 1 }, async (s) => {
      const body = fs.readFileSync(LONG);
      const all = await Promise.all(Array.from({ length: 6 }, () => post(s.url, body)));
      const statuses = all.map((a) => a.status).sort();
      expect(statuses).toEqual([200, 200, 503, 503, 503, 503]);
      for (const a of all.filter((x) => x.status === 503)) {
        expectError(a, 503, 'queue_full');
        expect(Number(a.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      }
    });
  });

  it('bearer token: 401 + WWW-Authenticate when missing or wrong, 200 when right; /healthz stays open', async () => {
    await withServer({ token: 's3cret' }, async (s) => {
      const wav = fs.readFileSync(WAV);
      const none = await post(s.url, wav);
      expectError(none, 401, 'unauthorized');
      expect(none.headers.get('www-authenticate')).toMatch(/^Bearer realm="emosllm"$/);
      const bad = await post(s.url, wav, { headers: { authorization: 'Bearer nope' } });
      expectError(bad, 401, 'unauthorized');
      expect(bad.headers.get('www-authenticate')).toMatch(/error="invalid_token"/);
      expectError(await get(s.url, '/v1/model'), 401, 'unauthorized');
      expect((await post(s.url, wav, { headers: { authorization: 'Bearer s3cret' } })).status).toBe(200);
      expect((await get(s.url, '/v1/model', { authorization: 'Bearer s3cret' })).status).toBe(200);
      expect((await get(s.url, '/healthz')).status).toBe(200);
    });
  });
});

describe('serve: slow clients', () => {
  it('100 stalled uploads: a concurrent valid request is answered before the server closes any of them (408), each at the body timeout', async () => {
    await withServer({ bodyTimeoutMs: 3000, maxUploads: 200, maxUploadsPerClient: 200 }, async (s) => {
      const events: string[] = [];
      const stalled = await Promise.all(Array.from({ length: 100 }, () => stalledUpload(s.port, { events })));
      await until(() => s.stats().uploading === 100);
      const a = await post(s.url, fs.readFileSync(WAV));
      events.push('valid answered');
      expect(a.status, JSON.stringify(a.body)).toBe(200);
      expectSame(a.body, await reference(WAV));
      const got = await Promise.all(stalled.map((x) => x.closed));
      expect(events[0]).toBe('valid answered');
      expect(events.length).toBe(101);
      for (const g of got) expect(rawAnswer(g)).toEqual({ status: 408, code: 'request_timeout' });
      expect(s.stats().uploading).toBe(0);
    });
  });

  it('a queue place is taken only once the body is in, and --timeout counts from there', async () => {
    await withServer({ queue: 0, timeoutMs: 1000 }, async (s) => {
      const wav = fs.readFileSync(WAV);
      const slow = await stalledUpload(s.port, { body: wav, sent: 100 });
      await until(() => s.stats().uploading === 1);
      // no place waits behind the running request (--queue 0), yet the upload in progress holds none
      expect((await post(s.url, wav)).status).toBe(200);
      await new Promise((r) => setTimeout(r, 1500)); // longer than --timeout, well within --body-timeout
      slow.socket.write(wav.subarray(100)); // (not end(): a client that half-closes has its request aborted)
      const got = await slow.closed;
      expect(rawAnswer(got).status).toBe(200);
      expectSame(JSON.parse(got.slice(got.indexOf('\r\n\r\n') + 4)), await reference(WAV));
    });
  });

  it('upload caps: past the per-client cap 429, past the server cap 503, other clients served', async () => {
    await withServer({ bodyTimeoutMs: 60_000, maxUploads: 5, maxUploadsPerClient: 2 }, async (s) => {
      const open: Stalled[] = [];
      for (const localAddress of ['127.0.0.2', '127.0.0.2', '127.0.0.3', '127.0.0.3']) {
        open.push(await stalledUpload(s.port, { localAddress }));
        await until(() => s.stats().uploading === open.length);
      }
      const third = await stalledUpload(s.port, { localAddress: '127.0.0.2' });
      expect(rawAnswer(await third.closed)).toEqual({ status: 429, code: 'too_many_uploads' });
      expect((await post(s.url, fs.readFileSync(WAV))).status).toBe(200); // 127.0.0.1 is under its cap
      open.push(await stalledUpload(s.port, { localAddress: '127.0.0.4' }));
      await until(() => s.stats().uploading === 5);
      const full = await post(s.url, fs.readFileSync(WAV));
      expectError(full, 503, 'too_many_uploads');
      expect(Number(full.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      open[0].socket.destroy(); // a client that gives up frees its place
      await until(() => s.stats().uploading === 4);
      expect((await post(s.url, fs.readFileSync(WAV))).status).toBe(200);
      for (const x of open) x.socket.destroy();
    });
  });
});

describe('serve: lifecycle', () => {
  it('answers 503 while the model loads', async () => {
    const s = await startServer({ model: modelDir, port: 0, waitReady: false, log: () => undefined });
    try {
      const [h, p] = await Promise.all([get(s.url, '/healthz'), post(s.url, fs.readFileSync(WAV))]);
      expect(s.stats().state).toBe('loading');
      expect(h.status).toBe(503);
      expect(h.body).toMatchObject({ status: 'loading' });
      expectError(p, 503, 'loading');
      await s.ready;
      expect((await get(s.url, '/healthz')).body).toMatchObject({ status: 'ok' });
    } finally {
      await s.close();
    }
  });

  it('close(): the running request finishes, a queued one gets 503 shutting_down, stalled uploads are cut', async () => {
    const s = await startServer({ model, port: 0, log: () => undefined });
    const stalled = await Promise.all(Array.from({ length: 3 }, () => stalledUpload(s.port)));
    await until(() => s.stats().uploading === 3);
    const long = post(s.url, fs.readFileSync(LONG));
    await until(() => s.stats().running);
    const short = post(s.url, fs.readFileSync(WAV));
    await until(() => s.stats().waiting === 1);
    const closed = s.close(); // the stalled clients never close their sockets: the server must
    const [a, b] = await Promise.all([long, short]);
    await closed;
    expect(a.status).toBe(200);
    expect(a.body.seconds).toBeCloseTo(60, 6);
    expectError(b, 503, 'shutting_down');
    for (const x of stalled) expect([0, 503]).toContain(rawAnswer(await x.closed).status);
    await expect(fetch(`${s.url}/healthz`)).rejects.toThrow();
    expect(s.stats().state).toBe('closed');
  });

  it('close(): past the drain timeout the running request gets 503 shutting_down', async () => {
    const s = await startServer({ model, port: 0, log: () => undefined, drainTimeoutMs: 100 });
    // 60 s in 1 s windows every 0.5 s: ~120 segments, far longer than the drain timeout
    const long = post(s.url, fs.readFileSync(LONG), { query: { segment: 'window', window: '1', hop: '0.5' } });
    await until(() => s.stats().running);
    await s.close();
    expectError(await long, 503, 'shutting_down');
    expect(s.stats().state).toBe('closed');
  });

  it('CLI: emosllm serve --port 0 prints the address and answers; on SIGTERM with stalled uploads open it finishes the running request, answers the queued one 503 shutting_down and exits 0', async () => {
    // a body timeout longer than the test: only the shutdown can close the stalled uploads
    const child = spawn(process.execPath, [CLI, 'serve', '--model', modelDir, '--port', '0', '--body-timeout', '600', '--drain-timeout', '10'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout.on('data', (d) => {
        out += d;
        const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
        if (m) resolve(m[1]);
      });
      child.on('exit', () => reject(new Error(`serve exited early: ${err}`)));
    });
    const a = await post(url, fs.readFileSync(WAV));
    expect(a.status).toBe(200);
    expectSame(a.body, await reference(WAV));
    const health = async () => (await get(url, '/healthz')).body;
    const stalled = await Promise.all(Array.from({ length: 3 }, () => stalledUpload(Number(new URL(url).port))));
    await until(async () => (await health()).uploading === 3);
    const running = post(url, fs.readFileSync(LONG));
    await until(async () => (await health()).running === 1);
    const queued = post(url, fs.readFileSync(WAV));
    await until(async () => (await health()).waiting === 1);
    child.kill('SIGTERM');
    const [b, c] = await Promise.all([running, queued]);
    expect(b.status, JSON.stringify(b.body)).toBe(200);
    expectError(c, 503, 'shutting_down');
    expect(await exited).toBe(0);
    for (const x of stalled) expect([0, 503]).toContain(rawAnswer(await x.closed).status);
    expect(err).toMatch(/POST \/v1\/emotion 200 \d+ms/);
    expect(err).toMatch(/SIGTERM: shutting down/);
  });
});
