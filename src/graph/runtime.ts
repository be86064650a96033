/**
 * Compiling graphs into ONNX Runtime sessions, and running them.
 *
 * compile() emits the graph, stores it in an on-disk cache folder keyed by the model's content (the ONNX
 * bytes, which name external data by content hash or by checkpoint file identity), and opens an
 * onnxruntime-node session with intra-op spinning off (spinning costs ~25% on 2 cores here). Feeds and
 * fetches are plain typed arrays with shapes; feeds are checked against the graph's declared inputs first,
 * so a wrong shape is reported by input name and symbolic dimension, not by an ORT kernel deep inside.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import type { DType, Dim, TypedArray, Value } from './ir.ts';
import { UserError } from '../util/errors.ts';
import { type EmitOptions, type EmittedModel, emitModel, encodeModel } from './onnx.ts';

/** A host tensor: typed array + shape. */
export interface Tensor {
  dtype: DType;
  shape: number[];
  data: TypedArray;
}

export const tensor = (data: TypedArray, shape: number[], dtype?: DType): Tensor => ({
  data,
  shape,
  dtype: dtype ?? dtypeOfArray(data),
});

export function dtypeOfArray(a: TypedArray): DType {
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Float64Array) return 'float64';
  if (a instanceof BigInt64Array) return 'int64';
  if (a instanceof Int32Array) return 'int32';
  if (a instanceof Int8Array) return 'int8';
  if (a instanceof Uint16Array) return 'float16';
  return 'uint8';
}

const ORT_TYPE: Partial<Record<DType, ort.Tensor.Type>> = {
  float32: 'float32',
  float64: 'float64',
  float16: 'float16',
  int64: 'int64',
  int32: 'int32',
  int8: 'int8',
  uint8: 'uint8',
  bool: 'bool',
};

export class EngineError extends Error {
  override name = 'EngineError';
}

export interface CompileOptions {
  /** intra-op threads (default: all cores) */
  threads?: number;
  /** keep ORT's worker threads spinning between ops (default off: measured ~25% slower on 2 cores) */
  spinning?: boolean;
  /** ORT execution providers, e.g. ['cuda', 'cpu'] (default ['cpu']) */
  executionProviders?: string[];
  /** cache root (default $EMOSLLM_CACHE_DIR or ~/.cache/emosllm) */
  cacheDir?: string;
  /** name used in error messages */
  name?: string;
  graphOptimizationLevel?: 'disabled' | 'basic' | 'extended' | 'all';
}

export function cacheRoot(opts: { cacheDir?: string } = {}): string {
  return opts.cacheDir ?? process.env.EMOSLLM_CACHE_DIR ?? path.join(os.homedir(), '.cache', 'emosllm');
}

interface InputSpec {
  name: string;
  dtype: DType;
  shape: Dim[];
}

export class CompiledGraph {
  constructor(
    readonly name: string,
    readonly session: ort.InferenceSession,
    readonly inputs: InputSpec[],
    readonly outputNames: string[],
    readonly modelDir: string,
  ) {}

  /** Checks feeds against the declared inputs; returns the symbol bindings. */
  checkFeeds(feeds: Record<string, Tensor>): Map<string, number> {
    const bound = new Map<string, { size: number; from: string }>();
    for (const spec of this.inputs) {
      const t = feeds[spec.name];
      if (!t) throw new EngineError(`${this.name}: missing input "${spec.name}" (${spec.dtype}[${spec.shape.join(', ')}])`);
      if (t.dtype !== spec.dtype) throw new EngineError(`${this.name}: input "${spec.name}" must be ${spec.dtype}, got ${t.dtype}`);
      const n = t.shape.reduce((a, b) => a * b, 1);
      if (n !== t.data.length)
        throw new EngineError(`${this.name}: input "${spec.name}" has ${t.data.length} values for shape [${t.shape.join(', ')}]`);
      if (t.shape.length !== spec.shape.length)
        throw new EngineError(`${this.name}: input "${spec.name}" must have shape [${spec.shape.join(', ')}], got [${t.shape.join(', ')}]`);
      spec.shape.forEach((d, i) => {
        const got = t.shape[i];
        if (typeof d === 'number') {
          if (d !== got)
            throw new EngineError(`${this.name}: input "${spec.name}" must have shape [${spec.shape.join(', ')}], got [${t.shape.join(', ')}] (axis ${i})`);
        } else {
          const prev = bound.get(d);
          if (prev && prev.size !== got)
            throw new EngineError(
              `${this.name}: input "${spec.name}" axis ${i} is ${d}=${got}, but ${d}=${prev.size} from input "${prev.from}"`,
            );
          if (!prev) bound.set(d, { size: got, from: spec.name });
        }
      });
    }
    for (const k of Object.keys(feeds))
      if (!this.inputs.some((s) => s.name === k)) throw new EngineError(`${this.name}: unknown input "${k}"`);
    return new Map([...bound].map(([k, v]) => [k, v.size]));
  }

