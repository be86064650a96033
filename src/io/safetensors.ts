/**
 * safetensors reader and writer, written by hand (no library).
 *
 * File layout: u64 little-endian header length N, N bytes of UTF-8 JSON (possibly space-padded), then the data.
 * The JSON maps tensor name -> {dtype, shape, data_offsets:[begin,end]} with offsets relative to the first byte
 * after the header, plus an optional "__metadata__" object of string -> string. Data is little-endian, row-major.
 *
 * The reader only reads and validates the header on open; tensors are read on demand by offset with
 * `fs.readSync` into a fresh buffer, so multi-GB checkpoints load lazily. Nothing is ever allocated from an
 * unvalidated size: every tensor's byte range is checked against the real file size before it can be read.
 * Tensors need not be sorted, contiguous or aligned. Every problem with the input is a one-line `UserError`
 * naming the file (and the tensor, where there is one).
 */
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../util/errors.ts';
import { openRegularFile, writeFileAtomic } from '../util/fs.ts';

export type SafeDType = 'F32' | 'F16' | 'BF16' | 'F64' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

/** Typed arrays as returned by `read` (F16/BF16 as Uint16Array, BOOL as Uint8Array, I64 as BigInt64Array). */
export type SafeTypedArray =
  | Float32Array
  | Float64Array
  | Uint16Array
  | Int8Array
  | Uint8Array
  | Int16Array
  | Int32Array
  | BigInt64Array;

export interface TensorInfo {
  name: string;
  dtype: SafeDType;
  shape: number[];
  /** Absolute byte offset of the tensor's data in the file. */
  offset: number;
  byteLength: number;
  file: string;
}

/** A tensor to write. `data` is the typed array matching the dtype (see `read`), or its raw little-endian bytes. */
export interface TensorInput {
  dtype: SafeDType;
  shape: readonly number[];
  data: SafeTypedArray;
}

export interface NamedTensorInput extends TensorInput {
  name: string;
}

/** Bytes per element for each dtype. */
export const DTYPE_SIZES: Readonly<Record<SafeDType, number>> = Object.freeze({
  F32: 4,
  F16: 2,
  BF16: 2,
  F64: 8,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
});

export const SAFE_DTYPES: readonly SafeDType[] = Object.freeze(Object.keys(DTYPE_SIZES) as SafeDType[]);

export function isSafeDType(x: unknown): x is SafeDType {
  return typeof x === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_SIZES, x);
}

/** Largest header accepted (same limit as the Python library). */
export const MAX_HEADER_BYTES = 100_000_000;

const INDEX_FILE = 'model.safetensors.index.json';
const MAX_INDEX_BYTES = 100_000_000;
const READ_CHUNK = 1 << 30;

// ---------------------------------------------------------------------------------------------------------------
// small helpers

/** Make any text safe for a one-line message: control characters escaped, length capped. */
function clean(s: string, max = 300): string {
  const esc = s.replace(/[\u0000-\u001f\u007f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return esc.length > max ? `${esc.slice(0, max)}...` : esc;
}

/** A tensor name as shown in messages: bare when printable and short, otherwise JSON-quoted and capped. */
function showName(name: string): string {
  return /^[\x21-\x7e]{1,200}$/.test(name) ? name : clean(JSON.stringify(name.length > 200 ? `${name.slice(0, 200)}...` : name), 200);
}

function fail(message: string, where: string): never {
  throw new UserError(clean(message, 2000), clean(where, 2000));
}

function whereTensor(file: string, name: string): string {
  return `${file}: ${showName(name)}`;
}

function errText(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as NodeJS.ErrnoException).code;
    return code ? `${code}: ${e.message}` : e.message;
  }
  return String(e);
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function describe(x: unknown): string {
  if (x === null) return 'null';
  if (Array.isArray(x)) return 'an array';
  return typeof x === 'object' ? 'an object' : `${typeof x} ${preview(x)}`;
}

/** A short, bounded, non-recursive rendering of any JSON value for messages (never stringifies deep/huge values). */
function preview(x: unknown, depth = 0): string {
  if (typeof x === 'string') return clean(JSON.stringify(x.length > 40 ? `${x.slice(0, 40)}...` : x), 60);
  if (typeof x === 'number' || typeof x === 'boolean' || x === null) return String(x);
  if (Array.isArray(x)) {
    if (depth >= 2) return x.length ? '[...]' : '[]';
    const items = x.slice(0, 6).map((v) => preview(v, depth + 1));
    if (x.length > 6) items.push(`... (${x.length} items)`);
    return `[${items.join(',')}]`;
  }
  if (typeof x === 'object') return '{...}';
  return typeof x;
}

const NUMEL_CAP = 1n << 64n;

/** Element count of a shape as a bigint, saturating just above 2^64 (no overflow, no slow huge-bigint products). */
function numelBig(shape: readonly number[]): bigint {
  if (shape.some((d) => d === 0)) return 0n;
  let n = 1n;
  for (const d of shape) {
    n *= BigInt(d);
    if (n > NUMEL_CAP) return NUMEL_CAP + 1n;
  }
  return n;
}

function showCount(n: bigint): string {
  return n > NUMEL_CAP ? 'more than 2^64' : n.toString();
}

function validShapeError(shape: unknown): string | null {
  if (!Array.isArray(shape)) return `shape must be an array of non-negative integers, got ${describe(shape)}`;
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      return `shape must be an array of non-negative integers, got ${preview(shape)}`;
    }
  }
  return null;
}

