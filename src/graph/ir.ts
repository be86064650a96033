/**
 * The graph IR: values with a dtype and a (possibly symbolic) shape, produced by nodes.
 *
 * Models are plain functions that call ops (src/graph/ops.ts) on Values; every op appends a Node to the
 * Value's Graph. Nothing runs here: the graph is later differentiated (autodiff.ts), emitted as ONNX
 * (onnx.ts) and run by ONNX Runtime (runtime.ts). Node and value names carry the model's scope
 * ("model.layers.3.self_attn/MatMul") so that runtime errors can be reported in terms of the model.
 */

export type DType = 'float32' | 'float64' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'int8' | 'uint8' | 'bool';

/** A dimension: a known size, or a symbol (an ONNX dim_param) bound at run time. */
export type Dim = number | string;
export type Shape = Dim[];

export type TypedArray =
  | Float32Array
  | Float64Array
  | BigInt64Array
  | Int32Array
  | Int8Array
  | Uint8Array
  | Uint16Array;

/** Bytes of a constant that live in a file (e.g. a safetensors checkpoint), read by ORT, not by us. */
export interface FileRegion {
  file: string;
  /** absolute byte offset in the file */
  offset: number;
  byteLength: number;
  /** dtype of the stored bytes (may differ from the value's dtype: the emitter inserts a Cast) */
  storedDtype: DType;
}

export const FLOAT_DTYPES: ReadonlySet<DType> = new Set(['float32', 'float64', 'float16', 'bfloat16']);
export const isFloat = (d: DType): boolean => FLOAT_DTYPES.has(d);

export function dtypeSize(d: DType): number {
  switch (d) {
    case 'float64':
    case 'int64':
      return 8;
    case 'float32':
    case 'int32':
      return 4;
    case 'float16':
    case 'bfloat16':
      return 2;
    default:
      return 1;
  }
}

export type ValueKind = 'input' | 'const' | 'node';

export class Value {
  /** Set for constants held in memory. */
  data?: TypedArray;
  /** Set for constants that stay in a file until ONNX Runtime loads them. */
  region?: FileRegion;

  constructor(
    readonly graph: Graph,
    readonly id: number,
    readonly dtype: DType,
    readonly shape: Shape,
    readonly kind: ValueKind,
    public name: string,
    readonly node?: Node,
    readonly outIndex = 0,
  ) {}

  get rank(): number {
    return this.shape.length;
  }

  /** Known element count, or undefined when a dimension is symbolic. */
  get size(): number | undefined {
    let n = 1;
    for (const d of this.shape) {
      if (typeof d !== 'number') return undefined;
      n *= d;
    }
    return n;
  }

  toString(): string {
    return `${this.name}: ${this.dtype}[${this.shape.join(', ')}]`;
  }
}

export type AttrValue = number | string | number[] | string[];
export type Attrs = Record<string, AttrValue>;

export class Node {
  outputs: Value[] = [];
  constructor(
    readonly id: number,
    readonly op: string,
    readonly inputs: Value[],
    readonly attrs: Attrs,
    readonly name: string,
  ) {}
}

/** Names of the ONNX attributes that are floats (all other numeric attributes are ints). */
export const FLOAT_ATTRS: ReadonlySet<string> = new Set(['epsilon', 'alpha', 'beta', 'value_float']);

export class Graph {
  private nextId = 0;
  private scopes: string[] = [];
  private usedNames = new Set<string>();
  readonly inputs: Value[] = [];
  readonly nodes: Node[] = [];

  /** Runs `fn` with `name` appended to the naming scope (model.layers.0.self_attn ...). */
  scope<T>(name: string, fn: () => T): T {
    this.scopes.push(name);
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  /** Runs `fn` with the naming scope replaced by `name` (used for backward nodes). */
  scopeAs<T>(name: string, fn: () => T): T {
    const saved = this.scopes;
    this.scopes = [name];
    try {
      return fn();
    } finally {
      this.scopes = saved;
    }
  }

  get currentScope(): string {
    return this.scopes.join('.');
  }

  private uniqueName(base: string): string {
    let name = base;
    for (let k = 1; this.usedNames.has(name); k++) name = `${base}_${k}`;
    this.usedNames.add(name);
    return name;
  }

  /** A run-time input (activations, labels, trainable parameters). Symbolic dims are strings. */
  input(name: string, dtype: DType, shape: Shape): Value {
    if (this.usedNames.has(name)) throw new Error(`graph input "${name}" is defined twice`);
    this.usedNames.add(name);
    const v = new Value(this, this.nextId++, dtype, [...shape], 'input', name);
    this.inputs.push(v);
    return v;
  }

  /** A constant held in memory (small tensors, or weights we computed). */
  constant(data: TypedArray, shape: number[], dtype: DType, name?: string): Value {
    const n = shape.reduce((a, b) => a * b, 1);
    if (data.length !== n) throw new Error(`constant ${name ?? ''}: ${data.length} values for shape [${shape}]`);
    const base = name ?? (this.currentScope ? `${this.currentScope}.const` : 'const');
    const v = new Value(this, this.nextId++, dtype, [...shape], 'const', this.uniqueName(base));
    v.data = data;
    return v;
  }

  /** A constant whose bytes stay in a file (a checkpoint tensor); ORT reads them as external data. */
  fileConstant(region: FileRegion, shape: number[], dtype: DType, name: string): Value {
    const n = shape.reduce((a, b) => a * b, 1);
    if (region.byteLength !== n * dtypeSize(region.storedDtype))
      throw new Error(`${region.file}: ${name} holds ${region.byteLength} bytes, shape [${shape}] needs ${n * dtypeSize(region.storedDtype)}`);
    const v = new Value(this, this.nextId++, dtype, [...shape], 'const', this.uniqueName(name));
    v.region = region;
    return v;
  }

  /** Appends a node; `outs` are the inferred output types. Used by ops.ts only. */
  addNode(op: string, inputs: Value[], attrs: Attrs, outs: Array<{ dtype: DType; shape: Shape }>): Value[] {
    for (const x of inputs) {
      if (x.graph !== this) throw new Error(`${op}: input ${x.name} belongs to another graph`);
    }
    const scope = this.currentScope;
    const name = this.uniqueName(scope ? `${scope}/${op}` : op);
    const node = new Node(this.nextId++, op, inputs, attrs, name);
    node.outputs = outs.map(
      (o, i) => new Value(this, this.nextId++, o.dtype, o.shape, 'node', outs.length === 1 ? name : `${name}:${i}`, node, i),
    );
    this.nodes.push(node);
    return node.outputs;
  }
}

/** Nodes needed to compute `outputs`, in topological order (inputs before users). */
export function topoSort(outputs: readonly Value[]): Node[] {
  const order: Node[] = [];
  const state = new Map<Node, 1 | 2>(); // 1 = on stack, 2 = done
  // Iterative DFS: model graphs are deep (thousands of nodes in a chain) and recursion would overflow.
  for (const out of outputs) {
    if (!out.node || state.get(out.node) === 2) continue;
    const stack: Array<{ node: Node; next: number }> = [{ node: out.node, next: 0 }];
    state.set(out.node, 1);
    while (stack.length) {
      const top = stack[stack.length - 1];
      if (top.next < top.node.inputs.length) {
        const inp = top.node.inputs[top.next++];
        const dep = inp.node;
        if (dep && !state.has(dep)) {
          state.set(dep, 1);
          stack.push({ node: dep, next: 0 });
        }
      } else {
        state.set(top.node, 2);
        order.push(top.node);
        stack.pop();
      }
    }
  }
  return order;
}
