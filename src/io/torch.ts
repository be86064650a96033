/**
 * PyTorch checkpoints (`torch.save` of a state dict): the zip format (torch >= 1.6) and the legacy format,
 * single files or Hugging Face shards with `pytorch_model.bin.index.json`. Read safely: the pickle goes
 * through the restricted unpickler in pickle.ts, which knows only OrderedDict, the tensor/parameter rebuild
 * calls and the typed storages; anything else is refused by name and nothing is ever executed.
 *
 * Storages are never loaded whole. A tensor that is row-major inside its storage (nearly all of them) is
 * described by file + byte offset, so ONNX Runtime reads it in place exactly as it reads safetensors; only
 * the few non-contiguous views (a transposed q_proj, a positional-conv weight_v) are gathered into memory.
 */
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../util/errors.ts';
import { openRegularFile } from '../util/fs.ts';
import { type ByteSource, BufferSource, PyDict, type PyGlobal, PyTuple, unpickle } from './pickle.ts';
import { DTYPE_SIZES, readExact, readIndex, type SafeDType, type SafeTypedArray, ShardedCheckpoint, type TensorInfo, toF32, toF64, toI64, viewAs } from './safetensors.ts';

/** torch's typed storage classes, by the dtype their bytes hold (torch writes little-endian on every CPU we run on). */
const STORAGE_DTYPES: Readonly<Record<string, SafeDType>> = {
  FloatStorage: 'F32',
  DoubleStorage: 'F64',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
};

/** The only callables a state dict needs. */
const ALLOWED_CALLS = new Set(['collections.OrderedDict', 'torch._utils._rebuild_tensor_v2', 'torch._utils._rebuild_parameter']);

/** Where one storage's bytes are; `offset` is filled once known (the legacy format lists storages after the pickle). */
interface Storage {
  key: string;
  dtype: SafeDType;
  numel: number;
  file: string;
  offset: number;
}

/** A tensor as the pickle describes it: a strided view into a storage. */
interface TorchTensor {
  storage: Storage;
  storageOffset: number;
  shape: number[];
  stride: number[];
}

/** A stored tensor; `file`/`offset` are present when its bytes can be read in place (row-major in the file). */
export type TorchTensorInfo = Omit<TensorInfo, 'file' | 'offset'> & Partial<Pick<TensorInfo, 'file' | 'offset'>>;

const LFS_POINTER = 'version https://git-lfs.github.com/spec/';

function isRowMajor(shape: number[], stride: number[]): boolean {
  let expected = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && stride[i] !== expected) return false;
    expected *= shape[i]!;
  }
  return true;
}

const intList = (x: unknown, what: string, where: string): number[] => {
  if (!(x instanceof PyTuple) || !x.items.every((v) => Number.isSafeInteger(v) && (v as number) >= 0))
    throw new UserError(`tensor ${what} is not a tuple of non-negative integers`, where);
  return x.items as number[];
};

