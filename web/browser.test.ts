/**
 * The on-device browser demo end to end: Vite build of web/, served on 127.0.0.1 with an export folder
 * beside it, driven in Debian's headless Chromium (playwright-core). A 16 kHz mono 16-bit WAV goes in
 * through the page's file input; the samples the page hands to the model and the probabilities it shows
 * must equal what Node computes (our WAV decoder + onnxruntime-node on the same model.onnx, same
 * windowing code) within 1e-3.
 *
 * The model is a real `emosllm export` of a model trained in the setup (fbank + tiny LLM, a few steps on an
 * emodb-dev subset: its verdicts are poor, what matters is that the page computes exactly what Node does);
 * EMOSLLM_WEB_MODEL_DIR=<export folder> runs the test on another export instead.
 * EMOSLLM_WEB_SCREENSHOT=<file.png> saves a screenshot of the page with its result.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeAudioFile } from '../src/audio/decode.ts';
import { encodeWav } from '../src/audio/wav.ts';
import { type BrowserDemo, startBrowserDemo } from './harness.ts';
import { type ExportManifest, exportFiles, parseManifest } from './src/manifest.ts';
import { type TimelineResult, runTimeline } from './src/timeline.ts';
import { loadAudio16k } from '../src/audio/decode.ts';
import { exportModel } from '../src/export/export.ts';
import { emodbDev } from '../test/fixtures-gen/paths.ts';
import { trainSmallModel } from '../test/fixtures-gen/model.ts';

const TOL = 1e-3;

interface PageResult extends TimelineResult {
  backend: string;
  source: string;
}

/** The export under test: EMOSLLM_WEB_MODEL_DIR, or a model trained and exported into `tmp`. */
async function modelUnderTest(tmp: string): Promise<{ dir: string; manifest: ExportManifest; given: boolean }> {
  const given = process.env.EMOSLLM_WEB_MODEL_DIR;
  const dir = given ? path.resolve(given) : path.join(tmp, 'export');
  if (!given) await exportModel(await trainSmallModel(tmp), dir, { log: () => {} });
  return { dir, manifest: parseManifest(JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'))), given: !!given };
}

/** 7 s of real speech: emodb-dev clips back to back. */
async function speechClip(seconds: number): Promise<Float32Array> {
  const files = ['03a01Fa.wav', '08a01Wa.wav', '09a01Ea.wav', '10a01Ac.wav'].map((f) => path.join(emodbDev().wavDir, f));
  const out = new Float32Array(Math.round(seconds * 16000));
  for (let i = 0, k = 0; i < out.length; k++) {
    const c = await loadAudio16k(files[k % files.length]);
    out.set(c.subarray(0, Math.min(c.length, out.length - i)), i);
    i += c.length;
  }
  return out;
}

/** The same windows through onnxruntime-node (the reference). */
async function nodeReference(modelDir: string, manifest: ExportManifest, samples: Float32Array): Promise<TimelineResult> {
  const session = await ort.InferenceSession.create(path.join(modelDir, manifest.model), { intraOpNumThreads: 1, interOpNumThreads: 1 });
  try {
    return await runTimeline(samples, manifest, async (w) => {
      const out = await session.run({ audio: new ort.Tensor('float32', w.slice(), [1, w.length]) });
      return { probabilities: out.probabilities!.data as Float32Array, scores: out.scores!.data as Float32Array };
    });
  } finally {
    await session.release();
  }
}

async function waitForStatus(page: Page, want: string[], timeout = 90_000): Promise<string> {
  await page.waitForFunction((w) => w.includes(window.__emosllmStatus) || window.__emosllmStatus === 'error', want, { timeout });
  const status = await page.evaluate(() => window.__emosllmStatus);
  if (status === 'error' && !want.includes('error')) throw new Error(`page error: ${await page.evaluate(() => window.__emosllmError)}`);
  return status;
}

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

describe('browser demo (Chromium, onnxruntime-web)', () => {
  let tmp: string;
  let demo: BrowserDemo;
  let model: Awaited<ReturnType<typeof modelUnderTest>>;
  let clip: Float32Array;
  const consoleErrors: string[] = [];

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-web-test-'));
    model = await modelUnderTest(tmp);
    clip = await speechClip(7);
    demo = await startBrowserDemo({
      modelDir: model.dir,
      // a fake microphone (a beep) that needs no permission prompt
      chromiumArgs: ['--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream'],
    });
  }, 240_000);

  afterAll(async () => {
    await demo?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('runs a WAV on-device and matches onnxruntime-node within 1e-3', async () => {
    // 7 s at 16 kHz: windows 0-3, 1.5-4.5, 3-6, 4.5-7 s (the last one shorter).
    const wav = path.join(tmp, 'clip.wav');
    fs.writeFileSync(wav, encodeWav(clip, model.manifest.sample_rate, 'pcm16'));
    const decoded = await decodeAudioFile(wav);
    expect(decoded.sampleRate).toBe(model.manifest.sample_rate);

    const page = await demo.newPage();
    const requests: string[] = [];
    page.on('request', (r) => requests.push(`${r.method()} ${r.url()}`));
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    page.on('pageerror', (e) => consoleErrors.push(String(e)));
    await page.goto(demo.pageUrl());
    await waitForStatus(page, ['ready']);
    const info = await page.evaluate(() => window.__emosllmModel!);
    expect(info.labels).toEqual(model.manifest.labels);

    await page.setInputFiles('#audio-file', wav);
    await waitForStatus(page, ['done']);
    const got = await page.evaluate(() => window.__emosllmResult as unknown as PageResult);
    const pageSamples = await page.evaluate(() => Array.from(window.__emosllmSamples!));

    // The page decoded the WAV without resampling: the same int16 samples as our Node decoder. Only the
    // int16 -> float scaling differs: Node (src/audio/wav.ts) divides by 32768, Chromium by 32768 below zero
    // and by 32767 above it (as Chromium's media code converts int16): at most 1 LSB apart (at full scale).
    expect(pageSamples.length).toBe(decoded.samples.length);
    const chromiumScaled = decoded.samples.map((v) => {
      const q = Math.round(v * 32768);
      return q < 0 ? q / 32768 : q / 32767;
    });
    expect(maxAbsDiff(pageSamples, chromiumScaled)).toBeLessThanOrEqual(6e-8); // float32 rounding of that scaling
    expect(maxAbsDiff(pageSamples, decoded.samples)).toBeLessThanOrEqual(1.0001 / 32768);

    // The reference runs on exactly the samples the page passed to the model.
    const ref = await nodeReference(model.dir, model.manifest, Float32Array.from(pageSamples));
    expect(got.source).toBe('clip.wav');
    expect(got.labels).toEqual(ref.labels);
    expect(got.segments.map((s) => [s.startSample, s.endSample])).toEqual(ref.segments.map((s) => [s.startSample, s.endSample]));
    expect(got.segments.length).toBe(4);
    for (const [i, s] of got.segments.entries()) {
      expect(maxAbsDiff(s.probabilities, ref.segments[i]!.probabilities), `window ${i} probabilities`).toBeLessThanOrEqual(TOL);
      expect(maxAbsDiff(s.scores, ref.segments[i]!.scores), `window ${i} scores`).toBeLessThanOrEqual(TOL * Math.max(1, ...ref.segments[i]!.scores.map(Math.abs)));
    }
    expect(maxAbsDiff(got.aggregate, ref.aggregate)).toBeLessThanOrEqual(TOL);
    const sorted = [...ref.aggregate].sort((a, b) => b - a);
    if (sorted[0]! - sorted[1]! > 2 * TOL) expect(got.label).toBe(ref.label);

    // What the page shows: the verdict, one bar per label with its percentage, one timeline row per window.
    expect(await page.textContent('#top-label')).toBe(got.label);
    const bars = await page.$$eval('#bars g[data-label]', (gs) => gs.map((g) => [g.getAttribute('data-label'), g.querySelector('text.value')?.textContent]));
    expect(bars).toEqual(got.labels.map((l, i) => [l, `${(100 * got.aggregate[i]!).toFixed(1)}%`]));
    expect(await page.locator('#timeline g.segment').count()).toBe(got.segments.length);
    const shown = await page.$$eval('#segments tr[data-index]', (rows) => rows.map((r) => [...r.querySelectorAll('td[data-p]')].map((td) => Number(td.getAttribute('data-p')))));
    for (const [i, row] of shown.entries()) expect(maxAbsDiff(row, ref.segments[i]!.probabilities)).toBeLessThanOrEqual(TOL);

    // Everything stayed on the page's own origin: no request elsewhere, nothing posted.
    const foreign = requests.filter((r) => {
      const [method, url = ''] = r.split(' ');
      return method !== 'GET' || !(url.startsWith(`${demo.server.origin}/`) || url.startsWith('blob:') || url.startsWith('data:'));
    });
    expect(foreign).toEqual([]);
    expect(demo.server.log.some((l) => l.startsWith('GET /ort/ort-wasm-simd-threaded.jsep.wasm 200'))).toBe(true);
    expect(demo.server.log.filter((l) => !l.endsWith(' 200'))).toEqual([]);
    expect(consoleErrors).toEqual([]);

    const shot = process.env.EMOSLLM_WEB_SCREENSHOT;
    if (shot) await page.screenshot({ path: shot, fullPage: true });
    console.log(
      `browser demo: ${model.dir}, backend ${got.backend}, ${got.segments.length} windows, ` +
        `label ${got.label}, max |p_web - p_node| ${Math.max(...got.segments.map((s, i) => maxAbsDiff(s.probabilities, ref.segments[i]!.probabilities))).toExponential(2)}`,
    );
    await page.close();
  });

  it('loads the export from picked files (no URL) and gives the same result', async () => {
    const wav = path.join(tmp, 'clip.wav');
    if (!fs.existsSync(wav)) fs.writeFileSync(wav, encodeWav(clip, model.manifest.sample_rate, 'pcm16'));
    const page = await demo.newPage();
    await page.goto(demo.server.origin + '/');
    expect(await page.evaluate(() => window.__emosllmStatus)).toBe('idle');
    // audio first: it waits for the model
    await page.setInputFiles('#audio-file', wav);
    await page.setInputFiles('#model-files', exportFiles(model.manifest).map((f) => path.join(model.dir, f)));
    await waitForStatus(page, ['done']);
    const got = await page.evaluate(() => window.__emosllmResult as unknown as PageResult);
    const samples = await page.evaluate(() => Float32Array.from(window.__emosllmSamples!));
    const ref = await nodeReference(model.dir, model.manifest, samples);
    expect(maxAbsDiff(got.aggregate, ref.aggregate)).toBeLessThanOrEqual(TOL);
    expect(await page.textContent('#model-status')).toContain('local files');
    await page.close();
  });

  it('records from the microphone (Chromium fake device) and shows a result', async () => {
    const page = await demo.newPage();
    await demo.context.grantPermissions(['microphone'], { origin: demo.server.origin });
    await page.goto(demo.pageUrl());
    await waitForStatus(page, ['ready']);
    await page.click('#record');
    await page.waitForFunction(() => document.querySelector('#record')?.classList.contains('recording'), undefined, { timeout: 20_000 });
    await page.waitForTimeout(2000);
    await page.click('#record');
    await waitForStatus(page, ['done']);
    const got = await page.evaluate(() => window.__emosllmResult as unknown as PageResult);
    expect(got.source).toBe('recording');
    expect(got.durationSeconds).toBeGreaterThan(1);
    expect(got.segments.length).toBeGreaterThanOrEqual(1);
    expect(Math.abs(got.aggregate.reduce((a, b) => a + b, 0) - 1)).toBeLessThan(1e-3);
    expect(await page.isVisible('#result')).toBe(true);
    await page.close();
  });
});
