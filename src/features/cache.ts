/**
 * The frozen-encoder feature cache: a clip's encoder hidden states are computed once and reused across epochs
 * and runs. The encoder is frozen in EmoSLLM, so its output for a clip never changes while the encoder and the
 * clip stay the same; the key makes sure any change to either is a miss, never a stale hit.
 *
 * Key: sha256 over a version tag, `encoder.id`, the layer selection, the sample count and the exact bytes of
 * the float32 samples fed to the encoder (after crop / resample / normalisation). `encoder.id` must identify
 * everything that determines the output: for the fbank encoder its full config and code version; for HF
 * encoders the config plus the weight files' identity (realpath + size + mtime).
 *
 * Disk layout: `<root>/features/<first 2 hex of key>/<key>.safetensors`, written atomically (temp file, fsync,
 * rename), one tensor `layer.{i}` [frames, hiddenSize] per selected encoder layer i, stored as F16 (F32 for a
 * layer whose values would overflow float16, |x| > 65504), with `__metadata__` {format, key, encoder, layers,
 * frames}. Files are validated on read (header, metadata, names, dtypes, shapes, no inf/NaN); anything wrong is
 * counted in `stats.corrupt`, deleted and recomputed, never an error.
 *
 * Values: what `get` returns is always the float16-rounded states (relative error <= 2^-11, absolute <= 2^-25
 * near zero), on a miss as on a hit, so a clip's features are bit-identical in every epoch and run. With
 * `enabled: false` nothing is stored or rounded: the encoder's float32 output is returned as is.
 *
 * Memory: an LRU of decoded-from-disk float16 entries, bounded in bytes (`memoryBytes`, default 512 MiB);
 * every call returns fresh Float32Arrays, so callers may modify them. Concurrent requests for the same clip
 * (in one process) share one encoder call; across processes the atomic rename makes the last writer win with
 * identical content.
 *
 * The cache assumes `encoder.encode` returns for each clip what it would return for that clip alone: misses
 * of one `getMany` call are encoded together in one batch.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { LRUCache } from 'lru-cache';
import type { FrameEncoder } from '../models/encoder.ts';
import { SafetensorsFile, type TensorInput, f16ToF32, f32ToF16, writeSafetensors } from '../io/safetensors.ts';
import { UserError } from '../util/errors.ts';

export const FEATURE_CACHE_FORMAT = 'emosllm-features/1';
export const DEFAULT_FEATURE_MEMORY_BYTES = 512 * 1024 * 1024;

export interface FeatureCacheOptions {
  /** Encoder hidden-state indices to keep, in this order; negative counts from the end. Default: all. */
  layers?: number[];
  /** Default true. false: every call runs the encoder; nothing is read, written, kept or rounded. */
  enabled?: boolean;
  /** In-memory LRU budget in bytes of stored (float16) data; 0 turns it off. Default 512 MiB. */
  memoryBytes?: number;
  /** Called once per cache with the first write failure (the cache then goes on, recomputing as needed). */
  onWarning?: (message: string) => void;
}

/** One clip's states: `states[j]` is the [frames, dim] row-major matrix of encoder layer `layers[j]`. */
export interface CachedStates {
  states: Float32Array[];
  frames: number;
  dim: number;
}

export interface FeatureCacheStats {
  /** Requests answered without running the encoder (memory, disk, or an in-flight computation). */
  hits: number;
  /** Requests that ran the encoder. */
  misses: number;
  memoryHits: number;
  diskHits: number;
  /** In-flight duplicates that waited for another request's encoder call. */
  sharedHits: number;
  /** Cache files found invalid, deleted and recomputed. */
  corrupt: number;
  writeErrors: number;
}

/** A stored entry: per selected layer, float16 bits (Uint16Array) or float32 (overflow fallback). */
interface Entry {
  layers: Array<Uint16Array | Float32Array>;
  frames: number;
  bytes: number;
}

const F16_MAX = 65504;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function sampleBytes(x: Float32Array): Uint8Array {
  const b = new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  if (LITTLE_ENDIAN) return b;
  const c = b.slice();
  for (let i = 0; i < c.length; i += 4) {
    const t0 = c[i]!;
    const t1 = c[i + 1]!;
    c[i] = c[i + 3]!;
    c[i + 1] = c[i + 2]!;
    c[i + 2] = t1;
    c[i + 3] = t0;
  }
  return c;
}