/** Unpickles a state dict, creating storages with `storageFor(pid)`; returns name -> tensor. */
function readStateDict(src: ByteSource, where: string, storageFor: (pid: unknown[]) => Storage): Map<string, TorchTensor> {
  const root = unpickle(
    src,
    {
      allowed: (module, name) => ALLOWED_CALLS.has(`${module}.${name}`) || (module === 'torch' && name in STORAGE_DTYPES),
      persistentLoad: (pid) => {
        if (!(pid instanceof PyTuple) || pid.items[0] !== 'storage') throw new UserError('persistent id is not a storage reference', where);
        return storageFor(pid.items);
      },
      reduce: (fn: PyGlobal, args: unknown[]) => {
        switch (fn.qualname) {
          case 'collections.OrderedDict':
            if (args.length !== 0) throw new UserError('OrderedDict called with arguments', where);
            return new PyDict();
          case 'torch._utils._rebuild_parameter':
            return args[0];
          case 'torch._utils._rebuild_tensor_v2': {
            const [storage, storageOffset, size, stride] = args;
            if (typeof storage !== 'object' || storage === null || !('key' in storage)) throw new UserError('tensor rebuilt from something that is not a storage', where);
            if (!Number.isSafeInteger(storageOffset) || (storageOffset as number) < 0) throw new UserError('tensor storage offset is not a non-negative integer', where);
            const t: TorchTensor = { storage: storage as Storage, storageOffset: storageOffset as number, shape: intList(size, 'size', where), stride: intList(stride, 'stride', where) };
            if (t.shape.length !== t.stride.length) throw new UserError('tensor size and stride differ in length', where);
            return t;
          }
          default:
            throw new UserError(`refusing to call ${fn.qualname}`, where);
        }
      },
    },
    where,
  );
  // PEFT and transformers save a flat state dict; some trainers nest it under "state_dict".
  const dict = root instanceof PyDict && root.map.get('state_dict') instanceof PyDict ? (root.map.get('state_dict') as PyDict) : root;
  if (!(dict instanceof PyDict)) throw new UserError('not a state dict (the pickle holds something other than a dict of tensors)', where);
  const out = new Map<string, TorchTensor>();
  for (const [k, v] of dict.map) {
    if (typeof k !== 'string') throw new UserError(`state dict key ${String(k)} is not a string`, where);
    if (typeof v !== 'object' || v === null || !('storage' in v)) throw new UserError(`state dict entry "${k}" is not a tensor`, where);
    out.set(k, v as TorchTensor);
  }
  return out;
}

function storageDtype(g: unknown, where: string): SafeDType {
  const dtype = typeof g === 'object' && g !== null && 'name' in g ? STORAGE_DTYPES[(g as PyGlobal).name] : undefined;
  if (!dtype) throw new UserError('storage of an unknown type', where);
  return dtype;
}

// ---------------------------------------------------------------------------------------------------------------
// zip container (torch >= 1.6). Written by hand because we need each entry's absolute data offset (ONNX
// Runtime reads tensors in place), which zip libraries hide behind decompressing streams; torch stores
// every entry uncompressed, so that offset is all there is to it.

interface ZipEntry {
  name: string;
  method: number;
  size: number;
  localHeader: number;
}

function readAt(fd: number, position: number, length: number, where: string): Buffer {
  const b = Buffer.alloc(length);
  readExact(fd, b, position, where);
  return b;
}

function zipEntries(fd: number, fileSize: number, where: string): ZipEntry[] {
  const tailLen = Math.min(fileSize, 22 + 65535);
  const tail = readAt(fd, fileSize - tailLen, tailLen, where);
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--) if (tail.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
  if (eocd < 0) throw new UserError('truncated checkpoint: the zip archive has no end-of-directory record (an interrupted download or copy?)', where);
  let count = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    // zip64: the locator sits right before the classic record and points at the zip64 record.
    const locAt = fileSize - tailLen + eocd - 20;
    const loc = readAt(fd, locAt, 20, where);
    if (loc.readUInt32LE(0) !== 0x07064b50) throw new UserError('truncated checkpoint: zip64 locator missing', where);
    const rec = readAt(fd, Number(loc.readBigUInt64LE(8)), 56, where);
    if (rec.readUInt32LE(0) !== 0x06064b50) throw new UserError('truncated checkpoint: zip64 directory record missing', where);
    count = Number(rec.readBigUInt64LE(32));
    cdSize = Number(rec.readBigUInt64LE(40));
    cdOffset = Number(rec.readBigUInt64LE(48));
  }
  if (cdOffset + cdSize > fileSize) throw new UserError('truncated checkpoint: the zip directory lies beyond the end of the file', where);
  const cd = readAt(fd, cdOffset, cdSize, where);
  const entries: ZipEntry[] = [];
  for (let p = 0, i = 0; i < count; i++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== 0x02014b50) throw new UserError('corrupt zip directory', where);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    let size = cd.readUInt32LE(p + 24);
    let compressed = cd.readUInt32LE(p + 20);
    let localHeader = cd.readUInt32LE(p + 42);
    const name = cd.toString('utf8', p + 46, p + 46 + nameLen);
    // zip64 extra field: the 64-bit values present are exactly those whose 32-bit field is saturated.
    for (let e = p + 46 + nameLen; e + 4 <= p + 46 + nameLen + extraLen; ) {
      const id = cd.readUInt16LE(e);
      const len = cd.readUInt16LE(e + 2);
      if (id === 0x0001) {
        let q = e + 4;
        if (size === 0xffffffff) (size = Number(cd.readBigUInt64LE(q)), (q += 8));
        if (compressed === 0xffffffff) (compressed = Number(cd.readBigUInt64LE(q)), (q += 8));
        if (localHeader === 0xffffffff) localHeader = Number(cd.readBigUInt64LE(q));
      }
      e += 4 + len;
    }
    entries.push({ name, method: cd.readUInt16LE(p + 10), size, localHeader });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return entries;
}

