/**
 * Graph -> ONNX ModelProto (opset 17), with large constants as external data.
 *
 * Frozen weights become initializers (ONNX Runtime prepacks them; measured ~20% faster than feeding them as
 * inputs). Anything above a few KB is stored as external data, so multi-GB models never pass through a
 * 2 GB protobuf: tensors we hold in memory go to one file each (named by content hash), and tensors that
 * live in a checkpoint file are referenced in place (the file is hard-linked into the model folder, because
 * ONNX Runtime refuses external paths outside it), so nothing is copied or converted by us.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import onnxProto from 'onnx-proto';
import { type AttrValue, type DType, FLOAT_ATTRS, type Node, type Value, dtypeSize, topoSort } from './ir.ts';
import { OPS, onnxDtypeCode } from './ops.ts';

const { onnx } = onnxProto;
export const OPSET = 17;
const INLINE_LIMIT = 4096; // bytes: larger constants go to external data

/** Attributes that exist only in our IR (type hints), never written to ONNX. */
const INTERNAL_ATTRS = new Set(['to_dtype', 'shape_hint', 'out_shapes', 'value_dtype', 'k_hint']);

/** An external data file the model folder must contain. */
export type ExternalFile =
  | { location: string; kind: 'bytes'; data: Uint8Array }
  | { location: string; kind: 'link'; source: string };

export interface EmittedModel {
  proto: InstanceType<typeof onnx.ModelProto>;
  files: ExternalFile[];
  inputs: Value[];
  outputNames: string[];
}

const bytesOf = (v: Value): Uint8Array => {
  const d = v.data!;
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
};

const sha = (data: Uint8Array | string) => crypto.createHash('sha256').update(data).digest('hex').slice(0, 32);

/** File identity for a checkpoint: a changed file (new inode, size or mtime) never reuses a stale link. */
function fileIdentity(file: string): string {
  const st = fs.statSync(file);
  return sha(`${path.resolve(file)}:${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`);
}

/**
 * Emits one graph node as other ONNX nodes (its inputs and outputs keep their names; constants go into
 * `initializers`), or returns undefined to emit it as itself.
 */
export type NodeLowering = (node: Node, inputs: string[], outputs: string[], initializers: InstanceType<typeof onnx.TensorProto>[]) => InstanceType<typeof onnx.NodeProto>[] | undefined;

export interface EmitOptions {
  /** How checkpoint regions reach the model folder: hard link (default) or a copy of just their bytes. */
  regionMode?: 'link' | 'copy';
  graphName?: string;
  /** a lowering tried on every node (the gradient checks lower float64 Erf, which ONNX Runtime lacks) */
  lower?: NodeLowering;
}

export function emitModel(outputs: Record<string, Value>, opts: EmitOptions = {}): EmittedModel {
  const outVals = Object.values(outputs);
  const nodes = topoSort(outVals);
  const names = new Map<Value, string>();
  const onnxNodes: InstanceType<typeof onnx.NodeProto>[] = [];
  const initializers: InstanceType<typeof onnx.TensorProto>[] = [];
  const files = new Map<string, ExternalFile>();
  const inputs = new Set<Value>();
  const fileIds = new Map<string, string>();
  const domains = new Set<string>();

  const valueName = (v: Value): string => {
    const known = names.get(v);
    if (known) return known;
    if (v.kind === 'input') {
      inputs.add(v);
      names.set(v, v.name);
      return v.name;
    }
    if (v.kind === 'const') {
      emitConstant(v);
      return names.get(v)!;
    }
    const n = v.node!.outputs.length === 1 ? v.node!.name : `${v.node!.name}:${v.outIndex}`;
    names.set(v, n);
    return n;
  };

  const emitConstant = (v: Value) => {
    const storedDtype: DType = v.region ? v.region.storedDtype : v.dtype;
    const tensor = onnx.TensorProto.create({
      name: v.region && storedDtype !== v.dtype ? `${v.name}__stored` : v.name,
      dataType: onnxDtypeCode(storedDtype),
      dims: v.shape as number[],
    });
    if (v.region) {
      const r = v.region;
      if (opts.regionMode === 'copy') {
        const buf = Buffer.alloc(r.byteLength);
        const fd = fs.openSync(r.file, 'r');
        try {
          for (let off = 0; off < r.byteLength; ) {
            const n = fs.readSync(fd, buf, off, Math.min(r.byteLength - off, 1 << 30), r.offset + off);
            if (n <= 0) throw new Error(`${r.file}: truncated while reading ${v.name}`);
            off += n;
          }
        } finally {
          fs.closeSync(fd);
        }
        const location = `c-${sha(buf)}.bin`;
        files.set(location, { location, kind: 'bytes', data: buf });
        setExternal(tensor, location, 0, r.byteLength);
      } else {
        let id = fileIds.get(r.file);
        if (!id) fileIds.set(r.file, (id = fileIdentity(r.file)));
        const location = `f-${id}${path.extname(r.file)}`;
        // the real file: a link to a symlink (Hugging Face's hub cache is all symlinks into blobs/) would point
        // ONNX Runtime outside the model folder, which it refuses
        files.set(location, { location, kind: 'link', source: fs.realpathSync(r.file) });
        setExternal(tensor, location, r.offset, r.byteLength);
      }
    } else {
      const bytes = bytesOf(v);
      if (bytes.byteLength > INLINE_LIMIT) {
        const location = `c-${sha(bytes)}.bin`;
        if (!files.has(location)) files.set(location, { location, kind: 'bytes', data: bytes });
        setExternal(tensor, location, 0, bytes.byteLength);
      } else tensor.rawData = bytes;
    }
    initializers.push(tensor);
    if (v.region && storedDtype !== v.dtype) {
      // Half-precision checkpoints stay half in the file; ORT folds this Cast once at session creation.
      onnxNodes.push(
        onnx.NodeProto.create({
          name: `${v.name}/Cast`,
          opType: 'Cast',
          input: [tensor.name],
          output: [v.name],
          attribute: [attr('to', onnxDtypeCode(v.dtype))],
        }),
      );
    }
    names.set(v, v.name);
  };

  // Outputs computed by a node take the output's name directly; the rest (inputs, constants, a value
  // exported twice) go through an Identity.
  const outputNames = Object.keys(outputs);
  const direct = new Set<string>();
  for (const [name, v] of Object.entries(outputs)) {
    if (v.kind === 'node' && !names.has(v)) {
      names.set(v, name);
      direct.add(name);
    }
  }

  for (const node of nodes) {
    const ins = node.inputs.map(valueName);
    const outs = node.outputs.map(valueName);
    const lowered = opts.lower?.(node, ins, outs, initializers);
    if (lowered) {
      onnxNodes.push(...lowered);
      continue;
    }
    const domain = OPS[node.op]?.domain;
    if (domain) domains.add(domain);
    onnxNodes.push(onnx.NodeProto.create({ name: node.name, opType: node.op, domain, input: ins, output: outs, attribute: attributes(node) }));
  }

  const outInfos: InstanceType<typeof onnx.ValueInfoProto>[] = [];
  for (const [name, v] of Object.entries(outputs)) {
    if (!direct.has(name)) {
      onnxNodes.push(onnx.NodeProto.create({ name: `output/${name}`, opType: 'Identity', input: [valueName(v)], output: [name] }));
    }
    outInfos.push(valueInfo(name, v));
  }

  const inputList = [...inputs].sort((a, b) => a.id - b.id);
  const graph = onnx.GraphProto.create({
    name: opts.graphName ?? 'emosllm',
    node: onnxNodes,
    initializer: initializers,
    input: inputList.map((v) => valueInfo(v.name, v)),
    output: outInfos,
  });
  const proto = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'emosllm',
    opsetImport: [{ domain: '', version: OPSET }, ...[...domains].map((domain) => ({ domain, version: 1 }))],
    graph,
  });
  return { proto, files: [...files.values()], inputs: inputList, outputNames };
}