/** View a fresh, zero-offset ArrayBuffer holding little-endian data as the typed array of `dtype`. */
export function viewAs(dtype: SafeDType, buf: ArrayBuffer, count: number): SafeTypedArray {
  switch (dtype) {
    case 'F32':
      return new Float32Array(buf, 0, count);
    case 'F64':
      return new Float64Array(buf, 0, count);
    case 'F16':
    case 'BF16':
      return new Uint16Array(buf, 0, count);
    case 'I64':
      return new BigInt64Array(buf, 0, count);
    case 'I32':
      return new Int32Array(buf, 0, count);
    case 'I16':
      return new Int16Array(buf, 0, count);
    case 'I8':
      return new Int8Array(buf, 0, count);
    case 'U8':
    case 'BOOL':
      return new Uint8Array(buf, 0, count);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// F16 / BF16 conversions (bit exact)

let f16Table: Uint32Array | null = null;

/** float32 bit pattern of each of the 65536 float16 values (exact, incl. subnormals, inf, NaN payloads). */
function halfTable(): Uint32Array {
  if (f16Table) return f16Table;
  const t = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    let man = h & 0x3ff;
    let bits: number;
    if (exp === 0) {
      if (man === 0) bits = sign;
      else {
        // subnormal: value = man * 2^-24; normalise into a float32 normal
        let e = 113; // float32 biased exponent of 2^-14
        while ((man & 0x400) === 0) {
          man <<= 1;
          e--;
        }
        bits = sign | (e << 23) | ((man & 0x3ff) << 13);
      }
    } else if (exp === 31) bits = sign | 0x7f800000 | (man << 13);
    else bits = sign | ((exp + 112) << 23) | (man << 13);
    t[h] = bits >>> 0;
  }
  f16Table = t;
  return t;
}

/** float16 bit patterns -> float32, exactly. */
export function f16ToF32(x: Uint16Array): Float32Array {
  const table = halfTable();
  const out = new Float32Array(x.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < x.length; i++) bits[i] = table[x[i]!]!;
  return out;
}

/** bfloat16 bit patterns -> float32, exactly. */
export function bf16ToF32(x: Uint16Array): Float32Array {
  const out = new Float32Array(x.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < x.length; i++) bits[i] = x[i]! << 16;
  return out;
}

/** One float32 bit pattern -> float16 bit pattern, round to nearest even; NaN stays NaN (quiet), overflow -> inf. */
function f32BitsToF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const a = x & 0x7fffffff;
  if (a >= 0x7f800000) {
    if (a === 0x7f800000) return sign | 0x7c00;
    return sign | 0x7c00 | 0x200 | ((a >>> 13) & 0x3ff); // NaN: keep the top payload bits, force quiet
  }
  if (a >= 0x477ff000) return sign | 0x7c00; // >= 65520 rounds to infinity
  if (a < 0x38800000) {
    // result is a float16 subnormal (or zero): units of 2^-24
    const e = a >>> 23;
    if (e < 102) return sign; // < 2^-25: rounds to zero
    const m = (a & 0x7fffff) | 0x800000;
    const shift = 126 - e; // 14..24
    let r = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (r & 1) === 1)) r++;
    return sign | r;
  }
  const e = (a >>> 23) - 112;
  let r = (e << 10) | ((a >>> 13) & 0x3ff);
  const rem = a & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1) === 1)) r++;
  return sign | r;
}

