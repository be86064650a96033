import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { emodbDev, tempDir } from '../../test/fixtures-gen/paths.ts';
import { SafetensorsFile, writeSafetensors } from '../io/safetensors.ts';
import type { FrameEncoder } from '../models/encoder.ts';
import { FbankEncoder } from '../../test/oracles/fbank.ts';
import { FeatureCache } from './cache.ts';

const dirs: string[] = [];
function freshRoot(): string {
  const d = tempDir('featcache');
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** Mono PCM16 16 kHz WAV -> float, read by hand. */
function clip(name: string): Float32Array {
  const b = fs.readFileSync(path.join(emodbDev().wavDir, name));
  let pos = 12;
  while (pos + 8 <= b.length) {
    const size = b.readUInt32LE(pos + 4);
    if (b.toString('ascii', pos, pos + 4) === 'data') {
      const n = Math.floor(Math.min(size, b.length - pos - 8) / 2);
      const x = new Float32Array(n);
      for (let i = 0; i < n; i++) x[i] = b.readInt16LE(pos + 8 + 2 * i) / 32768;
      return x;
    }
    pos += 8 + size + (size & 1);
  }
  throw new Error(`${name}: no data chunk`);
}

/** Counts encoder calls and clips; optionally slow, to make requests overlap. */
class CountingEncoder implements FrameEncoder {
  calls = 0;
  clips = 0;
  constructor(
    readonly inner: FrameEncoder,
    private readonly delayMs = 0,
  ) {}
  get id() {
    return this.inner.id;
  }
  get numHiddenStates() {
    return this.inner.numHiddenStates;
  }
  get hiddenSize() {
    return this.inner.hiddenSize;
  }
  get frameRate() {
    return this.inner.frameRate;
  }
  async encode(batch: Float32Array[]) {
    this.calls++;
    this.clips += batch.length;
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    return this.inner.encode(batch);
  }
}

/** A 3-layer encoder built on fbank: layer k = fbank * scale[k] (scale 5000 overflows float16 for layer 2). */
class LayeredEncoder implements FrameEncoder {
  readonly numHiddenStates = 3;
  readonly hiddenSize = 80;
  readonly frameRate = 100;
  readonly id: string;
  private readonly fb = new FbankEncoder({ cmvn: false });
  constructor(private readonly scales = [1, -0.5, 5000]) {
    this.id = `layered-${scales.join(',')}-${this.fb.id}`;
  }
  async encode(batch: Float32Array[]) {
    const base = await this.fb.encode(batch);
    return base.map((r) => ({ frames: r.frames, states: this.scales.map((s) => r.states[0]!.map((v) => v * s)) }));
  }
}

/** |a - b| within float16 rounding of b: relative 2^-11, or 2^-25 absolute near zero. */
function expectF16Close(a: Float32Array, b: Float32Array): void {
  expect(a.length).toBe(b.length);
  for (let i = 0; i < a.length; i++) {
    const tol = Math.max(Math.abs(b[i]!) * 2 ** -11, 2 ** -25);
    if (!(Math.abs(a[i]! - b[i]!) <= tol)) throw new Error(`value ${i}: ${a[i]} vs ${b[i]} (tolerance ${tol})`);
  }
}

function same(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

describe('FeatureCache', () => {
  it('a miss stores float16 on disk; a hit (memory or disk) returns the same values, within float16 rounding of the encoder', async () => {
    const root = freshRoot();
    const enc = new CountingEncoder(new FbankEncoder());
    const cache = new FeatureCache(root, enc);
    const x = clip('03a01Fa.wav');
    const first = await cache.get(x);
    expect(cache.stats).toMatchObject({ hits: 0, misses: 1 });
    expect(first.frames).toBe(188);
    expect(first.dim).toBe(80);
    expect(first.states).toHaveLength(1);
    const [direct] = await new FbankEncoder().encode([x]);
    expectF16Close(first.states[0]!, direct!.states[0]!);

    // layout: <root>/features/<2 hex>/<key>.safetensors with F16 layer.0 [T, D] and metadata
    const key = cache.key(x);
    expect(key).toMatch(/^[0-9a-f]{64}$/);
    const file = path.join(root, 'features', key.slice(0, 2), `${key}.safetensors`);
    expect(cache.pathFor(key)).toBe(file);
    const f = SafetensorsFile.open(file);
    expect(f.names()).toEqual(['layer.0']);
    expect(f.info('layer.0')).toMatchObject({ dtype: 'F16', shape: [188, 80] });
    expect(f.metadata).toMatchObject({ frames: '188', encoder: enc.id, layers: '[0]', key });
    f.close();
    // no temp files left behind
    expect(fs.readdirSync(path.dirname(file))).toEqual([path.basename(file)]);

    // memory hit: same values, fresh arrays
    const mem = await cache.get(x);
    expect(cache.stats).toMatchObject({ hits: 1, misses: 1, memoryHits: 1 });
    expect(same(mem.states[0]!, first.states[0]!)).toBe(true);
    mem.states[0]!.fill(123);
    expect(same((await cache.get(x)).states[0]!, first.states[0]!)).toBe(true);

    // disk hit from a new cache (another run): bit-identical to the first (already rounded) result
    const enc2 = new CountingEncoder(new FbankEncoder());
    const cache2 = new FeatureCache(root, enc2);
    const disk = await cache2.get(x);
    expect(cache2.stats).toMatchObject({ hits: 1, misses: 0, diskHits: 1 });
    expect(enc2.calls).toBe(0);
    expect(same(disk.states[0]!, first.states[0]!)).toBe(true);
    expect(enc.calls).toBe(1);
  });

  it('different audio -> different key (one sample, one sample more, a subarray view counts by content)', async () => {
    const cache = new FeatureCache(freshRoot(), new FbankEncoder());
    const x = clip('03a01Nc.wav');
    const y = x.slice();
    y[1000] = y[1000]! + 2 ** -15;
    const longer = new Float32Array(x.length + 1);
    longer.set(x);
    const keys = new Set([cache.key(x), cache.key(y), cache.key(longer), cache.key(x.subarray(0, x.length - 1))]);
    expect(keys.size).toBe(4);
    // a view with the same content as a copy has the same key
    const padded = new Float32Array(x.length + 10);
    padded.set(x, 10);
    expect(cache.key(padded.subarray(10))).toBe(cache.key(x));
    await cache.get(x);
    await cache.get(y);
    expect(cache.stats).toMatchObject({ hits: 0, misses: 2 });
  });

  it('a different encoder config or layer selection is a miss, never a stale hit', async () => {
    const root = freshRoot();
    const x = clip('03a02Fc.wav');
    const a = new FeatureCache(root, new FbankEncoder());
    const ra = await a.get(x);
    const b = new FeatureCache(root, new FbankEncoder({ cmvn: false }));
    const rb = await b.get(x);
    expect(b.stats).toMatchObject({ hits: 0, misses: 1 });
    expect(same(ra.states[0]!, rb.states[0]!)).toBe(false);
    const c = new FeatureCache(root, new FbankEncoder({ numMelBins: 40 }));
    const rc = await c.get(x);
    expect(c.stats.misses).toBe(1);
    expect(rc.dim).toBe(40);
    expect(rc.states[0]).toHaveLength(rc.frames * 40);

    const enc = new LayeredEncoder();
    const all = new FeatureCache(root, enc);
    const last = new FeatureCache(root, enc, { layers: [-1, 0] });
    expect(last.layers).toEqual([2, 0]);
    expect(all.key(x)).not.toBe(last.key(x));
    const rAll = await all.get(x);
    const rLast = await last.get(x);
    expect(last.stats.misses).toBe(1);
    expect(rLast.states).toHaveLength(2);
    expect(same(rLast.states[0]!, rAll.states[2]!)).toBe(true);
    expect(same(rLast.states[1]!, rAll.states[0]!)).toBe(true);
    // layer 2 (values up to ~1.4e5) overflows float16: stored as F32, exact
    const f = SafetensorsFile.open(last.pathFor(last.key(x)));
    expect(f.info('layer.2').dtype).toBe('F32');
    expect(f.info('layer.0').dtype).toBe('F16');
    f.close();
    const [raw] = await enc.encode([x]);
    expect(same(rAll.states[2]!, raw!.states[2]!)).toBe(true);
    expectF16Close(rAll.states[1]!, raw!.states[1]!);
    expect(() => new FeatureCache(root, enc, { layers: [3] })).toThrow(/out of range/);
    expect(() => new FeatureCache(root, enc, { layers: [0, -3] })).toThrow(/twice/);
  });

  it('a corrupt, truncated or mismatched cache file is deleted and recomputed, never an error', async () => {
    const root = freshRoot();
    const x = clip('08a01Fd.wav');
    const good = await new FeatureCache(root, new FbankEncoder()).get(x);
    const probe = new FeatureCache(root, new FbankEncoder());
    const file = probe.pathFor(probe.key(x));
    const valid = fs.readFileSync(file);
    const frames = good.frames;
    const corruptions: Array<[string, () => void]> = [
      ['garbage', () => fs.writeFileSync(file, 'not a safetensors file at all')],
      ['empty', () => fs.writeFileSync(file, '')],
      ['truncated', () => fs.writeFileSync(file, valid.subarray(0, valid.length - 100))],
      ['header bit flip', () => fs.writeFileSync(file, Buffer.concat([valid.subarray(0, 20), Buffer.from('#'), valid.subarray(21)]))],
      ['wrong shape', () => writeSafetensors(file, { 'layer.0': { dtype: 'F16', shape: [frames - 1, 80], data: new Uint16Array((frames - 1) * 80) } }, { ...probeMeta() })],
      ['wrong dtype', () => writeSafetensors(file, { 'layer.0': { dtype: 'BF16', shape: [frames, 80], data: new Uint16Array(frames * 80) } }, { ...probeMeta() })],
      ['inf values', () => writeSafetensors(file, { 'layer.0': { dtype: 'F16', shape: [frames, 80], data: new Uint16Array(frames * 80).fill(0x7c00) } }, { ...probeMeta() })],
      ['other encoder', () => writeSafetensors(file, { 'layer.0': { dtype: 'F16', shape: [frames, 80], data: new Uint16Array(frames * 80) } }, { ...probeMeta(), encoder: 'fbank-v1-0000000000000000' })],
      ['a directory', () => {
        fs.rmSync(file);
        fs.mkdirSync(file);
      }],
    ];
    function probeMeta(): Record<string, string> {
      return { format: 'emosllm-features/1', key: probe.key(x), encoder: probe.encoder.id, layers: '[0]', frames: String(frames) };
    }
    for (const [what, corrupt] of corruptions) {
      corrupt();
      const enc = new CountingEncoder(new FbankEncoder());
      const cache = new FeatureCache(root, enc);
      const r = await cache.get(x);
      expect(cache.stats, what).toMatchObject({ corrupt: 1, misses: 1, hits: 0 });
      expect(enc.calls, what).toBe(1);
      expect(same(r.states[0]!, good.states[0]!), what).toBe(true);
      // rewritten valid: the next run hits
      const again = new FeatureCache(root, new FbankEncoder());
      await again.get(x);
      expect(again.stats, what).toMatchObject({ hits: 1, diskHits: 1, corrupt: 0 });
    }
  });

  it('concurrent gets of one clip share one encoder call and leave a valid file', async () => {
    const root = freshRoot();
    const x = clip('09a01Fa.wav');
    const enc = new CountingEncoder(new FbankEncoder(), 30);
    const cache = new FeatureCache(root, enc);
    const rs = await Promise.all(Array.from({ length: 8 }, () => cache.get(x)));
    expect(enc.calls).toBe(1);
    expect(cache.stats).toMatchObject({ misses: 1, hits: 7, sharedHits: 7 });
    for (const r of rs) expect(same(r.states[0]!, rs[0]!.states[0]!)).toBe(true);
    // two caches (as two processes would) racing on the same files
    const y = clip('03a02Wb.wav');
    const c1 = new FeatureCache(root, new CountingEncoder(new FbankEncoder(), 20));
    const c2 = new FeatureCache(root, new CountingEncoder(new FbankEncoder(), 20));
    const [r1, r2] = await Promise.all([c1.get(y), c2.get(y)]);
    expect(same(r1.states[0]!, r2.states[0]!)).toBe(true);
    const check = new FeatureCache(root, new FbankEncoder());
    const r3 = await check.get(y);
    expect(check.stats).toMatchObject({ diskHits: 1, corrupt: 0 });
    expect(same(r3.states[0]!, r1.states[0]!)).toBe(true);
    expect(fs.readdirSync(path.dirname(check.pathFor(check.key(y)))).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  it('getMany keeps order, encodes only the misses in one batch, and dedups repeats', async () => {
    const root = freshRoot();
    const names = ['10a01Ac.wav', '10a01Nb.wav', '11a01Ld.wav', '13a01Ec.wav'];
    const xs = names.map(clip);
    const enc = new CountingEncoder(new FbankEncoder());
    const cache = new FeatureCache(root, enc);
    await cache.get(xs[1]!);
    const rs = await cache.getMany([xs[0]!, xs[1]!, xs[2]!, xs[0]!, xs[3]!]);
    expect(enc.calls).toBe(2);
    expect(enc.clips).toBe(1 + 3);
    expect(cache.stats).toMatchObject({ misses: 4, hits: 2, memoryHits: 1, sharedHits: 1 });
    const fresh = new FbankEncoder();
    for (const [i, j] of [[0, 0], [1, 1], [2, 2], [3, 0], [4, 3]] as const) {
      const [d] = await fresh.encode([xs[j]!]);
      expect(rs[i]!.frames).toBe(d!.frames);
      expectF16Close(rs[i]!.states[0]!, d!.states[0]!);
    }
    expect(await cache.getMany([])).toEqual([]);
  });

  it('the memory LRU stays within its byte budget; memoryBytes 0 reads from disk', async () => {
    const root = freshRoot();
    const xs = ['03a01Fa.wav', '03a01Nc.wav', '03a01Wa.wav'].map(clip);
    // each clip is ~120-190 frames x 80 x 2 bytes = 19-30 KB: room for one
    const cache = new FeatureCache(root, new FbankEncoder(), { memoryBytes: 40_000 });
    for (const x of xs) await cache.get(x);
    await cache.get(xs[2]!);
    await cache.get(xs[0]!);
    expect(cache.stats).toMatchObject({ misses: 3, memoryHits: 1, diskHits: 1 });
    const noMem = new FeatureCache(root, new FbankEncoder(), { memoryBytes: 0 });
    await noMem.get(xs[0]!);
    await noMem.get(xs[0]!);
    expect(noMem.stats).toMatchObject({ diskHits: 2, memoryHits: 0, misses: 0 });
  });

  it('enabled: false runs the encoder every time and writes nothing', async () => {
    const root = freshRoot();
    const enc = new CountingEncoder(new FbankEncoder());
    const cache = new FeatureCache(root, enc, { enabled: false });
    const x = clip('14a01Ea.wav');
    const a = await cache.get(x);
    await cache.get(x);
    expect(enc.calls).toBe(2);
    expect(cache.stats).toMatchObject({ misses: 2, hits: 0 });
    expect(fs.existsSync(path.join(root, 'features'))).toBe(false);
    const [d] = await new FbankEncoder().encode([x]);
    expect(same(a.states[0]!, d!.states[0]!)).toBe(true); // not rounded
  });

  it('bad encoder output fails loudly and caches nothing; an unwritable folder only warns', async () => {
    const root = freshRoot();
    const x = new Float32Array(3200).map((_, i) => Math.sin(i / 7) * 0.2);
    const base = new FbankEncoder();
    const wrong: FrameEncoder = {
      id: 'wrong',
      numHiddenStates: 1,
      hiddenSize: 80,
      frameRate: 100,
      encode: async (b) => b.map(() => ({ frames: 3, states: [new Float32Array(10)] })),
    };
    const c1 = new FeatureCache(root, wrong);
    await expect(c1.get(x)).rejects.toThrow(/hidden state 0 has 10 values, expected 3 x 80/);
    const nan: FrameEncoder = { ...wrong, id: 'nan', encode: async (b) => b.map(() => ({ frames: 1, states: [new Float32Array(80).fill(NaN)] })) };
    await expect(new FeatureCache(root, nan).get(x)).rejects.toThrow(/non-finite/);
    expect(fs.existsSync(path.join(root, 'features'))).toBe(false);
    // after a failure the key is not stuck in flight
    await expect(c1.get(x)).rejects.toThrow(/hidden state 0/);

    // a file where the features folder should be: writes fail, results still come back
    const blocked = freshRoot();
    fs.writeFileSync(path.join(blocked, 'features'), 'in the way');
    const warnings: string[] = [];
    const c2 = new FeatureCache(blocked, base, { onWarning: (m) => warnings.push(m) });
    const r = await c2.get(x);
    await c2.get(x.map((v) => v * 0.5));
    expect(r.frames).toBe(18);
    expect(c2.stats.writeErrors).toBe(2);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/cannot write/);
  });
});