function setExternal(t: InstanceType<typeof onnx.TensorProto>, location: string, offset: number, length: number) {
  t.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
  t.externalData = [
    onnx.StringStringEntryProto.create({ key: 'location', value: location }),
    onnx.StringStringEntryProto.create({ key: 'offset', value: String(offset) }),
    onnx.StringStringEntryProto.create({ key: 'length', value: String(length) }),
  ];
}

function valueInfo(name: string, v: Value) {
  return onnx.ValueInfoProto.create({
    name,
    type: {
      tensorType: {
        elemType: onnxDtypeCode(v.dtype),
        shape: { dim: v.shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  });
}

function attr(name: string, value: AttrValue | InstanceType<typeof onnx.TensorProto>) {
  const A = onnx.AttributeProto.AttributeType;
  if (value instanceof onnx.TensorProto) return onnx.AttributeProto.create({ name, type: A.TENSOR, t: value });
  if (typeof value === 'string') return onnx.AttributeProto.create({ name, type: A.STRING, s: new TextEncoder().encode(value) });
  if (typeof value === 'number')
    return FLOAT_ATTRS.has(name)
      ? onnx.AttributeProto.create({ name, type: A.FLOAT, f: value })
      : onnx.AttributeProto.create({ name, type: A.INT, i: value });
  if (Array.isArray(value) && value.every((x) => typeof x === 'number'))
    return onnx.AttributeProto.create({ name, type: A.INTS, ints: value as number[] });
  return onnx.AttributeProto.create({ name, type: A.STRINGS, strings: (value as string[]).map((s) => new TextEncoder().encode(s)) });
}

function attributes(node: Node) {
  const out = [];
  for (const [k, v] of Object.entries(node.attrs)) {
    if (INTERNAL_ATTRS.has(k)) continue;
    if (node.op === 'ConstantOfShape' && k === 'value') {
      const dt = node.attrs.value_dtype as DType;
      const t = onnx.TensorProto.create({ dataType: onnxDtypeCode(dt), dims: [1], rawData: scalarBytes(dt, v as number) });
      out.push(attr('value', t));
      continue;
    }
    out.push(attr(k, v));
  }
  if (node.op === 'Cast') out.push(attr('to', onnxDtypeCode(node.attrs.to_dtype as DType)));
  return out;
}

export function scalarBytes(dt: DType, v: number): Uint8Array {
  const buf = new ArrayBuffer(dtypeSize(dt));
  const view = new DataView(buf);
  switch (dt) {
    case 'float32':
      view.setFloat32(0, v, true);
      break;
    case 'float64':
      view.setFloat64(0, v, true);
      break;
    case 'int64':
      view.setBigInt64(0, BigInt(v), true);
      break;
    case 'int32':
      view.setInt32(0, v, true);
      break;
    default:
      view.setUint8(0, v);
  }
  return new Uint8Array(buf);
}

export const encodeModel = (m: EmittedModel): Uint8Array => onnx.ModelProto.encode(m.proto).finish();
