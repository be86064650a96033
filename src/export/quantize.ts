/**
 * int8 weight quantisation of an exported model, as an ONNX rewrite (standard opset ops only, so onnxruntime-node
 * and onnxruntime-web both run it):
 *
 *   Gemm(x, W, b, transB)  ->  DynamicQuantizeLinear(x) -> (xq uint8, sx, zx)
 *                              MatMulInteger(xq, Wq, zx) -> int32 -> Cast float -> * (sx * sW) [+ b]
 *
 * Wq is W (as [in, out]) in int8 with one symmetric scale sW per output channel (max |w| / 127); activations are
 * quantised per tensor at run time (asymmetric uint8). Every 2-D Gemm whose weight is an initializer of at least
 * `minElements` values is rewritten (the LLM's projections and its lm_head); the mapper and everything else stays
 * float. A float initializer no longer used by any node is dropped (a tied embedding stays: the Gather reads it).
 */
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;
type ModelProto = onnxProto.onnx.IModelProto;
type TensorProto = onnxProto.onnx.ITensorProto;
type NodeProto = onnxProto.onnx.INodeProto;

export interface QuantizeReport {
  gemms: number;
  /** float bytes of the quantised weights, and their int8 size */
  floatBytes: number;
  int8Bytes: number;
}

const attrInt = (n: NodeProto, name: string, dflt: number) => {
  const a = n.attribute?.find((x) => x.name === name);
  return a ? Number(a.i) : dflt;
};
const attrFloat = (n: NodeProto, name: string, dflt: number) => {
  const a = n.attribute?.find((x) => x.name === name);
  return a ? a.f! : dflt;
};

/** Rewrites `model` in place. `bytes(t)` gives an initializer's raw little-endian data (inline or external). */
export function quantizeGemmsInt8(model: ModelProto, bytes: (t: TensorProto) => Uint8Array, minElements = 4096): QuantizeReport {
  const graph = model.graph!;
  const inits = new Map(graph.initializer!.map((t) => [t.name!, t]));
  const report: QuantizeReport = { gemms: 0, floatBytes: 0, int8Bytes: 0 };
  const nodes: NodeProto[] = [];
  const newInits: TensorProto[] = [];
  const done = new Map<string, { q: string; scale: string; n: number }>(); // weight name (+ layout) -> quantised copy
  for (const node of graph.node!) {
    const w = node.opType === 'Gemm' ? inits.get(node.input![1]) : undefined;
    const ok =
      w &&
      w.dataType === onnx.TensorProto.DataType.FLOAT &&
      w.dims!.length === 2 &&
      Number(w.dims![0]) * Number(w.dims![1]) >= minElements &&
      attrInt(node, 'transA', 0) === 0 &&
      attrFloat(node, 'alpha', 1) === 1 &&
      attrFloat(node, 'beta', 1) === 1;
    if (!ok) {
      nodes.push(node);
      continue;
    }
    const transB = attrInt(node, 'transB', 0) === 1;
    const key = `${w!.name}:${transB}`;
    let q = done.get(key);
    if (!q) {
      const [d0, d1] = w!.dims!.map(Number);
      const [K, N] = transB ? [d1, d0] : [d0, d1];
      const raw = bytes(w!);
      const f = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
      const at = (k: number, n: number) => (transB ? f[n * K + k] : f[k * N + n]);
      const scale = new Float32Array(N);
      for (let n = 0; n < N; n++) {
        let m = 0;
        for (let k = 0; k < K; k++) m = Math.max(m, Math.abs(at(k, n)));
        scale[n] = m > 0 ? m / 127 : 1;
      }
      const wq = new Int8Array(K * N);
      for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) wq[k * N + n] = Math.max(-127, Math.min(127, Math.round(at(k, n) / scale[n])));
      q = { q: `${w!.name}__int8${transB ? 'T' : ''}`, scale: `${w!.name}__scale${transB ? 'T' : ''}`, n: N };
      newInits.push(
        onnx.TensorProto.create({ name: q.q, dataType: onnx.TensorProto.DataType.INT8, dims: [K, N], rawData: new Uint8Array(wq.buffer) }),
        onnx.TensorProto.create({ name: q.scale, dataType: onnx.TensorProto.DataType.FLOAT, dims: [N], rawData: new Uint8Array(scale.buffer) }),
      );
      done.set(key, q);
      report.floatBytes += raw.byteLength;
      report.int8Bytes += wq.byteLength;
    }
    report.gemms++;
    const p = `${node.name}/int8`;
    const [x, , bias] = node.input!;
    const y = node.output![0];
    let k = 0;
    const mk = (opType: string, input: string[], output: string[], attribute: onnxProto.onnx.IAttributeProto[] = []) =>
      onnx.NodeProto.create({ name: `${p}/${opType}_${k++}`, opType, input, output, attribute });
    nodes.push(
      mk('DynamicQuantizeLinear', [x], [`${p}/xq`, `${p}/xs`, `${p}/xz`]),
      mk('MatMulInteger', [`${p}/xq`, q.q, `${p}/xz`], [`${p}/acc`]),
      mk('Cast', [`${p}/acc`], [`${p}/accf`], [onnx.AttributeProto.create({ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: onnx.TensorProto.DataType.FLOAT })]),
      mk('Mul', [`${p}/xs`, q.scale], [`${p}/s`]),
      mk('Mul', [`${p}/accf`, `${p}/s`], bias ? [`${p}/y`] : [y]),
    );
    if (bias) nodes.push(mk('Add', [`${p}/y`, bias], [y]));
  }
  graph.node = nodes;
  const used = new Set(nodes.flatMap((n) => n.input!));
  for (const o of graph.output!) used.add(o.name!);
  graph.initializer = [...graph.initializer!.filter((t) => used.has(t.name!)), ...newInits];
  return report;
}