function entryDataOffset(fd: number, e: ZipEntry, fileSize: number, where: string): number {
  if (e.method !== 0) throw new UserError(`zip entry ${e.name} is compressed; torch.save writes them stored (was the file re-zipped?)`, where);
  const h = readAt(fd, e.localHeader, 30, where);
  if (h.readUInt32LE(0) !== 0x04034b50) throw new UserError(`corrupt zip entry ${e.name}`, where);
  const start = e.localHeader + 30 + h.readUInt16LE(26) + h.readUInt16LE(28);
  if (start + e.size > fileSize) throw new UserError(`truncated checkpoint: entry ${e.name} ends beyond the file`, where);
  return start;
}

function readZipCheckpoint(file: string, fd: number, fileSize: number): Map<string, TorchTensor> {
  const entries = zipEntries(fd, fileSize, file);
  const pkl = entries.find((e) => e.name.endsWith('/data.pkl') || e.name === 'data.pkl');
  if (!pkl) throw new UserError('zip archive without data.pkl: not a torch checkpoint', file);
  const prefix = pkl.name.slice(0, pkl.name.length - 'data.pkl'.length);
  const byteorder = entries.find((e) => e.name === `${prefix}byteorder`);
  if (byteorder && readAt(fd, entryDataOffset(fd, byteorder, fileSize, file), byteorder.size, file).toString() !== 'little')
    throw new UserError('big-endian torch checkpoint: not supported', file);
  const byName = new Map(entries.map((e) => [e.name, e]));
  const pickle = readAt(fd, entryDataOffset(fd, pkl, fileSize, file), pkl.size, file);
  const storages = new Map<string, Storage>();
  return readStateDict(new BufferSource(pickle, file), file, (pid) => {
    const [, type, key, , numel] = pid;
    if (typeof key !== 'string' || !Number.isSafeInteger(numel)) throw new UserError('malformed storage reference', file);
    let s = storages.get(key);
    if (!s) {
      const e = byName.get(`${prefix}data/${key}`);
      if (!e) throw new UserError(`storage ${key} is missing from the archive`, file);
      const dtype = storageDtype(type, file);
      if (e.size < (numel as number) * DTYPE_SIZES[dtype]) throw new UserError(`storage ${key} holds ${e.size} bytes, fewer than its ${numel} elements need`, file);
      s = { key, dtype, numel: numel as number, file, offset: entryDataOffset(fd, e, fileSize, file) };
      storages.set(key, s);
    }
    return s;
  });
}

// ---------------------------------------------------------------------------------------------------------------
// legacy format (torch < 1.6, or _use_new_zipfile_serialization=False): five pickles in a row (magic,
// protocol, system info, the state dict, the storage keys), then each storage as int64 count + raw bytes.

/** Pickle bytes straight from the file, through a small buffer (the pickles are small; the storages follow). */
class FileSource implements ByteSource {
  private buf: Buffer = Buffer.alloc(0);
  private bufStart = 0;
  position = 0;
  constructor(
    private readonly fd: number,
    private readonly fileSize: number,
    private readonly where: string,
  ) {}
  private fill(n: number): void {
    if (this.position + n > this.fileSize)
      throw new UserError(`pickle ends early at byte ${this.position} (needs ${n} more bytes): truncated file`, this.where);
    if (this.position >= this.bufStart && this.position + n <= this.bufStart + this.buf.length) return;
    const len = Math.min(Math.max(n, 1 << 16), this.fileSize - this.position);
    this.buf = readAt(this.fd, this.position, len, this.where);
    this.bufStart = this.position;
  }
  byte(): number {
    this.fill(1);
    return this.buf[this.position++ - this.bufStart]!;
  }
  bytes(n: number): Uint8Array {
    this.fill(n);
    const at = this.position - this.bufStart;
    this.position += n;
    return this.buf.subarray(at, at + n);
  }
}

