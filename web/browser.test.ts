/**
 * The on-device browser demo end to end: Vite build of web/, served on 127.0.0.1 with an export folder
 * beside it, driven in Debian's headless Chromium (playwright-core). A 16 kHz mono 16-bit WAV goes in
 * through the page's file input; the probabilities the page shows (clip and every segment) must equal what
 * `emosllm predict`, run as a CLI process on the trained model folder the export came from, prints for the
 * same file, within 1e-3: on a 7 s clip (scored whole) and a 20 s clip (3 s windows, duration-weighted mean).
 *
 * The model is a real `emosllm export` of a model trained in the setup (fbank + tiny LLM, a few steps on an
 * emodb-dev subset: its verdicts are poor, what matters is that the page computes exactly what predict does);
 * EMOSLLM_WEB_MODEL_DIR=<export folder> runs the test on another export instead (its manifest's `source`
 * names the model folder predict loads).
 * EMOSLLM_WEB_SCREENSHOT=<file.png> saves a screenshot of the page with its result.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeAudioFile, loadAudio16k } from '../src/audio/decode.ts';
import type { Timeline } from '../src/audio/segments.ts';
import { encodeWav } from '../src/audio/wav.ts';
import type { ClipPrediction } from '../src/eval/predict.ts';
import { exportModel } from '../src/export/export.ts';
import { REPO_ROOT, emodbDev } from '../test/fixtures-gen/paths.ts';
import { trainSmallModel } from '../test/fixtures-gen/model.ts';
import { type BrowserDemo, startBrowserDemo } from './harness.ts';
import { type ExportManifest, exportFiles, parseManifest } from '../src/export/manifest.ts';

const TOL = 1e-3;
const CLI = path.join(REPO_ROOT, 'bin/emosllm.mjs');

interface PageResult extends Timeline {
  backend: string;
  source: string;
}

/**
 * The export under test and the model folder it was exported from: EMOSLLM_WEB_MODEL_DIR (an export) with
 * EMOSLLM_WEB_MODEL_FROM (its model folder: the manifest names no local path), or a model trained and exported
 * into `tmp`.
 */
async function modelUnderTest(tmp: string): Promise<{ dir: string; modelDir: string; manifest: ExportManifest }> {
  const given = process.env.EMOSLLM_WEB_MODEL_DIR;
  const dir = given ? path.resolve(given) : path.join(tmp, 'export');
  const trained = given ? undefined : await trainSmallModel(tmp);
  if (trained) await exportModel(trained, dir, { log: () => {} });
  const json = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  const modelDir = trained ?? process.env.EMOSLLM_WEB_MODEL_FROM;
  if (!modelDir) throw new Error('EMOSLLM_WEB_MODEL_DIR needs EMOSLLM_WEB_MODEL_FROM, the model folder it was exported from');
  return { dir, modelDir, manifest: parseManifest(json) };
}

/** `seconds` of real speech: emodb-dev clips back to back (four speakers, cycled). */
async function speechClip(seconds: number): Promise<Float32Array> {
  const files = ['03a01Fa.wav', '08a01Wa.wav', '09a01Ea.wav', '10a01Ac.wav', '11a01Ld.wav', '13a01Ea.wav'].map((f) => path.join(emodbDev().wavDir, f));
  const out = new Float32Array(Math.round(seconds * 16000));
  for (let i = 0, k = 0; i < out.length; k++) {
    const c = await loadAudio16k(files[k % files.length]!);
    out.set(c.subarray(0, Math.min(c.length, out.length - i)), i);
    i += c.length;
  }
  return out;
}

/** `emosllm predict` on the files, as a CLI process: one JSON line per file. */
function predictCli(modelDir: string, files: string[], env: NodeJS.ProcessEnv): Map<string, ClipPrediction> {
  const r = spawnSync(process.execPath, [CLI, 'predict', '--model', modelDir, ...files], { encoding: 'utf8', env });
  if (r.status !== 0) throw new Error(`emosllm predict exited ${r.status}: ${r.stderr}`);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as ClipPrediction & { file: string });
  return new Map(lines.map((l) => [l.file, l]));
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

