/**
 * Writing a graph as a standalone .onnx file for use outside emosllm (plain onnxruntime-node, onnxruntime-web,
 * other runtimes): unlike the compile cache (runtime.ts), which links checkpoint files into a cache folder,
 * an exported file carries its weights itself: inline in the protobuf when the model is small enough, else in
 * one `<file>.data` beside it (ONNX external data with offsets), never through a 2 GB protobuf.
 */
import fs from 'node:fs';
import path from 'node:path';
import onnxProto from 'onnx-proto';
import type { Value } from '../graph/ir.ts';
import { type ExternalFile, emitModel, encodeModel } from '../graph/onnx.ts';
import { UserError } from '../util/errors.ts';
import { writeFileAtomic } from '../util/fs.ts';
import { type QuantizeReport, quantizeGemmsInt8 } from './quantize.ts';

const { onnx } = onnxProto;

/** Inline everything below this many bytes of weights (protobuf's hard limit is 2 GiB). */
export const INLINE_LIMIT_BYTES = 1.5 * 2 ** 30;

function bytesOf(f: ExternalFile, offset: number, length: number): Uint8Array {
  if (f.kind === 'bytes') return f.data.subarray(offset, offset + length);
  const buf = Buffer.alloc(length);
  const fd = fs.openSync(f.source, 'r');
  try {
    for (let off = 0; off < length; ) {
      const n = fs.readSync(fd, buf, off, Math.min(length - off, 1 << 30), offset + off);
      if (n <= 0) throw new UserError(`truncated while exporting`, f.source);
      off += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return buf;
}

export interface OnnxFileResult {
  file: string;
  /** external data files written beside it (relative names) */
  externalData: string[];
  bytes: number;
}

/** Emits `outputs` and writes `file` (+ `file.data` when large), atomically. */
export function writeOnnxFile(
  outputs: Record<string, Value>,
  file: string,
  opts: { graphName?: string; inlineLimit?: number; quantize?: 'int8' } = {},
): OnnxFileResult & { quantized?: QuantizeReport } {
  const model = emitModel(outputs, { regionMode: 'link', graphName: opts.graphName });
  const files = new Map(model.files.map((f) => [f.location, f]));
  type Tensor = onnxProto.onnx.ITensorProto;
  const isExternal = (t: Tensor) => t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL;
  const ext = (t: Tensor) => {
    const kv = Object.fromEntries(t.externalData!.map((e) => [e.key, e.value]));
    return { location: kv.location!, offset: Number(kv.offset ?? 0), length: Number(kv.length) };
  };
  let quantized: QuantizeReport | undefined;
  if (opts.quantize === 'int8') {
    quantized = quantizeGemmsInt8(model.proto, (t) => {
      if (!isExternal(t)) return t.rawData!;
      const e = ext(t);
      return bytesOf(files.get(e.location)!, e.offset, e.length);
    });
  }
  const tensors = model.proto.graph!.initializer!.filter(isExternal);
  const total = tensors.reduce((a, t) => a + ext(t).length, 0);
  const inline = total <= (opts.inlineLimit ?? INLINE_LIMIT_BYTES);
  const dataName = `${path.basename(file)}.data`;
  const externalData: string[] = [];
  if (inline) {
    for (const t of tensors) {
      const e = ext(t);
      t.rawData = bytesOf(files.get(e.location)!, e.offset, e.length);
      t.externalData = [];
      t.dataLocation = onnx.TensorProto.DataLocation.DEFAULT;
    }
  } else {
    // one data file, each tensor at a 64-byte aligned offset (what ONNX tools write for mmap)
    const tmp = `${file}.data.tmp-${process.pid}`;
    const fd = fs.openSync(tmp, 'w');
    let pos = 0;
    try {
      for (const t of tensors) {
        const e = ext(t);
        const b = bytesOf(files.get(e.location)!, e.offset, e.length);
        pos = Math.ceil(pos / 64) * 64;
        fs.writeSync(fd, b, 0, b.byteLength, pos);
        t.externalData = [
          onnx.StringStringEntryProto.create({ key: 'location', value: dataName }),
          onnx.StringStringEntryProto.create({ key: 'offset', value: String(pos) }),
          onnx.StringStringEntryProto.create({ key: 'length', value: String(b.byteLength) }),
        ];
        pos += b.byteLength;
      }
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, path.join(path.dirname(file), dataName));
    externalData.push(dataName);
  }
  const bytes = encodeModel(model);
  writeFileAtomic(file, bytes);
  return { file, externalData, bytes: bytes.byteLength + (inline ? 0 : total), quantized };
}
