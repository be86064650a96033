import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rng } from '../graph/gradcheck.ts';
import { UserError } from '../util/errors.ts';
import {
  DTYPE_SIZES,
  SAFE_DTYPES,
  SafetensorsCheckpoint,
  SafetensorsFile,
  encodeSafetensors,
  bf16ToF32,
  f16ToF32,
  f32ToBF16,
  f32ToF16,
  writeSafetensors,
  writeSafetensorsStreaming,
  type NamedTensorInput,
  type SafeDType,
  type SafeTypedArray,
  type TensorInput,
} from './safetensors.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const FIXTURES = path.resolve(here, '../../../shared/fixtures/hf-parity');

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-safetensors-'));
});
afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

let counter = 0;
function tmpFile(name = 'x.safetensors'): string {
  const dir = path.join(tmp, `t${counter++}`);
  fs.mkdirSync(dir, { recursive: true });
  return path.join(dir, name);
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Build a raw safetensors file from a header object (or raw header text) and a data buffer. */
function buildRaw(header: unknown, data: Uint8Array = new Uint8Array(0), opts: { pad?: boolean } = {}): Uint8Array {
  let text = typeof header === 'string' ? header : JSON.stringify(header);
  if (opts.pad) while (Buffer.byteLength(text) % 8) text += ' ';
  const h = Buffer.from(text, 'utf8');
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

function withHeaderLength(n: bigint, rest: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + rest.length);
  new DataView(out.buffer).setBigUint64(0, n, true);
  out.set(rest, 8);
  return out;
}

/** Expect `fn` to throw a one-line UserError that mentions every string in `parts`; returns the message. */
function expectUserError(fn: () => unknown, ...parts: string[]): string {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, 'expected a UserError to be thrown').toBeInstanceOf(UserError);
  const msg = (err as Error).message;
  expect(msg).not.toMatch(/[\r\n\u2028\u2029]/);
  for (const p of parts) expect(msg).toContain(p);
  return msg;
}

function sampleData(dtype: SafeDType, n: number): SafeTypedArray {
  switch (dtype) {
    case 'F32':
      return Float32Array.from({ length: n }, (_, i) => (i - n / 2) * 0.37);
    case 'F64':
      return Float64Array.from({ length: n }, (_, i) => Math.PI * (i - 3) + 1e-12);
    case 'F16':
      return f32ToF16(Float32Array.from({ length: n }, (_, i) => (i - 2) * 0.5));
    case 'BF16':
      return f32ToBF16(Float32Array.from({ length: n }, (_, i) => (i - 2) * 0.25));
    case 'I64':
      return BigInt64Array.from({ length: n }, (_, i) => BigInt(i) * 1_000_000_000_007n - 3n);
    case 'I32':
      return Int32Array.from({ length: n }, (_, i) => (i % 2 ? -1 : 1) * i * 123_457);
    case 'I16':
      return Int16Array.from({ length: n }, (_, i) => (i - 3) * 1000);
    case 'I8':
      return Int8Array.from({ length: n }, (_, i) => i * 20 - 100);
    case 'U8':
      return Uint8Array.from({ length: n }, (_, i) => (i * 37) % 256);
    case 'BOOL':
      return Uint8Array.from({ length: n }, (_, i) => i % 2);
  }
}

function asNumbers(dtype: SafeDType, a: SafeTypedArray): number[] {
  if (dtype === 'F16') return [...f16ToF32(a as Uint16Array)];
  if (dtype === 'BF16') return [...bf16ToF32(a as Uint16Array)];
  if (dtype === 'I64') return [...(a as BigInt64Array)].map(Number);
  return [...(a as Float64Array)];
}

// -----------------------------------------------------------------------------------------------------------------