function hasNonFiniteF16(x: Uint16Array): boolean {
  for (let i = 0; i < x.length; i++) if ((x[i]! & 0x7c00) === 0x7c00) return true;
  return false;
}

function decode(layer: Uint16Array | Float32Array): Float32Array {
  return layer instanceof Uint16Array ? f16ToF32(layer) : layer.slice();
}

export class FeatureCache {
  /** `<root>/features` */
  readonly dir: string;
  readonly encoder: FrameEncoder;
  /** The selected encoder layers (non-negative indices), in output order. */
  readonly layers: readonly number[];
  readonly enabled: boolean;
  readonly memoryBytes: number;
  readonly stats: FeatureCacheStats = { hits: 0, misses: 0, memoryHits: 0, diskHits: 0, sharedHits: 0, corrupt: 0, writeErrors: 0 };

  /** undefined with memoryBytes 0 */
  private readonly memory?: LRUCache<string, Entry>;
  private readonly inflight = new Map<string, Promise<Entry>>();
  private readonly keyPrefix: string;
  private readonly layersMeta: string;
  private readonly onWarning: (message: string) => void;
  private warned = false;

  /** `root` is the cache root (e.g. `cacheRoot()` from graph/runtime.ts); files go under `<root>/features`. */
  constructor(root: string, encoder: FrameEncoder, opts: FeatureCacheOptions = {}) {
    this.dir = path.join(root, 'features');
    this.encoder = encoder;
    if (typeof encoder.id !== 'string' || encoder.id === '') throw new UserError('encoder has no id; the feature cache needs one', 'feature cache');
    const n = encoder.numHiddenStates;
    const sel = opts.layers ?? Array.from({ length: n }, (_, i) => i);
    if (sel.length === 0) throw new UserError('layers must select at least one encoder layer', 'feature cache');
    const layers = sel.map((l) => {
      if (!Number.isInteger(l) || l < -n || l >= n) throw new UserError(`layer ${l} is out of range for an encoder with ${n} hidden states`, 'feature cache');
      return l < 0 ? l + n : l;
    });
    if (new Set(layers).size !== layers.length) throw new UserError(`layers ${JSON.stringify(sel)} select a layer twice`, 'feature cache');
    this.layers = Object.freeze(layers);
    this.enabled = opts.enabled ?? true;
    this.memoryBytes = opts.memoryBytes ?? DEFAULT_FEATURE_MEMORY_BYTES;
    if (this.memoryBytes > 0) this.memory = new LRUCache({ maxSize: this.memoryBytes, sizeCalculation: (e) => Math.max(1, e.bytes) });
    this.onWarning = opts.onWarning ?? ((m) => process.emitWarning(m, 'FeatureCacheWarning'));
    this.layersMeta = JSON.stringify(layers);
    this.keyPrefix = `${FEATURE_CACHE_FORMAT}\n${JSON.stringify({ encoder: encoder.id, layers })}\n`;
  }

  /** The cache key (64 hex digits) of a clip: the exact samples the encoder would see. */
  key(samples: Float32Array): string {
    const h = crypto.createHash('sha256');
    h.update(this.keyPrefix);
    h.update(`${samples.length}\n`);
    h.update(sampleBytes(samples));
    return h.digest('hex');
  }

  /** Where the entry of `key` is stored. */
  pathFor(key: string): string {
    return path.join(this.dir, key.slice(0, 2), `${key}.safetensors`);
  }

  /** The selected states of one clip (see the file comment for the value convention). */
  async get(samples: Float32Array): Promise<CachedStates> {
    const [r] = await this.getMany([samples]);
    return r!;
  }