/** predict's probabilities in the page's label order. */
const inOrder = (labels: string[], p: Record<string, number>) => labels.map((l) => p[l]!);

describe('browser demo (Chromium, onnxruntime-web)', () => {
  let tmp: string;
  let demo: BrowserDemo;
  let model: Awaited<ReturnType<typeof modelUnderTest>>;
  let wav7: string;
  let wav20: string;
  let predicted: Map<string, ClipPrediction>;
  const consoleErrors: string[] = [];

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-web-test-'));
    model = await modelUnderTest(tmp);
    wav7 = path.join(tmp, 'clip7.wav');
    wav20 = path.join(tmp, 'clip20.wav');
    fs.writeFileSync(wav7, encodeWav(await speechClip(7), model.manifest.sample_rate, 'pcm16'));
    fs.writeFileSync(wav20, encodeWav(await speechClip(20), model.manifest.sample_rate, 'pcm16'));
    predicted = predictCli(model.modelDir, [wav7, wav20], { ...process.env, EMOSLLM_CACHE_DIR: path.join(tmp, 'cache') });
    demo = await startBrowserDemo({
      modelDir: model.dir,
      // a fake microphone (a beep) that needs no permission prompt
      chromiumArgs: ['--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream'],
    });
  }, 300_000);

  afterAll(async () => {
    await demo?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  /** A page with the served export loaded, recording its requests and errors. */
  async function readyPage(requests: string[] = []): Promise<Page> {
    const page = await demo.newPage();
    page.on('request', (r) => requests.push(`${r.method()} ${r.url()}`));
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    page.on('pageerror', (e) => consoleErrors.push(String(e)));
    await page.goto(demo.pageUrl());
    await waitForStatus(page, ['ready']);
    return page;
  }

  async function analyse(page: Page, wav: string): Promise<PageResult> {
    await page.setInputFiles('#audio-file', wav);
    await waitForStatus(page, ['done']);
    return page.evaluate(() => window.__emosllmResult as unknown as PageResult);
  }

  /** The page's clip and segment probabilities against `emosllm predict`'s for the same file. */
  function expectSameAsPredict(got: PageResult, wav: string): ClipPrediction {
    const want = predicted.get(wav)!;
    expect(want, `emosllm predict printed no line for ${wav}`).toBeDefined();
    expect(got.seconds).toBeCloseTo(want.seconds, 6);
    expect(got.segments.map((s) => [s.start, s.end])).toEqual(want.segments.map((s) => [s.start, s.end]));
    for (const [i, s] of got.segments.entries()) {
      expect(maxAbsDiff(s.probabilities, inOrder(got.labels, want.segments[i]!.probabilities)), `segment ${i} probabilities`).toBeLessThanOrEqual(TOL);
      expect(s.scores).toHaveLength(got.labels.length);
    }
    const wantP = inOrder(got.labels, want.probabilities);
    expect(maxAbsDiff(got.probabilities, wantP), 'clip probabilities').toBeLessThanOrEqual(TOL);
    const sorted = [...wantP].sort((a, b) => b - a);
    if (sorted[0]! - sorted[1]! > 2 * TOL) expect(got.label).toBe(want.label);
    return want;
  }

  it('a 7 s clip: decoded as Node does, scored whole, the probabilities of emosllm predict within 1e-3', async () => {
    const decoded = await decodeAudioFile(wav7);
    expect(decoded.sampleRate).toBe(model.manifest.sample_rate);
    const requests: string[] = [];
    const page = await readyPage(requests);
    const info = await page.evaluate(() => window.__emosllmModel!);
    expect(info.labels).toEqual(model.manifest.labels);
    const got = await analyse(page, wav7);
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

    expect(got.source).toBe('clip7.wav');
    expect(got.labels).toEqual(model.manifest.labels);
    expect(got.segments.map((s) => [s.start, s.end])).toEqual([[0, 7]]); // up to 10 s: one segment, as predict
    expectSameAsPredict(got, wav7);

    // What the page shows: the verdict, one bar per label with its percentage, one timeline row per segment.
    expect(await page.textContent('#top-label')).toBe(got.label);
    const bars = await page.$$eval('#bars g[data-label]', (gs) => gs.map((g) => [g.getAttribute('data-label'), g.querySelector('text.value')?.textContent]));
    expect(bars).toEqual(got.labels.map((l, i) => [l, `${(100 * got.probabilities[i]!).toFixed(1)}%`]));
    expect(await page.locator('#timeline g.segment').count()).toBe(got.segments.length);

    // Everything stayed on the page's own origin: no request elsewhere, nothing posted.
    const foreign = requests.filter((r) => {
      const [method, url = ''] = r.split(' ');
      return method !== 'GET' || !(url.startsWith(`${demo.server.origin}/`) || url.startsWith('blob:') || url.startsWith('data:'));
    });
    expect(foreign).toEqual([]);
    expect(demo.server.log.some((l) => l.startsWith('GET /ort/ort-wasm-simd-threaded.jsep.wasm 200'))).toBe(true);
    expect(demo.server.log.filter((l) => !l.endsWith(' 200'))).toEqual([]);
    expect(consoleErrors).toEqual([]);
    await page.close();
  });

  it('a 20 s clip: the windows and their duration-weighted mean are those of emosllm predict within 1e-3', async () => {
    const page = await readyPage();
    const got = await analyse(page, wav20);
    // 3 s windows, 1.5 s hop, the last one stops at 20 s: starts 0, 1.5, ..., 18
    expect(got.segments).toHaveLength(13);
    expect(got.segments[12]).toMatchObject({ start: 18, end: 20 });
    expectSameAsPredict(got, wav20);
    const shown = await page.$$eval('#segments tr[data-index]', (rows) => rows.map((r) => [...r.querySelectorAll('td[data-p]')].map((td) => Number(td.getAttribute('data-p')))));
    expect(shown).toHaveLength(13);
    for (const [i, row] of shown.entries()) expect(maxAbsDiff(row, got.segments[i]!.probabilities)).toBeLessThanOrEqual(1e-12);
    expect(consoleErrors).toEqual([]);

    const shot = process.env.EMOSLLM_WEB_SCREENSHOT;
    if (shot) await page.screenshot({ path: shot, fullPage: true });
    const want = predicted.get(wav20)!;
    console.log(
      `browser demo: ${model.dir}, backend ${got.backend}, ${got.segments.length} windows, label ${got.label}, ` +
        `max |p_web - p_predict| ${Math.max(...got.segments.map((s, i) => maxAbsDiff(s.probabilities, inOrder(got.labels, want.segments[i]!.probabilities)))).toExponential(2)}`,
    );
    await page.close();
  });

  it('loads the export from picked files (no URL) and gives the same result', async () => {
    const page = await demo.newPage();
    await page.goto(demo.server.origin + '/');
    expect(await page.evaluate(() => window.__emosllmStatus)).toBe('idle');
    // audio first: it waits for the model
    await page.setInputFiles('#audio-file', wav7);
    await page.setInputFiles('#model-files', exportFiles(model.manifest).map((f) => path.join(model.dir, f)));
    await waitForStatus(page, ['done']);
    expectSameAsPredict(await page.evaluate(() => window.__emosllmResult as unknown as PageResult), wav7);
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
    expect(got.seconds).toBeGreaterThan(1);
    expect(got.segments.length).toBeGreaterThanOrEqual(1);
    expect(Math.abs(got.probabilities.reduce((a, b) => a + b, 0) - 1)).toBeLessThan(1e-3);
    expect(await page.isVisible('#result')).toBe(true);
    await page.close();
  });
});