function readLegacyCheckpoint(file: string, fd: number, fileSize: number): Map<string, TorchTensor> {
  const src = new FileSource(fd, fileSize, file);
  const plain = { allowed: () => false, reduce: () => null, persistentLoad: () => null };
  const magic = unpickle(src, plain, file);
  if (magic !== 0x1950a86a20f9469cfc6cn) throw new UserError('not a torch checkpoint (neither a zip archive nor the legacy magic number)', file);
  unpickle(src, plain, file); // protocol version
  const sysInfo = unpickle(src, plain, file);
  if (sysInfo instanceof PyDict && sysInfo.map.get('little_endian') === false) throw new UserError('big-endian torch checkpoint: not supported', file);
  const storages = new Map<string, Storage>();
  const tensors = readStateDict(src, file, (pid) => {
    const [, type, key, , numel, view] = pid;
    if (typeof key !== 'string' || !Number.isSafeInteger(numel)) throw new UserError('malformed storage reference', file);
    if (view !== null && view !== undefined) throw new UserError('storage views of the pre-1.0 format are not supported', file);
    let s = storages.get(key);
    if (!s) (s = { key, dtype: storageDtype(type, file), numel: numel as number, file, offset: -1 }), storages.set(key, s);
    return s;
  });
  const keys = unpickle(src, plain, file);
  if (!Array.isArray(keys)) throw new UserError('legacy checkpoint without its storage key list', file);
  let at = src.position;
  for (const key of keys) {
    const s = storages.get(String(key));
    if (!s) throw new UserError(`storage ${String(key)} is listed but never used`, file);
    const count = Number(readAt(fd, at, 8, file).readBigInt64LE(0));
    if (count !== s.numel) throw new UserError(`storage ${s.key} holds ${count} elements, the pickle says ${s.numel}`, file);
    s.offset = at + 8;
    at = s.offset + count * DTYPE_SIZES[s.dtype];
    if (at > fileSize) throw new UserError(`truncated checkpoint: storage ${s.key} ends beyond the file`, file);
  }
  for (const s of storages.values()) if (s.offset < 0) throw new UserError(`storage ${s.key} has no data in the file`, file);
  return tensors;
}

// ---------------------------------------------------------------------------------------------------------------
// one file, and checkpoints (single file or shards)

/** One torch checkpoint file; the descriptor stays open for reads (close() releases it). */
export class TorchFile {
  private constructor(
    readonly file: string,
    private fd: number | null,
    private readonly tensors: Map<string, TorchTensor>,
  ) {}

