/**
 * Composite layers built from the primitives in ops.ts. Their gradients follow from the primitives' rules;
 * ONNX Runtime's graph optimiser re-fuses the common patterns (Gelu, SimplifiedLayerNormalization,
 * FusedMatMul) at session creation.
 */
import type { Value } from './ir.ts';
import {
  add,
  cast,
  div,
  equal,
  erf,
  gatherElements,
  logSoftmax,
  matmul,
  mul,
  neg,
  not,
  reduceMean,
  reduceSum,
  sigmoid,
  sqrt,
  squeeze,
  unsqueeze,
  where,
} from './ops.ts';

/** Exact GELU: 0.5 x (1 + erf(x / sqrt 2)). */
export const gelu = (x: Value): Value => mul(mul(x, 0.5), add(erf(mul(x, Math.SQRT1_2)), 1));

/** SiLU / swish: x * sigmoid(x). */
export const silu = (x: Value): Value => mul(x, sigmoid(x));

/** y = x W^T + b with a PyTorch-layout weight [out, in]. */
export function linear(x: Value, weight: Value, bias?: Value): Value {
  const y = matmul(x, weight, { transB: true });
  return bias ? add(y, bias) : y;
}

/** RMSNorm (Llama): w * x / sqrt(mean(x^2) + eps), over the last axis. */
export function rmsNorm(x: Value, weight: Value, eps: number): Value {
  const ms = reduceMean(mul(x, x), [-1], true);
  return mul(weight, div(x, sqrt(add(ms, eps))));
}

/**
 * Masked token cross-entropy with PyTorch's ignore_index semantics.
 * logits [..., V], labels [...] int64 with `ignoreIndex` where no loss applies.
 * Returns the summed loss, the count of scored targets, and the per-token loss (0 where ignored).
 * Dividing by the count is left to the caller (HF divides by the count over the whole batch).
 */
export function maskedCrossEntropy(logits: Value, labels: Value, ignoreIndex = -100): { sum: Value; count: Value; perToken: Value } {
  const ignored = equal(labels, ignoreIndex);
  const safeLabels = where(ignored, 0, labels); // ignored positions gather class 0, then get masked out
  const lp = logSoftmax(logits, -1);
  const picked = squeeze(gatherElements(lp, unsqueeze(safeLabels, [labels.rank]), labels.rank), [labels.rank]);
  const mask = cast(not(ignored), logits.dtype);
  const perToken = mul(neg(picked), mask);
  const all = Array.from({ length: labels.rank }, (_, i) => i);
  return { sum: reduceSum(perToken, all), count: reduceSum(mask, all), perToken };
}
