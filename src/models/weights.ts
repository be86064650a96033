/**
 * Checkpoint tensors as graph constants. Frozen weights stay in their checkpoint file (safetensors, or a torch
 * `.bin` whose tensor is row-major in its storage): the graph refers to the bytes by offset and ONNX Runtime
 * reads them (F16/BF16 are cast to float32 once, at session creation). A strided torch view is gathered into
 * memory instead.
 */
import type { DType, Graph, Value } from '../graph/ir.ts';
import { type CheckpointTensorInfo, openCheckpoint, type TensorCheckpoint } from '../io/checkpoint.ts';
import type { SafeDType } from '../io/safetensors.ts';
import { UserError } from '../util/errors.ts';

const STORED: Partial<Record<SafeDType, DType>> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16', F64: 'float64' };

export class Weights {
  private used = new Set<string>();
  constructor(
    readonly ckpt: TensorCheckpoint,
    readonly where: string,
  ) {}

  static open(pathOrDir: string): Weights {
    return new Weights(openCheckpoint(pathOrDir), pathOrDir);
  }

  has(name: string): boolean {
    return this.ckpt.has(name);
  }

  /**
   * The stored tensor `name`, checked against what the config implies: present, of `shape` (when given) and of a
   * float dtype; a one-line UserError naming the tensor otherwise. The one check every loader runs.
   */
  check(name: string, shape?: number[]): CheckpointTensorInfo & { stored: DType } {
    if (!this.ckpt.has(name)) throw new UserError(`missing tensor "${name}"`, this.where);
    const info = this.ckpt.info(name);
    if (shape && (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])))
      throw new UserError(`tensor "${name}" has shape [${info.shape.join(', ')}], the config implies [${shape.join(', ')}]`, info.file ?? this.ckpt.source);
    const stored = STORED[info.dtype];
    if (!stored) throw new UserError(`tensor "${name}" has dtype ${info.dtype}; expected F32, F16, BF16 or F64`, info.file ?? this.ckpt.source);
    return { ...info, stored };
  }

  /** A frozen float32 weight; `shape` is what the config implies (checked, so a wrong checkpoint fails here). */
  frozen(g: Graph, name: string, shape: number[]): Value {
    const info = this.check(name, shape);
    this.used.add(name);
    if (info.file === undefined || info.offset === undefined) return g.constant(this.ckpt.readF32(name), shape, 'float32', name);
    return g.fileConstant({ file: info.file, offset: info.offset, byteLength: info.byteLength, storedDtype: info.stored }, shape, 'float32', name);
  }

  /** Reads a tensor into memory as float32 (small tensors, or weights we transform before use). */
  read(name: string, shape?: number[]): Float32Array {
    this.check(name, shape);
    this.used.add(name);
    return this.ckpt.readF32(name);
  }

  /** Names in the checkpoint that no graph used (reported by loaders that want to be strict). */
  unused(): string[] {
    return this.ckpt.names().filter((n) => !this.used.has(n));
  }
}