  static open(file: string): TorchFile {
    let fd: number;
    let st: fs.Stats;
    try {
      fd = openRegularFile(file);
      st = fs.fstatSync(fd);
    } catch (e) {
      if (e instanceof UserError) throw e;
      throw new UserError(`cannot open checkpoint: ${(e as Error).message}`, file);
    }
    try {
      const head = readAt(fd, 0, Math.min(st.size, 64), file);
      if (head.toString('latin1').startsWith(LFS_POINTER))
        throw new UserError('this is a Git LFS pointer, not the checkpoint: fetch the real file (git lfs pull, or download it from the Hub)', file);
      if (st.size < 4) throw new UserError('truncated checkpoint (under 4 bytes)', file);
      const tensors = head.readUInt32LE(0) === 0x04034b50 ? readZipCheckpoint(file, fd, st.size) : readLegacyCheckpoint(file, fd, st.size);
      return new TorchFile(file, fd, tensors);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  private tensor(name: string): TorchTensor {
    const t = this.tensors.get(name);
    if (!t) throw new UserError(`no tensor "${name}" in this checkpoint`, this.file);
    return t;
  }

  info(name: string): TorchTensorInfo {
    const t = this.tensor(name);
    const size = DTYPE_SIZES[t.storage.dtype];
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const info: TorchTensorInfo = { name, dtype: t.storage.dtype, shape: [...t.shape], byteLength: numel * size };
    if (numel > 0) {
      // The highest element the view touches must lie inside its storage (a crafted pickle could point past it).
      const last = t.storageOffset + t.shape.reduce((a, d, i) => a + (d - 1) * t.stride[i]!, 0);
      if (last >= t.storage.numel) throw new UserError(`tensor "${name}" reaches past the end of its storage`, this.file);
    }
    if (isRowMajor(t.shape, t.stride)) {
      info.file = this.file;
      info.offset = t.storage.offset + t.storageOffset * size;
    }
    return info;
  }

  /** The tensor's bytes in row-major order (gathered from its storage when it is a strided view). */
  readBytes(name: string): Uint8Array {
    const t = this.tensor(name);
    const info = this.info(name);
    const out = new Uint8Array(info.byteLength);
    if (info.byteLength === 0) return out;
    if (info.offset !== undefined) {
      readExact(this.handle(), out, info.offset, this.file);
      return out;
    }
    const size = DTYPE_SIZES[info.dtype];
    const span = t.shape.reduce((a, d, i) => a + (d - 1) * t.stride[i]!, 0) + 1;
    const src = new Uint8Array(span * size);
    readExact(this.handle(), src, t.storage.offset + t.storageOffset * size, this.file);
    const index = new Array<number>(t.shape.length).fill(0);
    for (let o = 0, n = info.byteLength / size; o < n; o++) {
      let s = 0;
      for (let d = 0; d < index.length; d++) s += index[d]! * t.stride[d]!;
      out.set(src.subarray(s * size, s * size + size), o * size);
      for (let d = index.length - 1; d >= 0; d--) {
        if (++index[d]! < t.shape[d]!) break;
        index[d] = 0;
      }
    }
    return out;
  }

  read(name: string): SafeTypedArray {
    const info = this.info(name);
    return viewAs(info.dtype, this.readBytes(name).buffer as ArrayBuffer, info.byteLength / DTYPE_SIZES[info.dtype]);
  }

  readF32(name: string): Float32Array {
    return toF32(this.info(name).dtype, this.read(name));
  }

  readF64(name: string): Float64Array {
    return toF64(this.info(name).dtype, this.read(name));
  }

  readI64(name: string): BigInt64Array {
    return toI64(this.info(name).dtype, this.read(name), `${this.file}: ${name}`);
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }

  private handle(): number {
    if (this.fd === null) this.fd = openRegularFile(this.file);
    return this.fd;
  }
}

export const TORCH_INDEX_FILE = 'pytorch_model.bin.index.json';

/** A torch checkpoint: one `.bin` or a sharded one through its index, with one API across shards. */
export class TorchCheckpoint extends ShardedCheckpoint<TorchFile, TorchTensorInfo> {
  /** Opens a `.bin` file, a `pytorch_model.bin.index.json`, or a folder holding either (or adapter_model.bin). */
  static open(pathOrDir: string): TorchCheckpoint {
    let target = pathOrDir;
    if (fs.statSync(pathOrDir).isDirectory()) {
      const candidates = ['pytorch_model.bin', TORCH_INDEX_FILE, 'adapter_model.bin'];
      const found = candidates.map((c) => path.join(pathOrDir, c)).find((p) => fs.existsSync(p));
      if (!found) throw new UserError(`no torch checkpoint in this folder (looked for ${candidates.join(', ')})`, pathOrDir);
      target = found;
    }
    const { shards, owner } = target.endsWith('.json')
      ? ShardedCheckpoint.shardsOf(target, readIndex(target).weightMap, (shardPath) => TorchFile.open(shardPath))
      : ShardedCheckpoint.single(TorchFile.open(target));
    return new TorchCheckpoint(target, shards, owner);
  }
}