/** float32 -> float16 bit patterns (round to nearest even; overflow -> inf; NaN -> quiet NaN). */
export function f32ToF16(x: Float32Array): Uint16Array {
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = f32BitsToF16(bits[i]!);
  return out;
}

/** float32 -> bfloat16 bit patterns (round to nearest even; NaN -> quiet NaN). */
export function f32ToBF16(x: Float32Array): Uint16Array {
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const b = bits[i]!;
    if ((b & 0x7fffffff) > 0x7f800000) out[i] = (b >>> 16) | 0x40;
    else out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return out;
}

/** int64 -> float32 with a single correct rounding (round-to-odd at double precision avoids double rounding). */
function i64ToF32(v: bigint): number {
  const n = Number(v);
  if (Math.abs(n) <= 9007199254740992) return n; // exact in a double
  const neg = v < 0n;
  let a = neg ? -v : v;
  const shift = BigInt(a.toString(2).length - 53);
  const rem = a & ((1n << shift) - 1n);
  a >>= shift;
  if (rem !== 0n) a |= 1n;
  const d = Number(a) * 2 ** Number(shift);
  return neg ? -d : d;
}

// ---------------------------------------------------------------------------------------------------------------
// conversions of a stored typed array

export function toF32(dtype: SafeDType, data: SafeTypedArray): Float32Array {
  switch (dtype) {
    case 'F32':
      return data as Float32Array;
    case 'F16':
      return f16ToF32(data as Uint16Array);
    case 'BF16':
      return bf16ToF32(data as Uint16Array);
    case 'I64': {
      const src = data as BigInt64Array;
      const out = new Float32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = i64ToF32(src[i]!);
      return out;
    }
    default:
      return Float32Array.from(data as Float64Array);
  }
}

export function toF64(dtype: SafeDType, data: SafeTypedArray): Float64Array {
  switch (dtype) {
    case 'F64':
      return data as Float64Array;
    case 'F16':
    case 'BF16':
      return Float64Array.from(toF32(dtype, data));
    case 'I64': {
      const src = data as BigInt64Array;
      const out = new Float64Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = Number(src[i]!);
      return out;
    }
    default:
      return Float64Array.from(data as Float32Array);
  }
}

const INTEGER_DTYPES: ReadonlySet<SafeDType> = new Set(['I64', 'I32', 'I16', 'I8', 'U8', 'BOOL']);