describe('writer -> reader round trip', () => {
  it('round-trips every dtype, with shapes, metadata and stored typed array kinds', () => {
    const file = tmpFile();
    const tensors: Record<string, TensorInput> = {};
    for (const dt of SAFE_DTYPES) tensors[`t.${dt.toLowerCase()}`] = { dtype: dt, shape: [2, 3], data: sampleData(dt, 6) };
    const metadata = { format: 'pt', note: 'héllo "quoted" \n newline' };
    writeSafetensors(file, tensors, metadata);

    const f = SafetensorsFile.open(file);
    try {
      expect(f.names()).toEqual(Object.keys(tensors).sort());
      expect({ ...f.metadata }).toEqual(metadata);
      for (const [name, t] of Object.entries(tensors)) {
        const info = f.info(name);
        expect(info.dtype).toBe(t.dtype);
        expect(info.shape).toEqual([2, 3]);
        expect(info.byteLength).toBe(6 * DTYPE_SIZES[t.dtype]);
        expect(info.file).toBe(file);
        const got = f.read(name);
        expect(got.constructor).toBe(t.data.constructor);
        expect([...got]).toEqual([...t.data]);
        expect(Buffer.from(f.readBytes(name))).toEqual(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
        const f32 = f.readF32(name);
        expect(f32).toBeInstanceOf(Float32Array);
        expect([...f32]).toEqual(asNumbers(t.dtype, t.data).map(Math.fround));
        const f64 = f.readF64(name);
        expect(f64).toBeInstanceOf(Float64Array);
        expect([...f64]).toEqual(asNumbers(t.dtype, t.data));
        if (['I64', 'I32', 'I16', 'I8', 'U8', 'BOOL'].includes(t.dtype)) {
          const i64 = f.readI64(name);
          expect(i64).toBeInstanceOf(BigInt64Array);
          expect([...i64]).toEqual(t.dtype === 'I64' ? [...(t.data as BigInt64Array)] : [...(t.data as Int32Array)].map(BigInt));
        } else {
          expectUserError(() => f.readI64(name), file, name, 'integer');
        }
      }
      // the stored tensor types
      expect(f.read('t.f16')).toBeInstanceOf(Uint16Array);
      expect(f.read('t.bf16')).toBeInstanceOf(Uint16Array);
      expect(f.read('t.bool')).toBeInstanceOf(Uint8Array);
      expect(f.read('t.i64')).toBeInstanceOf(BigInt64Array);
    } finally {
      f.close();
    }
  });

  it('writes the layout of the Python library: sorted names, space padding to 8, contiguous data from 0', () => {
    const file = tmpFile();
    writeSafetensors(
      file,
      [
        { name: 'zeta', dtype: 'U8', shape: [3], data: new Uint8Array([1, 2, 3]) },
        { name: 'alpha', dtype: 'F32', shape: [1], data: new Float32Array([1.5]) },
        { name: 'mid', dtype: 'I16', shape: [1], data: new Int16Array([-2]) },
      ],
      { format: 'pt' },
    );
    const raw = fs.readFileSync(file);
    const n = Number(raw.readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    const text = raw.subarray(8, 8 + n).toString('utf8');
    expect(text).toMatch(/^\{.*\} *$/);
    const header = JSON.parse(text);
    expect(Object.keys(header)).toEqual(['__metadata__', 'alpha', 'mid', 'zeta']);
    expect(header.alpha).toEqual({ dtype: 'F32', shape: [1], data_offsets: [0, 4] });
    expect(header.mid).toEqual({ dtype: 'I16', shape: [1], data_offsets: [4, 6] });
    expect(header.zeta).toEqual({ dtype: 'U8', shape: [3], data_offsets: [6, 9] });
    expect(raw.length).toBe(8 + n + 9);
    // no temp files left beside the target
    expect(fs.readdirSync(path.dirname(file))).toEqual([path.basename(file)]);
  });

  it('handles empty tensors, scalars, no metadata, unicode and odd names', () => {
    const file = tmpFile();
    const tensors: Record<string, TensorInput> = {
      empty: { dtype: 'F32', shape: [0], data: new Float32Array(0) },
      empty3: { dtype: 'I64', shape: [3, 0, 2], data: new BigInt64Array(0) },
      scalar: { dtype: 'F64', shape: [], data: new Float64Array([-7.25]) },
      scalar16: { dtype: 'BF16', shape: [], data: f32ToBF16(new Float32Array([3])) },
      'ünï.cödé/ß': { dtype: 'I8', shape: [1, 1, 1], data: new Int8Array([-5]) },
      __proto__x: { dtype: 'U8', shape: [2], data: new Uint8Array([9, 8]) },
    };
    writeSafetensors(file, tensors);
    const f = SafetensorsFile.open(file);
    expect(f.metadata).toEqual({});
    expect(f.names()).toEqual(Object.keys(tensors).sort());
    expect(f.read('empty').length).toBe(0);
    expect(f.read('empty3')).toBeInstanceOf(BigInt64Array);
    expect(f.info('empty3').shape).toEqual([3, 0, 2]);
    expect(f.readF32('empty3').length).toBe(0);
    expect(f.info('scalar').shape).toEqual([]);
    expect([...f.read('scalar')]).toEqual([-7.25]);
    expect([...f.readF32('scalar16')]).toEqual([3]);
    expect([...f.read('ünï.cödé/ß')]).toEqual([-5]);
    expect([...f.read('__proto__x')]).toEqual([9, 8]);
    // a file with no tensors at all
    const emptyFile = tmpFile();
    writeSafetensors(emptyFile, {});
    const g = SafetensorsFile.open(emptyFile);
    expect(g.names()).toEqual([]);
    g.close();
    f.close();
  });

  it('reads a hand-built file with unsorted, unaligned, non-contiguous tensors and an unpadded header', () => {
    // data region: [junk 1][a: F32 x3 @1][junk 2][b: I64 x1 @15][c: F16 x2 @23][d: U8 x3 @27][e: F64 x1 @30]
    const data = new Uint8Array(38).fill(0xee);
    const dv = new DataView(data.buffer);
    [1.5, -2.25, 1e-3].forEach((v, i) => dv.setFloat32(1 + 4 * i, v, true));
    dv.setBigInt64(15, -1234567890123n, true);
    dv.setUint16(23, 0x3c00, true);
    dv.setUint16(25, 0xc000, true);
    data.set([7, 8, 9], 27);
    dv.setFloat64(30, Math.E, true);
    const header =
      '{"e":{"dtype":"F64","shape":[],"data_offsets":[30,38]},' +
      '"d":{"shape":[3],"dtype":"U8","data_offsets":[27,30]},' +
      '"b":{"dtype":"I64","data_offsets":[15,23],"shape":[1,1]},' +
      '"__metadata__":{"k":"v"},' +
      '"a":{"dtype":"F32","shape":[3],"data_offsets":[1,13]},' +
      '"c":{"dtype":"F16","shape":[2,1],"data_offsets":[23,27]},' +
      '"z":{"dtype":"F32","shape":[0,5],"data_offsets":[13,13]}}';
    const raw = buildRaw(header, data);
    expect((raw.length - 8 - data.length) % 8).not.toBe(0); // header deliberately not padded
    const file = tmpFile();
    fs.writeFileSync(file, raw);
    const f = SafetensorsFile.open(file);
    expect(f.names()).toEqual(['a', 'b', 'c', 'd', 'e', 'z']);
    expect(f.metadata).toEqual({ k: 'v' });
    const headerLen = Buffer.byteLength(header);
    expect(f.headerLength).toBe(headerLen);
    expect(f.info('a').offset).toBe(8 + headerLen + 1);
    expect([...f.read('a')]).toEqual([1.5, -2.25, Math.fround(1e-3)]);
    expect([...f.read('b')]).toEqual([-1234567890123n]);
    expect([...f.readF64('b')]).toEqual([-1234567890123]);
    expect([...f.read('c')]).toEqual([0x3c00, 0xc000]);
    expect([...f.readF32('c')]).toEqual([1, -2]);
    expect([...f.read('d')]).toEqual([7, 8, 9]);
    expect([...f.read('e')]).toEqual([Math.E]);
    expect(f.read('z').length).toBe(0);
    expect(f.has('a')).toBe(true);
    expect(f.has('nope')).toBe(false);
    expectUserError(() => f.info('nope'), file, 'nope');
    expectUserError(() => f.read('nope'), file, 'nope');
    // reads after close reopen the file
    f.close();
    expect([...f.read('d')]).toEqual([7, 8, 9]);
    f.close();
    f.close();
  });

  it('reads tensors beyond 4 GiB offsets in a sparse file', () => {
    const file = tmpFile();
    const far = 2 ** 32 + 3; // > 2 GiB and > 4 GiB, unaligned
    const header = buildRaw({
      near: { dtype: 'U8', shape: [2], data_offsets: [0, 2] },
      far: { dtype: 'F32', shape: [4], data_offsets: [far, far + 16] },
    });
    const fd = fs.openSync(file, 'w');
    try {
      fs.writeSync(fd, header);
      fs.writeSync(fd, new Uint8Array([5, 6]));
      const payload = new Float32Array([1, -2, 3.5, 65504]);
      const dataStart = header.length;
      fs.writeSync(fd, new Uint8Array(payload.buffer), 0, 16, dataStart + far);
    } finally {
      fs.closeSync(fd);
    }
    const f = SafetensorsFile.open(file);
    expect(f.info('far').offset).toBe(header.length + far);
    expect([...f.read('far')]).toEqual([1, -2, 3.5, 65504]);
    expect([...f.read('near')]).toEqual([5, 6]);
    f.close();
    fs.rmSync(file);
  });

  it('writes atomically and validates writer input', () => {
    const file = tmpFile();
    writeSafetensors(file, { a: { dtype: 'F32', shape: [1], data: new Float32Array([1]) } });
    const before = fs.readFileSync(file);
    const bad: [string, () => void, string][] = [
      ['length', () => writeSafetensors(file, { a: { dtype: 'F32', shape: [2, 2], data: new Float32Array(3) } }), 'bytes'],
      ['dtype', () => writeSafetensors(file, { a: { dtype: 'F8' as SafeDType, shape: [1], data: new Uint8Array(1) } }), 'dtype'],
      ['kind', () => writeSafetensors(file, { a: { dtype: 'F32', shape: [2], data: new Int32Array(2) } }), 'Float32Array'],
      ['kind64', () => writeSafetensors(file, { a: { dtype: 'F32', shape: [1], data: new Float64Array(1) } }), 'Float32Array'],
      ['shape', () => writeSafetensors(file, { a: { dtype: 'U8', shape: [-1], data: new Uint8Array(0) } }), 'shape'],
      ['shape2', () => writeSafetensors(file, { a: { dtype: 'U8', shape: [1.5], data: new Uint8Array(1) } }), 'shape'],
      ['dup', () => writeSafetensors(file, [
        { name: 'a', dtype: 'U8', shape: [1], data: new Uint8Array(1) },
        { name: 'a', dtype: 'U8', shape: [1], data: new Uint8Array(1) },
      ]), 'duplicate'],
      ['reserved', () => writeSafetensors(file, { __metadata__: { dtype: 'U8', shape: [1], data: new Uint8Array(1) } }), '__metadata__'],
      ['metadata', () => writeSafetensors(file, {}, { a: 1 as unknown as string }), 'metadata'],
      ['not typed', () => writeSafetensors(file, { a: { dtype: 'U8', shape: [1], data: [1] as unknown as Uint8Array } }), 'typed array'],
    ];
    for (const [, fn, part] of bad) expectUserError(fn, file, part);
    // the existing file was not touched by the failed writes, and no temp files were left
    expect(fs.readFileSync(file)).toEqual(before);
    expect(fs.readdirSync(path.dirname(file))).toEqual([path.basename(file)]);
    // raw bytes are accepted for any dtype; overwriting replaces the file
    writeSafetensors(file, { h: { dtype: 'F16', shape: [1], data: new Uint8Array([0x00, 0x3c]) } });
    const f = SafetensorsFile.open(file);
    expect([...f.readF32('h')]).toEqual([1]);
    f.close();
    // encode returns chunks without concatenating tensors
    const chunks = encodeSafetensors({ a: { dtype: 'U8', shape: [2], data: new Uint8Array([1, 2]) } });
    expect(chunks.length).toBe(3);
  });

  it('the streaming writer gives the same bytes as writeSafetensors, chunk by chunk; wrong byte counts fail', () => {
    const a = Float32Array.from({ length: 10 }, (_, i) => i / 3);
    const b = new BigInt64Array([5n, -7n]);
    const whole = tmpFile('whole.safetensors');
    writeSafetensors(whole, { b: { dtype: 'I64', shape: [2], data: b }, a: { dtype: 'F32', shape: [2, 5], data: a } }, { format: 'pt' });
    const streamed = tmpFile('streamed.safetensors');
    const bytesOf = (x: Float32Array | BigInt64Array) => new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
    writeSafetensorsStreaming(
      streamed,
      [
        { name: 'b', dtype: 'I64', shape: [2], chunks: () => [bytesOf(b)] },
        { name: 'a', dtype: 'F32', shape: [2, 5], chunks: () => [bytesOf(a.subarray(0, 3)), bytesOf(a.subarray(3))] },
      ],
      { format: 'pt' },
    );
    expect(fs.readFileSync(streamed)).toEqual(fs.readFileSync(whole));
    const before = fs.readFileSync(streamed);
    expectUserError(() => writeSafetensorsStreaming(streamed, [{ name: 'a', dtype: 'F32', shape: [2, 5], chunks: () => [bytesOf(a.subarray(0, 9))] }]), streamed, 'a', '36');
    expectUserError(() => writeSafetensorsStreaming(streamed, [{ name: 'a', dtype: 'F32', shape: [2], chunks: () => [bytesOf(a)] }]), streamed, 'more than');
    expectUserError(() => writeSafetensorsStreaming(streamed, [{ name: 'a', dtype: 'F8' as SafeDType, shape: [1], chunks: () => [] }]), streamed, 'dtype');
    expect(fs.readFileSync(streamed)).toEqual(before);
    expect(fs.readdirSync(path.dirname(streamed)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });
});

// -----------------------------------------------------------------------------------------------------------------

describe('F16 / BF16 conversions', () => {
  const hex = (a: Uint16Array) => [...a].map((x) => `0x${x.toString(16).padStart(4, '0')}`);

  it('f32ToF16 matches known bit patterns, rounding to nearest even', () => {
    const cases: [number, number][] = [
      [1, 0x3c00],
      [-2, 0xc000],
      [0, 0x0000],
      [-0, 0x8000],
      [0.5, 0x3800],
      [65504, 0x7bff], // max half
      [65519.99, 0x7bff], // just below the rounding point
      [65520, 0x7c00], // tie between 65504 (odd) and 65536 -> even = inf
      [1e6, 0x7c00],
      [-1e6, 0xfc00],
      [2 ** -14, 0x0400], // smallest normal
      [2 ** -14 - 2 ** -24, 0x03ff], // largest subnormal
      [2 ** -24, 0x0001], // smallest subnormal
      [2 ** -25, 0x0000], // tie between 0 and 2^-24 -> 0 (even)
      [2 ** -25 * 1.0000002, 0x0001], // just above the tie
      [1.5 * 2 ** -24, 0x0002], // tie 1 (odd) / 2 -> 2
      [2.5 * 2 ** -24, 0x0002], // tie 2 / 3 -> 2
      [1 + 2 ** -11, 0x3c00], // tie, 0x3c00 even
      [1 + 3 * 2 ** -11, 0x3c02], // tie, 0x3c01 odd -> up
      [1 + 2 ** -11 + 2 ** -20, 0x3c01], // above tie
      [1 / 3, 0x3555],
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
    ];
    const got = f32ToF16(new Float32Array(cases.map((c) => c[0])));
    expect(hex(got)).toEqual(hex(new Uint16Array(cases.map((c) => c[1]))));
    const nan = f32ToF16(new Float32Array([NaN, -NaN]));
    for (const h of nan) expect((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0).toBe(true);
    // a signalling NaN with a low payload still becomes a NaN, not inf
    const snan = new Float32Array(new Uint32Array([0x7f800001]).buffer);
    expect(Number.isNaN(f16ToF32(f32ToF16(snan))[0])).toBe(true);
  });

  it('f16ToF32 is exact for known patterns and inverts f32ToF16 on all 65536 values', () => {
    const got = f16ToF32(new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x0400, 0x7c00, 0xfc00, 0x8000, 0x3555]));
    expect([...got]).toEqual([1, -2, 65504, 2 ** -24, 2 ** -14 - 2 ** -24, 2 ** -14, Infinity, -Infinity, -0, 0.333251953125]);
    expect(Object.is(got[8], -0)).toBe(true);
    expect(Number.isNaN(f16ToF32(new Uint16Array([0x7e00]))[0])).toBe(true);
    expect(Number.isNaN(f16ToF32(new Uint16Array([0xfc01]))[0])).toBe(true);
    // exhaustive: reference value computed independently in doubles
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const f = f16ToF32(all);
    const back = f32ToF16(f);
    for (let h = 0; h < 65536; h++) {
      const s = h & 0x8000 ? -1 : 1;
      const e = (h >> 10) & 0x1f;
      const m = h & 0x3ff;
      const ref = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
      if (!Object.is(f[h], ref)) throw new Error(`f16ToF32(0x${h.toString(16)}) = ${f[h]}, want ${ref}`);
      const isNaN16 = e === 31 && m !== 0;
      if (isNaN16 ? !(back[h]! & 0x3ff && (back[h]! & 0x7c00) === 0x7c00) : back[h] !== h) {
        throw new Error(`round trip of 0x${h.toString(16)} gave 0x${back[h]!.toString(16)}`);
      }
    }
    // quiet NaN payloads survive exactly
    expect(hex(f32ToF16(f16ToF32(new Uint16Array([0x7e01, 0xfe55]))))).toEqual(['0x7e01', '0xfe55']);
  });

  it('bf16 conversions match known bit patterns and round to nearest even', () => {
    const bits = (u: number) => new Float32Array(new Uint32Array([u]).buffer)[0]!;
    const cases: [number, number][] = [
      [1, 0x3f80],
      [-2, 0xc000],
      [65504, 0x4780], // rounds up to 65536
      [bits(0x3f808000), 0x3f80], // tie, even stays
      [bits(0x3f818000), 0x3f82], // tie, odd rounds up
      [bits(0x3f808001), 0x3f81], // above tie
      [bits(0x00010000), 0x0001], // smallest subnormal
      [bits(0x7f7fffff), 0x7f80], // float32 max rounds to inf
      [Infinity, 0x7f80],
      [-Infinity, 0xff80],
      [-0, 0x8000],
    ];
    expect(hex(f32ToBF16(new Float32Array(cases.map((c) => c[0]))))).toEqual(hex(new Uint16Array(cases.map((c) => c[1]))));
    for (const h of f32ToBF16(new Float32Array([NaN, bits(0x7f800001), bits(0xff800001)]))) {
      expect((h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0).toBe(true);
    }
    const back = bf16ToF32(new Uint16Array([0x3f80, 0xc000, 0x0001, 0x7f80, 0xff80, 0x7fc0, 0x8000]));
    expect([...back].slice(0, 5)).toEqual([1, -2, 2 ** -133, Infinity, -Infinity]);
    expect(Number.isNaN(back[5])).toBe(true);
    expect(Object.is(back[6], -0)).toBe(true);
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const rt = f32ToBF16(bf16ToF32(all));
    for (let h = 0; h < 65536; h++) {
      const isNaN16 = (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0;
      if (!isNaN16 && rt[h] !== h) throw new Error(`bf16 round trip of 0x${h.toString(16)} gave 0x${rt[h]!.toString(16)}`);
    }
  });

  it('converts from subarray views and int64 with a single rounding', () => {
    const big = new Float32Array([9, 1, 2]);
    expect([...f32ToF16(big.subarray(1))]).toEqual([0x3c00, 0x4000]);
    const file = tmpFile();
    const v = [2n ** 53n + 1n, 2n ** 62n + 2n ** 38n + 1n, -(2n ** 62n + 2n ** 38n + 1n), 2n ** 24n + 1n, -(2n ** 63n)];
    writeSafetensors(file, { i: { dtype: 'I64', shape: [v.length], data: BigInt64Array.from(v) } });
    const f = SafetensorsFile.open(file);
    // 2^62 + 2^38 + 1 is just above the f32 tie 2^62 + 2^38: must round up (a double-rounding bug rounds down)
    expect([...f.readF32('i')]).toEqual([2 ** 53, 2 ** 62 + 2 ** 39, -(2 ** 62 + 2 ** 39), 2 ** 24, -(2 ** 63)]);
    f.close();
  });
});

// -----------------------------------------------------------------------------------------------------------------

describe('HF parity fixtures', () => {
  function findSafetensors(dir: string): string[] {
    const out: string[] = [];
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) out.push(...findSafetensors(p));
      else if (e.name.endsWith('.safetensors')) out.push(p);
    }
    return out.sort();
  }

  it('reads every .safetensors file under shared/fixtures/hf-parity', () => {
    expect(
      fs.existsSync(FIXTURES),
      `fixtures folder ${FIXTURES} is missing: put ../shared (with fixtures/hf-parity) beside this checkout`,
    ).toBe(true);
    const files = findSafetensors(FIXTURES);
    expect(files.length, `no .safetensors files under ${FIXTURES}`).toBeGreaterThan(0);
    let tensors = 0;
    for (const file of files) {
      const raw = fs.readFileSync(file);
      const f = SafetensorsFile.open(file);
      try {
        expect(f.names().length).toBeGreaterThan(0);
        for (const name of f.names()) {
          const info = f.info(name);
          expect(info.byteLength).toBe(numel(info.shape) * DTYPE_SIZES[info.dtype]);
          const bytes = f.readBytes(name);
          expect(bytes.byteLength).toBe(info.byteLength);
          // cross-check against a naive whole-file read
          expect(Buffer.compare(Buffer.from(bytes), raw.subarray(info.offset, info.offset + info.byteLength))).toBe(0);
          expect(f.read(name).length).toBe(numel(info.shape));
          const f32 = f.readF32(name);
          expect(f32.length).toBe(numel(info.shape));
          if (info.dtype === 'F32') expect(f32.every(Number.isFinite), `${file}: ${name} has non-finite values`).toBe(true);
          tensors++;
        }
      } finally {
        f.close();
      }
    }
    expect(tensors).toBeGreaterThan(100);

    const llama = SafetensorsFile.open(path.join(FIXTURES, 'llama/model.safetensors'));
    const emb = llama.info('model.embed_tokens.weight');
    expect(emb.dtype).toBe('F32');
    expect(emb.shape).toEqual([300, 64]);
    expect(llama.readF32('model.embed_tokens.weight').length).toBe(300 * 64);
    expect(llama.metadata).toEqual({ format: 'pt' });
    llama.close();
  });

  it('opens fixture folders as checkpoints (model.safetensors, adapter_model.safetensors)', () => {
    expect(fs.existsSync(FIXTURES), `fixtures folder ${FIXTURES} is missing`).toBe(true);
    const ck = SafetensorsCheckpoint.open(path.join(FIXTURES, 'llama'));
    expect(ck.files()).toEqual([path.join(FIXTURES, 'llama', 'model.safetensors')]);
    expect(ck.has('model.embed_tokens.weight')).toBe(true);
    expect(ck.info('model.embed_tokens.weight').shape).toEqual([300, 64]);
    expect(ck.metadata).toEqual({ format: 'pt' });
    ck.close();
    const lora = SafetensorsCheckpoint.open(path.join(FIXTURES, 'llama_lora'));
    expect(lora.files()).toEqual([path.join(FIXTURES, 'llama_lora', 'adapter_model.safetensors')]);
    expect(lora.names().length).toBeGreaterThan(0);
    lora.close();
  });
});

// -----------------------------------------------------------------------------------------------------------------

describe('sharded checkpoints', () => {
  function makeSharded(): { dir: string; all: Record<string, TensorInput> } {
    const dir = path.dirname(tmpFile());
    const s1: Record<string, TensorInput> = {
      'model.a': { dtype: 'F32', shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) },
      'model.b': { dtype: 'F16', shape: [2], data: f32ToF16(new Float32Array([0.5, -1])) },
    };
    const s2: Record<string, TensorInput> = {
      'model.c': { dtype: 'I64', shape: [3], data: BigInt64Array.from([1n, -2n, 3n]) },
      'lm_head.weight': { dtype: 'BF16', shape: [1, 2], data: f32ToBF16(new Float32Array([2, 4])) },
    };
    writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), s1, { format: 'pt' });
    writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), s2, { format: 'pt' });
    const weight_map: Record<string, string> = {};
    for (const k of Object.keys(s1)) weight_map[k] = 'model-00001-of-00002.safetensors';
    for (const k of Object.keys(s2)) weight_map[k] = 'model-00002-of-00002.safetensors';
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 42 }, weight_map }, null, 2));
    return { dir, all: { ...s1, ...s2 } };
  }

  it('reads a 2-shard checkpoint like one file, from the folder or the index path', () => {
    const { dir, all } = makeSharded();
    for (const target of [dir, path.join(dir, 'model.safetensors.index.json')]) {
      const ck = SafetensorsCheckpoint.open(target);
      expect(ck.names()).toEqual(Object.keys(all).sort());
      expect(ck.files().map((f) => path.basename(f)).sort()).toEqual(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
      expect(ck.indexMetadata).toEqual({ total_size: 42 });
      expect(ck.metadata).toEqual({ format: 'pt' });
      expect(ck.info('model.c').file).toBe(path.join(dir, 'model-00002-of-00002.safetensors'));
      for (const [name, t] of Object.entries(all)) {
        expect(ck.has(name)).toBe(true);
        expect(ck.info(name).shape).toEqual(t.shape);
        expect([...ck.read(name)]).toEqual([...t.data]);
        expect([...ck.readF32(name)]).toEqual(asNumbers(t.dtype, t.data).map(Math.fround));
      }
      expect([...ck.readI64('model.c')]).toEqual([1n, -2n, 3n]);
      expect([...ck.readF64('model.a')]).toEqual([1, 2, 3, 4]);
      expect(ck.has('nope')).toBe(false);
      expectUserError(() => ck.info('nope'), 'nope', target);
      ck.close();
    }
  });

  it('rejects bad indexes with a UserError naming the file', () => {
    const cases: [string, (dir: string, index: string) => void, (dir: string) => string[]][] = [
      ['missing shard', (dir, index) => fs.rmSync(path.join(dir, 'model-00002-of-00002.safetensors')), (dir) => [path.join(dir, 'model-00002-of-00002.safetensors'), 'does not exist']],
      ['tensor not in shard', (_dir, index) => {
        const j = JSON.parse(fs.readFileSync(index, 'utf8'));
        j.weight_map['model.c'] = 'model-00001-of-00002.safetensors';
        fs.writeFileSync(index, JSON.stringify(j));
      }, (dir) => [path.join(dir, 'model-00001-of-00002.safetensors'), 'model.c']],
      ['no weight_map', (_dir, index) => fs.writeFileSync(index, '{"metadata":{}}'), (dir) => [path.join(dir, 'model.safetensors.index.json'), 'weight_map']],
      ['weight_map not object', (_dir, index) => fs.writeFileSync(index, '{"weight_map":[]}'), (dir) => [path.join(dir, 'model.safetensors.index.json'), 'weight_map']],
      ['bad value', (_dir, index) => fs.writeFileSync(index, '{"weight_map":{"a":3}}'), (dir) => [path.join(dir, 'model.safetensors.index.json'), 'a']],
      ['escaping path', (_dir, index) => fs.writeFileSync(index, '{"weight_map":{"a":"../x.safetensors"}}'), (dir) => [path.join(dir, 'model.safetensors.index.json'), 'relative']],
      ['absolute path', (_dir, index) => fs.writeFileSync(index, '{"weight_map":{"a":"/etc/passwd"}}'), (dir) => [path.join(dir, 'model.safetensors.index.json'), 'relative']],
      ['not json', (_dir, index) => fs.writeFileSync(index, '{"weight_map":\n{'), (dir) => [path.join(dir, 'model.safetensors.index.json'), 'JSON']],
      ['not object', (_dir, index) => fs.writeFileSync(index, '[1]'), (dir) => [path.join(dir, 'model.safetensors.index.json'), 'object']],
      ['corrupt shard', (dir) => fs.writeFileSync(path.join(dir, 'model-00001-of-00002.safetensors'), new Uint8Array(5)), (dir) => [path.join(dir, 'model-00001-of-00002.safetensors'), 'shorter']],
    ];
    for (const [label, breakIt, parts] of cases) {
      const { dir } = makeSharded();
      const index = path.join(dir, 'model.safetensors.index.json');
      breakIt(dir, index);
      try {
        expectUserError(() => SafetensorsCheckpoint.open(dir), ...parts(dir));
      } catch (e) {
        throw new Error(`case "${label}": ${(e as Error).message}`);
      }
    }
    const emptyDir = path.dirname(tmpFile());
    expectUserError(() => SafetensorsCheckpoint.open(emptyDir), emptyDir, 'model.safetensors');
    expectUserError(() => SafetensorsCheckpoint.open(path.join(emptyDir, 'missing.safetensors')), 'missing.safetensors');
    expectUserError(() => SafetensorsFile.open(emptyDir), emptyDir);
  });
});

