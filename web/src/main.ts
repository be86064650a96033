/**
 * The demo page: load an export (URL or picked files), take audio (file or microphone), run every window
 * on-device and show the verdict, the bar chart and the timeline. Segmenting and aggregation are the ones
 * `emosllm predict` uses (src/audio/segments.ts): clips up to 10 s whole, longer ones in windows.
 *
 * For tests and automation the page also exposes its state on window:
 *   __emosllmStatus  'idle' | 'loading-model' | 'ready' | 'decoding' | 'running' | 'done' | 'error'
 *   __emosllmModel   { labels, backend, ... } once a model is loaded
 *   __emosllmResult  the last result (Timeline + backend, source, timings)
 *   __emosllmSamples the 16 kHz mono samples that were passed to the model (segmented)
 *   __emosllmError   the last error message
 */
import { decodeAudio, MicRecorder } from './audio.ts';
import { barChart, labelColor, pct, timelineChart } from './charts.ts';
import { type BackendChoice, type LoadedModel, exportBaseUrl, loadModel, type ModelSource } from './model.ts';
import { type Timeline, scoreTimeline } from '../../src/audio/segments.ts';

export interface PageResult extends Timeline {
  runId: number;
  backend: string;
  source: string;
  decodeMs: number;
  inferMs: number;
}

type Status = 'idle' | 'loading-model' | 'ready' | 'decoding' | 'running' | 'done' | 'error';

declare global {
  interface Window {
    __emosllmStatus: Status;
    __emosllmModel?: { labels: string[]; backend: string; backendNote?: string; where: string; windowSeconds: number; hopSeconds: number; sampleRate: number };
    __emosllmResult?: PageResult;
    __emosllmSamples?: Float32Array;
    __emosllmError?: string;
  }
}

const MAX_RECORD_SECONDS = 120;
const $ = <T extends HTMLElement>(id: string): T => {
  const e = document.getElementById(id);
  if (!e) throw new Error(`#${id} missing from the page`);
  return e as T;
};

const ui = {
  modelUrl: $<HTMLInputElement>('model-url'),
  modelLoad: $<HTMLButtonElement>('model-load'),
  modelDir: $<HTMLInputElement>('model-dir'),
  modelFiles: $<HTMLInputElement>('model-files'),
  backend: $<HTMLSelectElement>('backend'),
  modelStatus: $('model-status'),
  audioFile: $<HTMLInputElement>('audio-file'),
  record: $<HTMLButtonElement>('record'),
  recordStatus: $('record-status'),
  player: $<HTMLAudioElement>('player'),
  audioStatus: $('audio-status'),
  result: $('result'),
  topLabel: $('top-label'),
  topP: $('top-p'),
  bars: $('bars'),
  timeline: $('timeline'),
  segments: $<HTMLTableElement>('segments'),
  resultMeta: $('result-meta'),
};

let model: LoadedModel | undefined;
let loadSeq = 0;
let runSeq = 0;
/** Audio chosen before a model was ready: analysed once one is. */
let pending: { bytes: ArrayBuffer; name: string } | undefined;
const recorder = new MicRecorder();
let recordTimer: number | undefined;
let playerUrl: string | undefined;

const message = (e: unknown): string => (e instanceof Error ? e.message : String(e)).split('\n')[0]!;

function setStatus(s: Status, error?: string): void {
  window.__emosllmStatus = s;
  if (error !== undefined) window.__emosllmError = error;
  document.body.dataset.status = s;
}

function say(el: HTMLElement, text: string, isError = false): void {
  el.textContent = text;
  el.classList.toggle('error', isError);
}

async function load(src: ModelSource): Promise<void> {
  const seq = ++loadSeq;
  setStatus('loading-model');
  say(ui.modelStatus, 'Loading the model…');
  const old = model;
  model = undefined;
  await old?.release().catch(() => undefined);
  try {
    const m = await loadModel(src, ui.backend.value as BackendChoice);
    if (seq !== loadSeq) {
      await m.release();
      return;
    }
    model = m;
    const mf = m.manifest;
    window.__emosllmModel = {
      labels: mf.labels,
      backend: m.backend,
      backendNote: m.backendNote,
      where: m.where,
      windowSeconds: mf.window_seconds,
      hopSeconds: mf.hop_seconds,
      sampleRate: mf.sample_rate,
    };
    say(
      ui.modelStatus,
      `Loaded ${m.where}: ${mf.labels.length} labels (${mf.labels.join(', ')}), ${mf.window_seconds} s windows, hop ${mf.hop_seconds} s, ` +
        `on ${m.backend === 'webgpu' ? 'WebGPU' : 'WASM'}${m.backendNote ? ` (${m.backendNote})` : ''}.`,
    );
    setStatus('ready');
    if (pending) {
      const p = pending;
      pending = undefined;
      await analyze(p.bytes, p.name);
    }
  } catch (e) {
    if (seq !== loadSeq) return;
    say(ui.modelStatus, `Could not load the model: ${message(e)}`, true);
    setStatus('error', message(e));
  }
}

function showPlayer(blob: Blob): void {
  if (playerUrl) URL.revokeObjectURL(playerUrl);
  playerUrl = URL.createObjectURL(blob);
  ui.player.src = playerUrl;
  ui.player.hidden = false;
}