  /** The selected states of each clip, in order; all misses are encoded in one `encoder.encode` call. */
  async getMany(batch: Float32Array[]): Promise<CachedStates[]> {
    if (!this.enabled) return this.encodeDirect(batch);
    const pending: Array<Promise<Entry> | Entry> = new Array(batch.length);
    const todo: Array<{ key: string; samples: Float32Array; resolve: (e: Entry) => void; reject: (e: unknown) => void }> = [];
    for (let i = 0; i < batch.length; i++) {
      const key = this.key(batch[i]!);
      const mem = this.fromMemory(key);
      if (mem) {
        pending[i] = mem;
        continue;
      }
      const running = this.inflight.get(key);
      if (running) {
        this.stats.hits++;
        this.stats.sharedHits++;
        pending[i] = running;
        continue;
      }
      const disk = this.fromDisk(key);
      if (disk) {
        pending[i] = disk;
        continue;
      }
      this.stats.misses++;
      let resolve!: (e: Entry) => void;
      let reject!: (e: unknown) => void;
      const p = new Promise<Entry>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      p.catch(() => undefined); // failures reach callers through `pending`; never unhandled
      this.inflight.set(key, p);
      todo.push({ key, samples: batch[i]!, resolve, reject });
      pending[i] = p;
    }
    if (todo.length > 0) {
      try {
        const outs = await this.encoder.encode(todo.map((t) => t.samples));
        if (!Array.isArray(outs) || outs.length !== todo.length)
          throw new Error(`encoder ${this.encoder.id} returned ${Array.isArray(outs) ? outs.length : typeof outs} results for ${todo.length} clips`);
        todo.forEach((t, j) => {
          const entry = this.toEntry(outs[j]!);
          this.writeDisk(t.key, entry);
          this.remember(t.key, entry);
          t.resolve(entry);
        });
      } catch (e) {
        for (const t of todo) t.reject(e);
      } finally {
        for (const t of todo) this.inflight.delete(t.key);
      }
    }
    const entries = await Promise.all(pending);
    return entries.map((e) => ({ states: e.layers.map(decode), frames: e.frames, dim: this.encoder.hiddenSize }));
  }

  /**
   * The stored states for a key from `key()`, or undefined when neither memory nor disk has them (evicted, or
   * deleted): callers that kept only keys (not samples) fall back to `get(samples)` then.
   */
  lookup(key: string): CachedStates | undefined {
    if (!this.enabled) return undefined;
    const e = this.fromMemory(key) ?? this.fromDisk(key);
    return e && { states: e.layers.map(decode), frames: e.frames, dim: this.encoder.hiddenSize };
  }

  /** A memory hit (moved to the LRU's recent end, counted), or undefined. */
  private fromMemory(key: string): Entry | undefined {
    const e = this.memory?.get(key);
    if (!e) return undefined;
    this.stats.hits++;
    this.stats.memoryHits++;
    return e;
  }

  /** A disk hit (kept in memory, counted), or undefined. */
  private fromDisk(key: string): Entry | undefined {
    const e = this.readDisk(key);
    if (!e) return undefined;
    this.stats.hits++;
    this.stats.diskHits++;
    this.remember(key, e);
    return e;
  }

  /** Drops the in-memory entries (disk entries stay). */
  clearMemory(): void {
    this.memory?.clear();
  }

  private async encodeDirect(batch: Float32Array[]): Promise<CachedStates[]> {
    if (batch.length === 0) return [];
    this.stats.misses += batch.length;
    const outs = await this.encoder.encode(batch);
    if (!Array.isArray(outs) || outs.length !== batch.length)
      throw new Error(`encoder ${this.encoder.id} returned ${Array.isArray(outs) ? outs.length : typeof outs} results for ${batch.length} clips`);
    return outs.map((o) => {
      this.checkOutput(o);
      return { states: this.layers.map((l) => o.states[l]!), frames: o.frames, dim: this.encoder.hiddenSize };
    });
  }

  private checkOutput(o: { states: Float32Array[]; frames: number }): void {
    const { id, numHiddenStates: n, hiddenSize: d } = this.encoder;
    if (!o || !Array.isArray(o.states) || o.states.length !== n)
      throw new Error(`encoder ${id} returned ${o && Array.isArray(o.states) ? o.states.length : 'no'} hidden states, expected ${n}`);
    if (!Number.isInteger(o.frames) || o.frames < 0) throw new Error(`encoder ${id} returned frames=${o.frames}`);
    for (const l of this.layers) {
      const s = o.states[l];
      if (!(s instanceof Float32Array) || s.length !== o.frames * d)
        throw new Error(`encoder ${id} hidden state ${l} has ${s instanceof Float32Array ? s.length : 'no'} values, expected ${o.frames} x ${d}`);
    }
  }