// -----------------------------------------------------------------------------------------------------------------

describe('malformed files (fuzz)', () => {

  function validFile(): Uint8Array {
    const tensors: NamedTensorInput[] = [
      { name: 'w', dtype: 'F32', shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) },
      { name: 'h', dtype: 'F16', shape: [3], data: f32ToF16(new Float32Array([1, -2, 0.5])) },
      { name: 'i', dtype: 'I64', shape: [2], data: BigInt64Array.from([7n, -8n]) },
      { name: 'b', dtype: 'BOOL', shape: [], data: new Uint8Array([1]) },
    ];
    const chunks = encodeSafetensors(tensors, { format: 'pt' });
    return Buffer.concat(chunks);
  }

  const ent = (dtype: unknown, shape: unknown, offs: unknown) => ({ dtype, shape, data_offsets: offs });

  /** Cases that must be rejected. Each: [label, bytes]. */
  function malformed(): [string, Uint8Array][] {
    const out: [string, Uint8Array][] = [];
    const add = (label: string, bytes: Uint8Array) => out.push([label, bytes]);
    const d16 = new Uint8Array(16);
    // too short
    for (let n = 0; n < 8; n++) add(`short ${n}`, new Uint8Array(n).fill(0x7b));
    // header length field
    const body = Buffer.from('{}      ');
    add('header len 0', withHeaderLength(0n, body));
    add('header len 0 no data', withHeaderLength(0n, new Uint8Array(0)));
    add('header len size-7', withHeaderLength(BigInt(body.length + 1), body));
    for (const n of [2n ** 63n, 2n ** 64n - 1n, 2n ** 53n + 1n, 2n ** 53n, 2n ** 32n, 2n ** 31n, 100_000_001n, 0x7b7b7b7b7b7b7b7bn]) {
      add(`header len ${n}`, withHeaderLength(n, body));
    }
    // not UTF-8
    for (const bad of [[0xff], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0xf8, 0x88, 0x80, 0x80, 0x80]]) {
      const h = Buffer.concat([Buffer.from('{"__metadata__":{"k":"'), Buffer.from(bad), Buffer.from('"}}')]);
      add(`utf8 ${bad.map((b) => b.toString(16)).join(' ')}`, withHeaderLength(BigInt(h.length), h));
    }
    // not JSON
    for (const t of ['\n', ' ', 'NaN', '{"a":NaN}', '{"a":Infinity}', '{"__metadata__":{"x":"y"},}', "{'a':1}", '{', '{}}', 'undefined', '{"a":1}\u0000', '\ufeff{}', '{"a":-}', '{"a":01}']) {
      add(`json ${JSON.stringify(t)}`, buildRaw(t));
    }
    // not an object
    for (const t of ['[]', '1', '"str"', 'null', 'true', '[{"dtype":"F32","shape":[0],"data_offsets":[0,0]}]']) add(`top ${t.slice(0, 20)}`, buildRaw(t));
    // deeply nested
    add('nested arrays', buildRaw(`{"a":${'['.repeat(100_000)}${']'.repeat(100_000)}}`));
    add('nested objects', buildRaw(`${'{"a":'.repeat(50_000)}1${'}'.repeat(50_000)}`));
    add('nested metadata', buildRaw(`{"__metadata__":{"k":${'['.repeat(10_000)}${']'.repeat(10_000)}}}`));
    add('nested shape', buildRaw(`{"a":{"dtype":"F32","shape":${'['.repeat(10_000)}${']'.repeat(10_000)},"data_offsets":[0,0]}}`));
    // entry not an object
    for (const v of [1, null, [], 'F32', true]) add(`entry ${JSON.stringify(v)}`, buildRaw({ a: v }, d16));
    // missing fields
    add('no dtype', buildRaw({ a: { shape: [1], data_offsets: [0, 4] } }, d16));
    add('no shape', buildRaw({ a: { dtype: 'F32', data_offsets: [0, 4] } }, d16));
    add('no offsets', buildRaw({ a: { dtype: 'F32', shape: [1] } }, d16));
    add('empty entry', buildRaw({ a: {} }, d16));
    // unknown dtype
    for (const dt of ['F8', 'f32', 'U16', 'F8_E4M3', '', 1, null, ['F32'], 'toString', '__proto__']) {
      add(`dtype ${JSON.stringify(dt)}`, buildRaw({ a: ent(dt, [1], [0, 4]) }, d16));
    }
    // bad shapes
    for (const s of ['3', null, {}, [-1], [1.5], [2 ** 53], ['2'], [[2]], [null], [1e308], [2 ** 40, 2 ** 40], [2 ** 26, 2 ** 26, 2 ** 26], [-0.5]]) {
      add(`shape ${JSON.stringify(s)}`, buildRaw({ a: ent('F32', s, [0, 4]) }, d16));
    }
    add('shape 200k huge dims', buildRaw({ a: ent('F32', Array(200_000).fill(2 ** 52), [0, 4]) }, d16));
    add('shape 200k dims then 0', buildRaw({ a: ent('F32', [...Array(200_000).fill(2 ** 52), 0], [0, 4]) }, d16));
    add('shape 1e400', buildRaw('{"a":{"dtype":"F32","shape":[1e400],"data_offsets":[0,4]}}', d16));
    add('shape -0 and huge product', buildRaw('{"a":{"dtype":"F32","shape":[4294967296,4294967296,0.5],"data_offsets":[0,4]}}', d16));
    // bad offsets
    for (const o of [null, '0,4', [0], [0, 4, 8], [-4, 0], [0, 4.5], ['0', '4'], [4, 0], [0, 2 ** 64], [2 ** 53, 2 ** 53 + 4], [null, 4], {}]) {
      add(`offsets ${JSON.stringify(o)}`, buildRaw({ a: ent('F32', [1], o) }, d16));
    }
    add('offsets 1e400', buildRaw('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,1e400]}}', d16));
    // byte length mismatch
    add('len short', buildRaw({ a: ent('F32', [1], [0, 3]) }, d16));
    add('len long', buildRaw({ a: ent('F32', [1], [0, 8]) }, d16));
    add('len scalar', buildRaw({ a: ent('F64', [], [0, 4]) }, d16));
    add('len empty', buildRaw({ a: ent('F32', [0], [0, 4]) }, d16));
    add('len huge shape', buildRaw({ a: ent('F32', [2 ** 40, 2 ** 40], [0, 16]) }, d16));
    // data beyond end of file
    add('beyond end', buildRaw({ a: ent('U8', [400], [0, 400]) }, d16));
    add('beyond end by 1', buildRaw({ a: ent('U8', [17], [0, 17]) }, d16));
    add('empty beyond end', buildRaw({ a: ent('U8', [0], [1000, 1000]) }, d16));
    add('huge offsets', buildRaw({ a: ent('U8', [4], [2 ** 52, 2 ** 52 + 4]) }, d16));
    add('huge real tensor', buildRaw({ a: ent('U8', [2 ** 50], [0, 2 ** 50]) }, d16));
    // overlaps
    add('overlap', buildRaw({ a: ent('F32', [2], [0, 8]), b: ent('F32', [2], [4, 12]) }, d16));
    add('same range', buildRaw({ a: ent('F32', [2], [0, 8]), b: ent('I32', [2], [0, 8]) }, d16));
    add('contained', buildRaw({ b: ent('U8', [16], [0, 16]), a: ent('U8', [1], [5, 6]) }, d16));
    add('overlap last byte', buildRaw({ a: ent('U8', [8], [0, 8]), b: ent('U8', [8], [7, 15]) }, d16));
    // metadata
    for (const m of [{ a: 1 }, 'x', [], { a: { b: 'c' } }, { a: null }, { a: ['x'] }, 5, true]) {
      add(`metadata ${JSON.stringify(m)}`, buildRaw({ __metadata__: m, t: ent('U8', [1], [0, 1]) }, d16));
    }
    // names with control characters must still give a one-line message
    add('newline name', buildRaw({ 'bad\nname\r\u2028': ent('F8', [1], [0, 4]) }, d16));
    add('huge name', buildRaw({ ['n'.repeat(100_000)]: ent('F32', [1], [0, 5]) }, d16));
    return out;
  }

  function checkCase(file: string, bytes: Uint8Array, mustFail: boolean): 'ok' | 'error' {
    let f: SafetensorsFile | undefined;
    try {
      f = SafetensorsFile.open(file);
      // opened: every tensor must read consistently with the header and the bytes on disk
      for (const name of f.names()) {
        const info = f.info(name);
        expect(info.byteLength).toBe(numel(info.shape) * DTYPE_SIZES[info.dtype]);
        expect(info.offset + info.byteLength).toBeLessThanOrEqual(bytes.length);
        const raw = f.readBytes(name);
        expect(Buffer.compare(Buffer.from(raw), Buffer.from(bytes.subarray(info.offset, info.offset + info.byteLength)))).toBe(0);
        expect(f.read(name).length).toBe(numel(info.shape));
        expect(f.readF32(name).length).toBe(numel(info.shape));
        expect(f.readF64(name).length).toBe(numel(info.shape));
      }
      expect(mustFail, `${file} should have been rejected`).toBe(false);
      return 'ok';
    } catch (e) {
      if (!(e instanceof UserError)) throw new Error(`${file}: non-UserError ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
      expect(e.message).not.toMatch(/[\r\n\u2028\u2029]/);
      expect(e.message).toContain(file);
      expect(e.message.length).toBeLessThan(5000);
      return 'error';
    } finally {
      f?.close();
    }
  }

  it('rejects every malformed file with a one-line UserError naming the file', () => {
    const dir = path.dirname(tmpFile());
    const cases = malformed();
    const distinct = new Set(cases.map(([, b]) => Buffer.from(b).toString('base64')));
    const dups = cases.filter(([, b], i) => cases.findIndex(([, c]) => Buffer.compare(Buffer.from(b), Buffer.from(c)) === 0) !== i).map(([l]) => l);
    expect(dups, "duplicate malformed cases").toEqual([]);
    expect(distinct.size).toBe(cases.length);
    expect(cases.length).toBeGreaterThanOrEqual(60);
    const rss0 = process.memoryUsage().rss;
    cases.forEach(([label, bytes], i) => {
      const file = path.join(dir, `bad-${String(i).padStart(3, '0')}.safetensors`);
      fs.writeFileSync(file, bytes);
      const t0 = performance.now();
      try {
        expect(checkCase(file, bytes, true)).toBe('error');
      } catch (e) {
        throw new Error(`case ${i} "${label}": ${(e as Error).message}`);
      }
      expect(performance.now() - t0, `case "${label}" too slow`).toBeLessThan(5000);
    });
    expect(process.memoryUsage().rss - rss0).toBeLessThan(512 * 1024 * 1024);
  });

  it('rejects a header over 100 MB in a large sparse file without reading it', () => {
    const file = tmpFile();
    const n = 100_000_008;
    const fd = fs.openSync(file, 'w');
    try {
      fs.writeSync(fd, withHeaderLength(BigInt(n), new Uint8Array(0)));
      fs.ftruncateSync(fd, 8 + n + 16);
    } finally {
      fs.closeSync(fd);
    }
    expectUserError(() => SafetensorsFile.open(file), file, '100000000');
    fs.rmSync(file);
  });

  it('survives truncations and random byte flips of a valid file', () => {
    const dir = path.dirname(tmpFile());
    const valid = validFile();
    const seen = new Set<string>();
    let i = 0;
    let malformedCount = 0;
    let okCount = 0;
    const run = (label: string, bytes: Uint8Array, mustFail: boolean) => {
      const key = Buffer.from(bytes).toString('base64');
      if (seen.has(key)) return;
      seen.add(key);
      const file = path.join(dir, `fuzz-${String(i++).padStart(4, '0')}.safetensors`);
      fs.writeFileSync(file, bytes);
      let r: 'ok' | 'error';
      try {
        r = checkCase(file, bytes, mustFail);
      } catch (e) {
        throw new Error(`case "${label}": ${(e as Error).message}`);
      }
      if (r === 'ok') okCount++;
      else malformedCount++;
      fs.rmSync(file);
    };
    run('valid', valid, false);
    expect(okCount).toBe(1);
    // every truncation of the valid file is malformed
    for (let len = 0; len < valid.length; len++) run(`truncate ${len}`, valid.subarray(0, len), true);
    // random byte flips: anywhere, in the header, in the length field
    const rand = rng(12345);
    const headerEnd = 8 + Number(Buffer.from(valid).readBigUInt64LE(0));
    for (let k = 0; k < 600; k++) {
      const b = Uint8Array.from(valid);
      const flips = 1 + Math.floor(rand() * 3);
      const region = k % 3;
      for (let j = 0; j < flips; j++) {
        const pos = region === 0 ? Math.floor(rand() * b.length) : region === 1 ? 8 + Math.floor(rand() * (headerEnd - 8)) : Math.floor(rand() * 8);
        b[pos] = region === 1 && rand() < 0.5 ? '{}[]",:0123456789-e. '.charCodeAt(Math.floor(rand() * 21)) : b[pos]! ^ (1 << Math.floor(rand() * 8));
      }
      run(`flip ${k}`, b, false);
    }
    // flips plus truncation
    for (let k = 0; k < 100; k++) {
      const b = Uint8Array.from(valid);
      b[8 + Math.floor(rand() * (headerEnd - 8))] ^= 1 << Math.floor(rand() * 8);
      run(`flip+truncate ${k}`, b.subarray(0, Math.floor(rand() * b.length)), false);
    }
    expect(malformedCount).toBeGreaterThanOrEqual(50);
    expect(okCount).toBeGreaterThan(1); // flips in the data region still read fine
  });
});