async function analyze(bytes: ArrayBuffer, name: string): Promise<void> {
  if (!model) {
    pending = { bytes, name };
    say(ui.audioStatus, `${name}: load a model first; it runs as soon as one is loaded.`);
    return;
  }
  const m = model;
  const id = ++runSeq;
  setStatus('decoding');
  say(ui.audioStatus, `Decoding ${name}…`);
  try {
    const t0 = performance.now();
    const clip = await decodeAudio(bytes, m.manifest.sample_rate);
    const t1 = performance.now();
    if (id !== runSeq) return;
    window.__emosllmSamples = clip.samples;
    setStatus('running');
    const mf = m.manifest;
    const opts = { labels: mf.labels, sampleRate: mf.sample_rate, windowSeconds: mf.window_seconds, hopSeconds: mf.hop_seconds };
    const r = await scoreTimeline(clip.samples, {
      ...opts,
      onProgress: (done, total) => {
        if (id === runSeq) say(ui.audioStatus, `${name}: ${clip.durationSeconds.toFixed(2)} s, segment ${Math.min(done + 1, total)} of ${total}…`);
      },
    }, m.infer);
    const t2 = performance.now();
    if (id !== runSeq) return;
    const result: PageResult = { ...r, runId: id, backend: m.backend, source: name, decodeMs: t1 - t0, inferMs: t2 - t1 };
    render(result, clip.channels);
    say(ui.audioStatus, `${name}: ${clip.durationSeconds.toFixed(2)} s, ${clip.channels} channel${clip.channels > 1 ? 's' : ''} → mono ${clip.sampleRate} Hz.`);
    window.__emosllmResult = result;
    setStatus('done');
  } catch (e) {
    if (id !== runSeq) return;
    say(ui.audioStatus, `${name}: ${message(e)}`, true);
    setStatus('error', message(e));
  }
}

function render(r: PageResult, channels: number): void {
  const best = r.labels.indexOf(r.label);
  ui.topLabel.textContent = r.label;
  ui.topLabel.style.color = labelColor(r.label, best);
  ui.topP.textContent = r.segments.length > 1 ? `${pct(r.probabilities[best]!)} duration-weighted mean over ${r.segments.length} windows` : `${pct(r.probabilities[best]!)} (scored whole)`;
  ui.bars.replaceChildren(barChart(r.labels, r.probabilities));
  ui.timeline.replaceChildren(timelineChart(r));

  const head = document.createElement('tr');
  for (const h of ['#', 'start', 'end', 'label', ...r.labels]) {
    const th = document.createElement('th');
    th.textContent = h;
    head.appendChild(th);
  }
  const rows = r.segments.map((s, index) => {
    const tr = document.createElement('tr');
    tr.dataset.index = String(index);
    const cells = [`${index + 1}`, `${s.start.toFixed(2)} s`, `${s.end.toFixed(2)} s`];
    for (const c of cells) {
      const td = document.createElement('td');
      td.textContent = c;
      tr.appendChild(td);
    }
    const lt = document.createElement('td');
    const dot = document.createElement('span');
    dot.className = 'dot';
    dot.style.background = labelColor(s.label, r.labels.indexOf(s.label));
    lt.append(dot, s.label);
    tr.appendChild(lt);
    s.probabilities.forEach((p, i) => {
      const td = document.createElement('td');
      td.textContent = pct(p);
      td.dataset.p = String(p);
      if (r.labels[i] === s.label) td.className = 'top';
      tr.appendChild(td);
    });
    return tr;
  });
  ui.segments.replaceChildren(head, ...rows);
  ui.resultMeta.textContent =
    `${r.source}: ${r.seconds.toFixed(2)} s (${channels} ch → mono ${r.sampleRate} Hz), ${r.segments.length} segment${r.segments.length > 1 ? 's' : ''}, ` +
    `decoded in ${r.decodeMs.toFixed(0)} ms, model ${r.inferMs.toFixed(0)} ms on ${r.backend === 'webgpu' ? 'WebGPU' : 'WASM'}.`;
  ui.result.hidden = false;
}

async function toggleRecording(): Promise<void> {
  if (recorder.recording) {
    window.clearInterval(recordTimer);
    ui.record.classList.remove('recording');
    ui.record.textContent = '● Record';
    const blob = await recorder.stop();
    say(ui.recordStatus, '');
    showPlayer(blob);
    await analyze(await blob.arrayBuffer(), 'recording');
    return;
  }
  try {
    await recorder.start();
  } catch (e) {
    say(ui.recordStatus, `Microphone: ${message(e)}`, true);
    return;
  }
  ui.record.classList.add('recording');
  ui.record.textContent = '■ Stop';
  recordTimer = window.setInterval(() => {
    const s = (performance.now() - recorder.startedAt) / 1000;
    say(ui.recordStatus, `Recording… ${s.toFixed(1)} s`);
    if (s >= MAX_RECORD_SECONDS) void toggleRecording();
  }, 200);
}

function init(): void {
  setStatus('idle');
  const params = new URLSearchParams(location.search);
  const ep = params.get('ep');
  if (ep === 'wasm' || ep === 'webgpu' || ep === 'auto') ui.backend.value = ep;
  ui.modelLoad.addEventListener('click', () => {
    if (ui.modelUrl.value.trim()) void load({ kind: 'url', base: exportBaseUrl(ui.modelUrl.value) });
  });
  ui.modelUrl.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') ui.modelLoad.click();
  });
  for (const input of [ui.modelDir, ui.modelFiles]) {
    input.addEventListener('change', () => {
      const files = [...(input.files ?? [])];
      input.value = '';
      if (files.length) void load({ kind: 'files', files });
    });
  }
  ui.audioFile.addEventListener('change', async () => {
    const f = ui.audioFile.files?.[0];
    ui.audioFile.value = '';
    if (!f) return;
    showPlayer(f);
    await analyze(await f.arrayBuffer(), f.name);
  });
  ui.record.addEventListener('click', () => void toggleRecording());
  const m = params.get('model');
  if (m) {
    ui.modelUrl.value = m;
    void load({ kind: 'url', base: exportBaseUrl(m) });
  }
}

init();