  async run(feeds: Record<string, Tensor>, fetch?: string[]): Promise<Record<string, Tensor>> {
    this.checkFeeds(feeds);
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const spec of this.inputs) {
      const t = feeds[spec.name];
      ortFeeds[spec.name] = new ort.Tensor(ORT_TYPE[t.dtype]!, t.data as never, t.shape);
    }
    let res: ort.InferenceSession.ReturnType;
    try {
      res = fetch ? await this.session.run(ortFeeds, fetch) : await this.session.run(ortFeeds);
    } catch (e) {
      throw new EngineError(explainOrtError(this.name, e));
    }
    const out: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(res)) {
      out[k] = { dtype: v.type as DType, shape: [...v.dims], data: v.data as TypedArray };
    }
    return out;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** ORT says "...running MatMul node. Name:'model.layers.0.self_attn/MatMul' Status Message: ..."; keep what matters. */
export function explainOrtError(name: string, e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  const m = /running (\w+) node\. Name:'([^']*)' Status Message: (.*)/s.exec(msg);
  if (m) {
    const status = m[3].split('\n')[0].replace(/^.*?\.cc:\d+ \S+ /, '');
    return `${name}: ${m[1]} in ${m[2]}: ${status}`;
  }
  return `${name}: ${msg.split('\n')[0]}`;
}

let linkSupport: Map<string, boolean> | undefined;
/** Whether hard links from `file`'s filesystem into the cache work (they don't across devices). */
function canLink(file: string, root: string): boolean {
  linkSupport ??= new Map();
  const dev = `${fs.statSync(file).dev}`;
  const hit = linkSupport.get(dev);
  if (hit !== undefined) return hit;
  const probe = path.join(root, `.linkprobe-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
  let ok = false;
  try {
    fs.linkSync(file, probe);
    ok = true;
  } catch {
    ok = false;
  } finally {
    fs.rmSync(probe, { force: true });
  }
  linkSupport.set(dev, ok);
  return ok;
}

function regionFiles(outputs: Record<string, Value>): string[] {
  // cheap scan: emit once in link mode to learn which checkpoint files are referenced
  const files = new Set<string>();
  const seen = new Set<Value>();
  const stack = Object.values(outputs);
  while (stack.length) {
    const v = stack.pop()!;
    if (seen.has(v)) continue;
    seen.add(v);
    if (v.region) files.add(v.region.file);
    if (v.node) stack.push(...v.node.inputs);
  }
  return [...files];
}

/** Writes the model folder (model.onnx + external data) into the cache, atomically; returns its path. */
export function materialize(outputs: Record<string, Value>, opts: CompileOptions & EmitOptions = {}): { dir: string; model: EmittedModel } {
  const root = path.join(cacheRoot(opts), 'onnx');
  fs.mkdirSync(root, { recursive: true });
  const regionMode = opts.regionMode ?? (regionFiles(outputs).every((f) => canLink(f, root)) ? 'link' : 'copy');
  const model = emitModel(outputs, { ...opts, regionMode });
  const bytes = encodeModel(model);
  const key = crypto.createHash('sha256').update(bytes).digest('hex').slice(0, 40);
  const dir = path.join(root, key);
  if (fs.existsSync(path.join(dir, 'model.onnx'))) return { dir, model };
  const tmp = `${dir}.tmp-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  fs.mkdirSync(tmp, { recursive: true });
  try {
    for (const f of model.files) {
      const target = path.join(tmp, f.location);
      if (f.kind === 'link') fs.linkSync(f.source, target);
      else fs.writeFileSync(target, f.data);
    }
    fs.writeFileSync(path.join(tmp, 'model.onnx'), bytes);
    try {
      fs.renameSync(tmp, dir);
    } catch (e) {
      // another process won the race: its folder has the same content
      if (!fs.existsSync(path.join(dir, 'model.onnx'))) throw e;
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return { dir, model };
}

/** EMOSLLM_EP=cuda,cpu: execution providers for every session (README, "GPU and other execution providers"). */
function envProviders(): string[] | undefined {
  const v = process.env.EMOSLLM_EP?.trim();
  return v ? v.split(',').map((s) => s.trim()).filter(Boolean) : undefined;
}

/** EMOSLLM_THREADS=N: intra-op threads for every session. */
function envThreads(): number | undefined {
  const v = process.env.EMOSLLM_THREADS;
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UserError(`EMOSLLM_THREADS must be a positive integer, got "${v}"`);
  return n;
}

export function sessionOptions(opts: CompileOptions = {}): ort.InferenceSession.SessionOptions {
  const spin = opts.spinning ? '1' : '0';
  return {
    intraOpNumThreads: opts.threads ?? envThreads() ?? os.availableParallelism(),
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: opts.graphOptimizationLevel ?? 'all',
    executionProviders: (opts.executionProviders ?? envProviders() ?? ['cpu']) as ort.InferenceSession.ExecutionProviderConfig[],
    extra: { session: { intra_op: { allow_spinning: spin }, inter_op: { allow_spinning: spin } } },
  };
}

/** Emits, caches and opens a session computing `outputs` (name -> Value). */
export async function compile(outputs: Record<string, Value>, opts: CompileOptions & Pick<EmitOptions, 'lower'> = {}): Promise<CompiledGraph> {
  const name = opts.name ?? 'graph';
  const { dir, model } = materialize(outputs, opts);
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(path.join(dir, 'model.onnx'), sessionOptions(opts));
  } catch (e) {
    throw new EngineError(explainOrtError(name, e));
  }
  const inputs = model.inputs.map((v) => ({ name: v.name, dtype: v.dtype, shape: v.shape }));
  return new CompiledGraph(name, session, inputs, model.outputNames, dir);
}
