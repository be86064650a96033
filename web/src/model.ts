/**
 * Loading an "emosllm-onnx/1" export into onnxruntime-web, from a URL (a folder served beside the page) or
 * from files the user picked, and running it on-device: WebGPU where the browser has an adapter, else WASM.
 */
import * as ort from 'onnxruntime-web';
import { type ExportManifest, INPUT_NAME, OUTPUT_PROBABILITIES, OUTPUT_SCORES, parseManifest } from '../../src/export/manifest.ts';
import type { ScoreFn } from '../../src/audio/segments.ts';

export type Backend = 'webgpu' | 'wasm';
export type BackendChoice = Backend | 'auto';

export type ModelSource = { kind: 'url'; base: string } | { kind: 'files'; files: File[] };

export interface LoadedModel {
  manifest: ExportManifest;
  backend: Backend;
  /** Why WebGPU is not used, when it is not. */
  backendNote?: string;
  /** Where the model came from, for display. */
  where: string;
  infer: ScoreFn;
  release(): Promise<void>;
}

let envReady = false;
/** ORT's binary is served beside the page (ort/), never from a CDN; one thread unless cross-origin isolated. */
function setupEnv(): void {
  if (envReady) return;
  envReady = true;
  ort.env.wasm.wasmPaths = { wasm: new URL('ort/ort-wasm-simd-threaded.jsep.wasm', document.baseURI).href };
  // Worker threads need SharedArrayBuffer (COOP/COEP headers); the demo is small, one thread is enough.
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
  ort.env.logLevel = 'warning';
}

/** The export folder's URL, ending in "/" (accepts ".../manifest.json" too). */
export function exportBaseUrl(spec: string, pageUrl: string = document.baseURI): string {
  let u = new URL(spec.trim(), pageUrl);
  if (u.pathname.endsWith('/manifest.json')) u = new URL('./', u);
  else if (!u.pathname.endsWith('/')) u = new URL(`${u.pathname}/${u.search}`, u);
  return u.href;
}

async function fetchOk(url: string): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new Error(`cannot fetch ${url} (${e instanceof Error ? e.message : String(e)})`);
  }
  if (!res.ok) throw new Error(`cannot fetch ${url}: HTTP ${res.status}`);
  return res;
}

interface GpuLike {
  requestAdapter(): Promise<unknown>;
}

async function webgpuAvailable(): Promise<string | undefined> {
  const gpu = (navigator as Navigator & { gpu?: GpuLike }).gpu;
  if (!gpu) return 'this browser has no WebGPU';
  try {
    return (await gpu.requestAdapter()) ? undefined : 'no WebGPU adapter';
  } catch (e) {
    return `no WebGPU adapter (${e instanceof Error ? e.message : String(e)})`;
  }
}

interface Loaded {
  manifest: ExportManifest;
  model: Uint8Array;
  externalData: ort.InferenceSession.SessionOptions['externalData'];
  where: string;
}

async function readSource(src: ModelSource): Promise<Loaded> {
  if (src.kind === 'url') {
    const base = src.base;
    const manifest = parseManifest(await (await fetchOk(new URL('manifest.json', base).href)).json().catch(() => {
      throw new Error('manifest.json is not valid JSON');
    }));
    const model = new Uint8Array(await (await fetchOk(new URL(manifest.model, base).href)).arrayBuffer());
    // ORT fetches external data files itself from these URLs.
    const externalData = (manifest.external_data ?? []).map((p) => ({ path: p, data: new URL(p, base).href }));
    return { manifest, model, externalData, where: base };
  }
  const byName = new Map(src.files.map((f) => [f.name, f]));
  const mf = byName.get('manifest.json');
  if (!mf) throw new Error('pick the export folder (or its files): manifest.json is missing');
  let json: unknown;
  try {
    json = JSON.parse(await mf.text());
  } catch {
    throw new Error('manifest.json is not valid JSON');
  }
  const manifest = parseManifest(json);
  const need = (name: string): File => {
    const f = byName.get(name);
    if (!f) throw new Error(`the picked files lack ${name} (listed in manifest.json)`);
    return f;
  };
  const model = new Uint8Array(await need(manifest.model).arrayBuffer());
  const externalData = await Promise.all(
    (manifest.external_data ?? []).map(async (p) => ({ path: p, data: new Uint8Array(await need(p).arrayBuffer()) })),
  );
  const dir = (src.files[0] as File & { webkitRelativePath?: string }).webkitRelativePath?.split('/')[0];
  return { manifest, model, externalData, where: dir ? `${dir}/ (local files)` : 'local files' };
}

async function createSession(l: Loaded, backend: Backend): Promise<ort.InferenceSession> {
  const session = await ort.InferenceSession.create(l.model, {
    executionProviders: [backend],
    graphOptimizationLevel: 'all',
    externalData: l.externalData,
  });
  const missing = [
    ...[INPUT_NAME].filter((n) => !session.inputNames.includes(n)).map((n) => `input "${n}"`),
    ...[OUTPUT_PROBABILITIES, OUTPUT_SCORES].filter((n) => !session.outputNames.includes(n)).map((n) => `output "${n}"`),
  ];
  if (missing.length) {
    await session.release();
    throw new Error(`not an emosllm export: the model has no ${missing.join(', ')}`);
  }
  return session;
}

export async function loadModel(src: ModelSource, choice: BackendChoice = 'auto'): Promise<LoadedModel> {
  setupEnv();
  const l = await readSource(src);
  let backend: Backend = choice === 'webgpu' ? 'webgpu' : 'wasm';
  let backendNote: string | undefined;
  if (choice === 'auto') {
    const why = await webgpuAvailable();
    if (why) backendNote = why;
    else backend = 'webgpu';
  }
  let session: ort.InferenceSession;
  try {
    session = await createSession(l, backend);
  } catch (e) {
    if (backend !== 'webgpu' || choice === 'webgpu') throw e;
    backendNote = `WebGPU failed (${e instanceof Error ? e.message.split('\n')[0] : String(e)})`;
    backend = 'wasm';
    session = await createSession(l, backend);
  }
  const infer: ScoreFn = async (samples) => {
    const feeds = { [INPUT_NAME]: new ort.Tensor('float32', samples.slice(), [1, samples.length]) };
    const out = await session.run(feeds);
    const p = out[OUTPUT_PROBABILITIES]!;
    const s = out[OUTPUT_SCORES]!;
    const res = { probabilities: Float32Array.from(p.data as Float32Array), scores: Float32Array.from(s.data as Float32Array) };
    for (const t of Object.values(out)) t.dispose();
    return res;
  };
  return { manifest: l.manifest, backend, backendNote, where: l.where, infer, release: () => session.release() };
}
