/** Tiny safetensors reader for test fixtures (F32 / I32 / I64 only): the format is a u64 header length + JSON. */
import fs from 'node:fs';

export function readSafetensors(file: string): Map<string, { dtype: string; shape: number[]; data: Float32Array | Int32Array | BigInt64Array }> {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out = new Map<string, { dtype: string; shape: number[]; data: Float32Array | Int32Array | BigInt64Array }>();
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [b, e] = t.data_offsets;
    // Copy: tensor data need not be aligned for a typed-array view.
    const bytes = new Uint8Array(buf.subarray(8 + n + b, 8 + n + e));
    const data =
      t.dtype === 'F32' ? new Float32Array(bytes.buffer) : t.dtype === 'I32' ? new Int32Array(bytes.buffer) : t.dtype === 'I64' ? new BigInt64Array(bytes.buffer) : undefined;
    if (!data) continue;
    out.set(name, { dtype: t.dtype, shape: t.shape, data });
  }
  return out;
}