export function toI64(dtype: SafeDType, data: SafeTypedArray, where: string): BigInt64Array {
  if (dtype === 'I64') return data as BigInt64Array;
  if (!INTEGER_DTYPES.has(dtype)) fail(`readI64 needs an integer tensor, this one is ${dtype}`, where);
  const src = data as Int32Array;
  const out = new BigInt64Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = BigInt(src[i]!);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// header parsing

interface ParsedHeader {
  headerLength: number;
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
}

/** Validate a decoded header (JSON value) against the file layout. `dataStart` = 8 + N, `fileSize` in bytes. */
function validateHeader(file: string, json: unknown, dataStart: number, fileSize: number): ParsedHeader {
  if (!isPlainObject(json)) fail(`safetensors header must be a JSON object, got ${describe(json)}`, file);
  const dataLen = fileSize - dataStart;
  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  const ranges: { begin: number; end: number; name: string }[] = [];
  for (const [name, entry] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (entry === null) continue;
      if (!isPlainObject(entry)) fail(`__metadata__ must be an object of string -> string, got ${describe(entry)}`, file);
      const md: Record<string, string> = Object.create(null);
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== 'string') fail(`__metadata__ value of ${showName(k)} must be a string, got ${describe(v)}`, file);
        md[k] = v;
      }
      metadata = md;
      continue;
    }
    const where = whereTensor(file, name);
    if (!isPlainObject(entry)) fail(`tensor entry must be an object, got ${describe(entry)}`, where);
    for (const key of ['dtype', 'shape', 'data_offsets']) {
      if (!Object.prototype.hasOwnProperty.call(entry, key)) fail(`tensor entry is missing "${key}"`, where);
    }
    const dtype = entry.dtype;
    if (!isSafeDType(dtype)) {
      fail(`unknown dtype ${preview(dtype)} (supported: ${SAFE_DTYPES.join(', ')})`, where);
    }
    const shapeErr = validShapeError(entry.shape);
    if (shapeErr) fail(shapeErr, where);
    const shape = (entry.shape as number[]).slice();
    const offs = entry.data_offsets;
    if (
      !Array.isArray(offs) ||
      offs.length !== 2 ||
      !offs.every((o) => typeof o === 'number' && Number.isSafeInteger(o) && o >= 0)
    ) {
      fail(`data_offsets must be two non-negative integers [begin, end], got ${preview(offs)}`, where);
    }
    const [begin, end] = offs as [number, number];
    if (begin > end) fail(`data_offsets begin ${begin} > end ${end}`, where);
    const want = numelBig(shape) * BigInt(DTYPE_SIZES[dtype]);
    if (want !== BigInt(end - begin)) {
      fail(`data_offsets [${begin}, ${end}] hold ${end - begin} bytes but shape ${preview(shape)} of ${dtype} needs ${showCount(want)}`, where);
    }
    if (end > dataLen) {
      fail(`data [${begin}, ${end}) runs past the end of the data region (${dataLen} bytes): file truncated?`, where);
    }
    tensors.set(name, { name, dtype, shape, offset: dataStart + begin, byteLength: end - begin, file });
    if (end > begin) ranges.push({ begin, end, name });
  }
  ranges.sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < ranges.length; i++) {
    const p = ranges[i - 1]!;
    const c = ranges[i]!;
    if (c.begin < p.end) {
      fail(`data [${c.begin}, ${c.end}) overlaps tensor ${showName(p.name)} [${p.begin}, ${p.end})`, whereTensor(file, c.name));
    }
  }
  return { headerLength: dataStart - 8, tensors, metadata: Object.freeze(metadata) as Record<string, string> };
}

/** Read exactly `length` bytes at `position` into `dst` (handles short reads, offsets beyond 2 GiB). */
export function readExact(fd: number, dst: Uint8Array, position: number, where: string): void {
  let done = 0;
  while (done < dst.length) {
    let n: number;
    try {
      n = fs.readSync(fd, dst, done, Math.min(dst.length - done, READ_CHUNK), position + done);
    } catch (e) {
      fail(`read failed at byte ${position + done}: ${errText(e)}`, where);
    }
    if (n <= 0) fail(`unexpected end of file at byte ${position + done} (wanted ${dst.length - done} more bytes): file truncated?`, where);
    done += n;
  }
}