  private toEntry(o: { states: Float32Array[]; frames: number }): Entry {
    this.checkOutput(o);
    let bytes = 0;
    const layers = this.layers.map((l) => {
      const s = o.states[l]!;
      let max = 0;
      for (let i = 0; i < s.length; i++) {
        const a = Math.abs(s[i]!);
        if (!(a <= max)) {
          if (!Number.isFinite(a)) throw new Error(`encoder ${this.encoder.id} produced a non-finite value in hidden state ${l} (frame ${Math.floor(i / this.encoder.hiddenSize)})`);
          max = a;
        }
      }
      const stored = max > F16_MAX ? s.slice() : f32ToF16(s);
      bytes += stored.byteLength;
      return stored;
    });
    return { layers, frames: o.frames, bytes };
  }

  private remember(key: string, e: Entry): void {
    if (e.bytes <= this.memoryBytes) this.memory?.set(key, e);
  }

  private writeDisk(key: string, e: Entry): void {
    const file = this.pathFor(key);
    const tensors: Record<string, TensorInput> = {};
    this.layers.forEach((l, j) => {
      const data = e.layers[j]!;
      tensors[`layer.${l}`] = { dtype: data instanceof Uint16Array ? 'F16' : 'F32', shape: [e.frames, this.encoder.hiddenSize], data };
    });
    try {
      writeSafetensors(file, tensors, {
        format: FEATURE_CACHE_FORMAT,
        key,
        encoder: this.encoder.id,
        layers: this.layersMeta,
        frames: String(e.frames),
      });
    } catch (err) {
      this.stats.writeErrors++;
      if (!this.warned) {
        this.warned = true;
        this.onWarning(`feature cache: cannot write ${file} (${err instanceof Error ? err.message.split('\n')[0] : String(err)}); features will be recomputed in later runs`);
      }
    }
  }

  /** The entry on disk, or undefined on a miss; an invalid file is deleted (and counted) and is a miss. */
  private readDisk(key: string): Entry | undefined {
    const file = this.pathFor(key);
    if (!fs.existsSync(file)) return undefined;
    let f: SafetensorsFile | undefined;
    try {
      f = SafetensorsFile.open(file);
      const md = f.metadata;
      const d = this.encoder.hiddenSize;
      const frames = Number(md.frames);
      const ok =
        md.format === FEATURE_CACHE_FORMAT &&
        md.key === key &&
        md.encoder === this.encoder.id &&
        md.layers === this.layersMeta &&
        /^\d+$/.test(md.frames ?? '') &&
        Number.isSafeInteger(frames) &&
        f.names().length === this.layers.length;
      if (!ok) throw new Error('metadata mismatch');
      let bytes = 0;
      const layers = this.layers.map((l) => {
        const name = `layer.${l}`;
        if (!f!.has(name)) throw new Error(`missing ${name}`);
        const info = f!.info(name);
        if (info.shape.length !== 2 || info.shape[0] !== frames || info.shape[1] !== d) throw new Error(`${name} has shape [${info.shape.join(', ')}]`);
        if (info.dtype === 'F16') {
          const x = f!.read(name) as Uint16Array;
          if (hasNonFiniteF16(x)) throw new Error(`${name} holds inf/NaN`);
          bytes += x.byteLength;
          return x;
        }
        if (info.dtype === 'F32') {
          const x = f!.read(name) as Float32Array;
          for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i]!)) throw new Error(`${name} holds inf/NaN`);
          bytes += x.byteLength;
          return x;
        }
        throw new Error(`${name} is ${info.dtype}`);
      });
      return { layers, frames, bytes };
    } catch {
      this.stats.corrupt++;
      f?.close();
      f = undefined;
      try {
        fs.rmSync(file, { force: true, recursive: true }); // recursive: a directory squatting on the name
      } catch {
        // unremovable: the rewrite after recomputation replaces it, or fails and is reported there
      }
      return undefined;
    } finally {
      f?.close();
    }
  }
}