function allocBytes(n: number, where: string): Uint8Array {
  try {
    return new Uint8Array(new ArrayBuffer(n));
  } catch (e) {
    fail(`cannot allocate ${n} bytes to read it: ${errText(e)}`, where);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// reader

/** One .safetensors file, read lazily: the header is parsed on open, tensors on demand. */
export class SafetensorsFile {
  readonly file: string;
  readonly metadata: Record<string, string>;
  /** Header length N in bytes (data starts at 8 + N). */
  readonly headerLength: number;
  readonly fileSize: number;
  private readonly tensors: Map<string, TensorInfo>;
  private fd: number | null;

  private constructor(file: string, fd: number, fileSize: number, header: ParsedHeader) {
    this.file = file;
    this.fd = fd;
    this.fileSize = fileSize;
    this.headerLength = header.headerLength;
    this.tensors = header.tensors;
    this.metadata = header.metadata;
  }

  /** Open a file and read + validate its header only. Throws a one-line UserError naming the file on any problem. */
  static open(file: string): SafetensorsFile {
    let fd: number;
    fd = openRegularFile(file);
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) fail('not a regular file', file);
      const size = st.size;
      if (size < 8) fail(`file is ${size} bytes, shorter than the 8-byte safetensors header length`, file);
      const lenBuf = new Uint8Array(8);
      readExact(fd, lenBuf, 0, file);
      const n = new DataView(lenBuf.buffer).getBigUint64(0, true);
      if (n === 0n) fail('header length is 0', file);
      if (n > BigInt(MAX_HEADER_BYTES)) fail(`header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit (not a safetensors file?)`, file);
      if (n > BigInt(size - 8)) fail(`header length ${n} is larger than the rest of the file (${size - 8} bytes): truncated or not a safetensors file`, file);
      const headerLength = Number(n);
      const headerBytes = allocBytes(headerLength, file);
      readExact(fd, headerBytes, 8, file);
      let text: string;
      try {
        text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
      } catch {
        fail('header is not valid UTF-8', file);
      }
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch (e) {
        fail(`header is not valid JSON: ${clean(errText(e), 160)}`, file);
      }
      const header = validateHeader(file, json, 8 + headerLength, size);
      return new SafetensorsFile(file, fd, size, header);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  /** Tensor names, sorted. */
  names(): string[] {
    return [...this.tensors.keys()].sort();
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) fail(`no such tensor in this file (${this.tensors.size} tensors)`, whereTensor(this.file, name));
    return { ...t, shape: t.shape.slice() };
  }

  /** Info for every tensor, sorted by name. */
  infos(): TensorInfo[] {
    return this.names().map((n) => this.info(n));
  }

  /** The tensor's raw little-endian bytes, read into a fresh buffer. */
  readBytes(name: string): Uint8Array {
    const t = this.info(name);
    const where = whereTensor(this.file, name);
    const bytes = allocBytes(t.byteLength, where);
    if (t.byteLength > 0) readExact(this.handle(), bytes, t.offset, where);
    return bytes;
  }

  /** The tensor in its stored dtype: F32 Float32Array, F64 Float64Array, F16/BF16 Uint16Array (bit patterns),
   *  I64 BigInt64Array, I32 Int32Array, I16 Int16Array, I8 Int8Array, U8/BOOL Uint8Array. */
  read(name: string): SafeTypedArray {
    const t = this.info(name);
    const bytes = this.readBytes(name);
    const size = DTYPE_SIZES[t.dtype];
    return viewAs(t.dtype, bytes.buffer as ArrayBuffer, t.byteLength / size);
  }

  /** The tensor as float32 (F16/BF16 exact; F64 and ints rounded to nearest). */
  readF32(name: string): Float32Array {
    return toF32(this.info(name).dtype, this.read(name));
  }

  /** The tensor as float64 (I64 beyond 2^53 rounded). */
  readF64(name: string): Float64Array {
    return toF64(this.info(name).dtype, this.read(name));
  }

  /** An integer tensor (I64/I32/I16/I8/U8/BOOL) as int64. */
  readI64(name: string): BigInt64Array {
    const t = this.info(name);
    return toI64(t.dtype, this.read(name), whereTensor(this.file, name));
  }

  /** Close the file descriptor. A later read reopens the file. */
  close(): void {
    if (this.fd !== null) {
      const fd = this.fd;
      this.fd = null;
      fs.closeSync(fd);
    }
  }

  private handle(): number {
    if (this.fd === null) {
      this.fd = openRegularFile(this.file);
    }
    return this.fd;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// checkpoint (single file or HF sharded index)

export function readIndex(indexFile: string): { metadata: Record<string, unknown>; weightMap: Map<string, string> } {
  let text: string;
  try {
    const st = fs.statSync(indexFile);
    if (!st.isFile()) fail('not a regular file', indexFile);
    if (st.size > MAX_INDEX_BYTES) fail(`index file is ${st.size} bytes, over the ${MAX_INDEX_BYTES}-byte limit`, indexFile);
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(fs.readFileSync(indexFile));
  } catch (e) {
    if (e instanceof UserError) throw e;
    fail(`cannot read safetensors index: ${errText(e)}`, indexFile);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(`index is not valid JSON: ${clean(errText(e), 160)}`, indexFile);
  }
  if (!isPlainObject(json)) fail(`index must be a JSON object, got ${describe(json)}`, indexFile);
  const md = json.metadata;
  if (md !== undefined && md !== null && !isPlainObject(md)) fail(`index "metadata" must be an object, got ${describe(md)}`, indexFile);
  const wm = json.weight_map;
  if (!isPlainObject(wm)) fail(`index "weight_map" must be an object of tensor name -> shard file, got ${describe(wm)}`, indexFile);
  const weightMap = new Map<string, string>();
  for (const [name, shard] of Object.entries(wm)) {
    const where = whereTensor(indexFile, name);
    if (typeof shard !== 'string' || shard === '') fail(`weight_map value must be a shard file name, got ${describe(shard)}`, where);
    if (path.isAbsolute(shard) || shard.split(/[\\/]/).includes('..')) {
      fail(`shard file ${showName(shard)} must be a relative path inside the checkpoint folder`, where);
    }
    weightMap.set(name, shard);
  }
  return { metadata: (md as Record<string, unknown> | undefined) ?? {}, weightMap };
}

/** What a sharded checkpoint needs of one file's reader (SafetensorsFile, or torch's TorchFile). */
export interface ShardFile<Info> {
  readonly file: string;
  names(): string[];
  has(name: string): boolean;
  info(name: string): Info;
  readBytes(name: string): Uint8Array;
  read(name: string): SafeTypedArray;
  readF32(name: string): Float32Array;
  readF64(name: string): Float64Array;
  readI64(name: string): BigInt64Array;
  close(): void;
}

/**
 * Tensors in one file or spread over the shards of an index (weight_map), with one API across them: the
 * safetensors and the torch checkpoints both are one of these.
 */
export class ShardedCheckpoint<F extends ShardFile<Info>, Info> {
  protected constructor(
    /** The path opened: the weights file or the index JSON. */
    readonly source: string,
    protected readonly shards: F[],
    private readonly owner: Map<string, F>,
  ) {}

  /** One file's tensors, all owned by it. */
  protected static single<F extends ShardFile<unknown>>(f: F): { shards: F[]; owner: Map<string, F> } {
    return { shards: [f], owner: new Map(f.names().map((n) => [n, f])) };
  }

  /**
   * The shards an index names, each opened once (`open(shard path, first tensor it holds)`), every tensor
   * checked to be in the shard the index maps it to; shards opened so far are closed on an error.
   */
  protected static shardsOf<F extends ShardFile<unknown>>(indexFile: string, weightMap: Map<string, string>, open: (shardPath: string, name: string) => F): { shards: F[]; owner: Map<string, F> } {
    const byShard = new Map<string, F>();
    const owner = new Map<string, F>();
    try {
      for (const [name, shard] of weightMap) {
        let f = byShard.get(shard);
        if (!f) byShard.set(shard, (f = open(path.join(path.dirname(indexFile), shard), name)));
        if (!f.has(name)) fail(`tensor is mapped to shard ${f.file} by ${indexFile}, but that shard does not contain it`, whereTensor(f.file, name));
        owner.set(name, f);
      }
    } catch (e) {
      for (const f of byShard.values()) f.close();
      throw e;
    }
    return { shards: [...byShard.values()], owner };
  }

  /** Paths of the files making up this checkpoint. */
  files(): string[] {
    return this.shards.map((s) => s.file);
  }

  names(): string[] {
    return [...this.owner.keys()].sort();
  }

  has(name: string): boolean {
    return this.owner.has(name);
  }

  private shardOf(name: string): F {
    const f = this.owner.get(name);
    if (!f) fail(`no such tensor in this checkpoint (${this.owner.size} tensors)`, whereTensor(this.source, name));
    return f;
  }

  info(name: string): Info {
    return this.shardOf(name).info(name);
  }

  infos(): Info[] {
    return this.names().map((n) => this.info(n));
  }

  readBytes(name: string): Uint8Array {
    return this.shardOf(name).readBytes(name);
  }

  read(name: string): SafeTypedArray {
    return this.shardOf(name).read(name);
  }

  readF32(name: string): Float32Array {
    return this.shardOf(name).readF32(name);
  }

  readF64(name: string): Float64Array {
    return this.shardOf(name).readF64(name);
  }

  readI64(name: string): BigInt64Array {
    return this.shardOf(name).readI64(name);
  }

  close(): void {
    for (const s of this.shards) s.close();
  }
}

/** A checkpoint: one .safetensors file or a Hugging Face sharded checkpoint, with one API across shards. */
export class SafetensorsCheckpoint extends ShardedCheckpoint<SafetensorsFile, TensorInfo> {
  /** The "metadata" object of the index (e.g. total_size), or {} for a single file. */
  readonly indexMetadata: Record<string, unknown>;
  /** __metadata__ of the single file, or of the first shard of a sharded checkpoint. */
  readonly metadata: Record<string, string>;

  private constructor(source: string, { shards, owner }: { shards: SafetensorsFile[]; owner: Map<string, SafetensorsFile> }, indexMetadata: Record<string, unknown>) {
    super(source, shards, owner);
    this.indexMetadata = indexMetadata;
    this.metadata = shards[0]?.metadata ?? {};
  }

  /**
   * Open a `model.safetensors.index.json`, a `*.safetensors` file, or a folder holding `model.safetensors`,
   * `model.safetensors.index.json` or `adapter_model.safetensors` (checked in that order).
   */
  static open(pathOrDir: string): SafetensorsCheckpoint {
    let st: fs.Stats;
    try {
      st = fs.statSync(pathOrDir);
    } catch (e) {
      fail(`cannot open checkpoint: ${errText(e)}`, pathOrDir);
    }
    let target = pathOrDir;
    if (st.isDirectory()) {
      const candidates = ['model.safetensors', INDEX_FILE, 'adapter_model.safetensors'];
      const found = candidates.map((c) => path.join(pathOrDir, c)).find((p) => fs.existsSync(p));
      if (!found) fail(`no safetensors checkpoint in this folder (looked for ${candidates.join(', ')})`, pathOrDir);
      target = found;
    }
    if (!target.endsWith('.json')) return new SafetensorsCheckpoint(target, ShardedCheckpoint.single(SafetensorsFile.open(target)), {});
    const { metadata, weightMap } = readIndex(target);
    const shards = ShardedCheckpoint.shardsOf(target, weightMap, (shardPath, name) => {
      if (!fs.existsSync(shardPath)) fail(`shard file ${shardPath} (named in ${target}) does not exist`, whereTensor(target, name));
      return SafetensorsFile.open(shardPath);
    });
    return new SafetensorsCheckpoint(target, shards, metadata);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// writer

/** Typed array classes accepted for each dtype (Uint8Array = raw little-endian bytes, accepted for any dtype). */
const ACCEPTED: Record<SafeDType, readonly (new (...a: never[]) => SafeTypedArray)[]> = {
  F32: [Float32Array],
  F64: [Float64Array],
  F16: [Uint16Array],
  BF16: [Uint16Array],
  I64: [BigInt64Array],
  I32: [Int32Array],
  I16: [Int16Array],
  I8: [Int8Array],
  U8: [Uint8Array],
  BOOL: [Uint8Array],
};

/** Checks a tensor's name (unique, not reserved), dtype and shape; returns its byte length. */
function checkEntry(t: { name: unknown; dtype: unknown; shape: unknown }, seen: Set<string>, where: string): bigint {
  if (typeof t.name !== 'string') fail(`tensor name must be a string, got ${describe(t.name)}`, where);
  const w = whereTensor(where, t.name);
  if (t.name === '__metadata__') fail('"__metadata__" is reserved and cannot be a tensor name', where);
  if (seen.has(t.name)) fail('duplicate tensor name', w);
  seen.add(t.name);
  if (!isSafeDType(t.dtype)) fail(`unknown dtype ${preview(t.dtype)} (supported: ${SAFE_DTYPES.join(', ')})`, w);
  const shapeErr = validShapeError(t.shape);
  if (shapeErr) fail(shapeErr, w);
  return numelBig(t.shape as number[]) * BigInt(DTYPE_SIZES[t.dtype]);
}

const byName = <T extends { name: string }>(a: T, b: T) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

/**
 * The file's first two chunks (8-byte length, space-padded JSON header) for tensors laid out contiguously in
 * the given order; metadata is checked to be string -> string.
 */
function headerChunks(list: ReadonlyArray<{ name: string; dtype: SafeDType; shape: readonly number[]; byteLength: number }>, metadata: Record<string, string> | undefined, where: string): Uint8Array[] {
  const parts: string[] = [];
  if (metadata !== undefined) {
    if (!isPlainObject(metadata)) fail(`metadata must be an object of string -> string, got ${describe(metadata)}`, where);
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') fail(`metadata value of ${showName(k)} must be a string, got ${describe(v)}`, where);
    }
    if (Object.keys(metadata).length > 0) parts.push(`"__metadata__":${JSON.stringify({ ...metadata })}`);
  }
  // Build the JSON by hand so that a tensor named e.g. "__proto__" is kept as an ordinary key.
  let offset = 0;
  for (const t of list) {
    parts.push(`${JSON.stringify(t.name)}:${JSON.stringify({ dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + t.byteLength] })}`);
    offset += t.byteLength;
  }
  let json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const pad = (8 - (json.length % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  if (json.length > MAX_HEADER_BYTES) fail(`header would be ${json.length} bytes, over the ${MAX_HEADER_BYTES}-byte limit`, where);
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(json.length), true);
  return [len, new Uint8Array(json.buffer, json.byteOffset, json.length)];
}

/**
 * Serialise tensors to safetensors bytes, as chunks (8-byte length, space-padded header, then each tensor's data,
 * contiguous in sorted-name order). Validates names, dtypes, shapes, data lengths and metadata.
 */
export function encodeSafetensors(
  tensors: Record<string, TensorInput> | readonly NamedTensorInput[],
  metadata?: Record<string, string>,
  where = '<safetensors>',
): Uint8Array[] {
  const list: NamedTensorInput[] = Array.isArray(tensors)
    ? (tensors as readonly NamedTensorInput[]).slice()
    : Object.entries(tensors as Record<string, TensorInput>).map(([name, t]) => ({ ...t, name }));
  const seen = new Set<string>();
  for (const t of list) {
    const want = checkEntry(t, seen, where);
    const w = whereTensor(where, t.name);
    const data = t.data as unknown;
    if (!ArrayBuffer.isView(data) || data instanceof DataView) fail(`data must be a typed array, got ${describe(data)}`, w);
    const ok = data instanceof Uint8Array || ACCEPTED[t.dtype].some((C) => data instanceof C);
    if (!ok) fail(`data for ${t.dtype} must be a ${ACCEPTED[t.dtype].map((c) => c.name).join(' or ')} (or raw bytes as Uint8Array), got ${data.constructor.name}`, w);
    if (want !== BigInt(data.byteLength)) {
      fail(`data is ${data.byteLength} bytes but shape ${preview(t.shape)} of ${t.dtype} needs ${showCount(want)}`, w);
    }
  }
  list.sort(byName);
  const header = headerChunks(list.map((t) => ({ ...t, byteLength: t.data.byteLength })), metadata, where);
  return [...header, ...list.filter((t) => t.data.byteLength > 0).map((t) => new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength))];
}

/** Write tensors to a .safetensors file atomically (temp file + fsync + rename). */
export function writeSafetensors(
  file: string,
  tensors: Record<string, TensorInput> | readonly NamedTensorInput[],
  metadata?: Record<string, string>,
): void {
  writeFileAtomic(file, encodeSafetensors(tensors, metadata, file));
}

/** A tensor for the streaming writer: its header entry, and its little-endian bytes in order, in any chunks. */
export interface StreamedTensor {
  name: string;
  dtype: SafeDType;
  shape: readonly number[];
  chunks: () => Iterable<Uint8Array>;
}

/**
 * Write a .safetensors file atomically, tensor by tensor and chunk by chunk, so a checkpoint larger than memory
 * can be written (same layout as writeSafetensors: sorted names, contiguous data). A tensor whose chunks do not
 * add up to its shape is an error (and the target file is left untouched).
 */
export function writeSafetensorsStreaming(file: string, tensors: readonly StreamedTensor[], metadata?: Record<string, string>): void {
  const seen = new Set<string>();
  const list = tensors.map((t) => ({ ...t, byteLength: Number(checkEntry(t, seen, file)) })).sort(byName);
  const header = headerChunks(list, metadata, file);
  function* bytes(): Generator<Uint8Array> {
    yield* header;
    for (const t of list) {
      let n = 0;
      for (const c of t.chunks()) {
        n += c.byteLength;
        if (n > t.byteLength) break;
        yield c;
      }
      if (n !== t.byteLength) fail(`chunks give ${n > t.byteLength ? 'more than' : n} bytes, shape ${preview(t.shape)} of ${t.dtype} needs ${t.byteLength}`, whereTensor(file, t.name));
    }
  }
  writeFileAtomic(file, bytes());
}
