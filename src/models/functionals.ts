/**
 * Utterance functionals as a graph: per channel, over a clip's valid frames, the statistics a classical
 * paralinguistic model is built on (openSMILE-style; the same eight the classical peer of src/eval/classical.ts
 * uses). The mapper turns them into a token beside the frames (qpmapper.ts `statChannels`): attention over a
 * few hundred clips does not learn to pool these reliably on its own, and they carry most of what separates
 * emotions across unseen speakers (issue 15: an MLP on them matches the RBF SVM on emodb-dev).
 *
 * Everything here is a function of the frozen encoder's states, so it needs no gradient (TopK has none).
 */
import type { Value } from '../graph/ir.ts';
import {
  INT_MAX,
  abs,
  add,
  cast,
  concat,
  div,
  expand,
  floor,
  gatherElements,
  greater,
  maximum,
  minimum,
  mul,
  neg,
  reduceMax,
  reduceSum,
  shapeOf,
  slice,
  sortAscending,
  sqrt,
  sub,
  unsqueeze,
  where,
} from '../graph/ops.ts';

/** The functionals, in the order of their blocks in the output (each block has one value per channel). */
export const FUNCTIONALS = ['mean', 'std', 'min', 'max', 'p10', 'p50', 'p90', 'mean_abs_delta'] as const;

/** Stands in for padded frames when sorting (they sort last) and taking the minimum; far above any state. */
const BIG = 1e9;

/**
 * x [B, T, C] (padded frames may hold anything) and valid [B, T] (bool) -> [B, 8 * C]: the FUNCTIONALS blocks
 * side by side. Std is the population std; percentiles interpolate linearly between order statistics (numpy's
 * default); mean_abs_delta is the mean |x[t] - x[t-1]| over consecutive valid frames. A clip without valid frames
 * gives zeros.
 */
export function clipFunctionalsGraph(x: Value, valid: Value): Value {
  const m = unsqueeze(cast(valid, 'float32'), [2]); // [B, T, 1]
  const xs = where(unsqueeze(valid, [2]), x, 0);
  const n = reduceSum(m, [1]); // [B, 1]
  const nSafe = maximum(n, 1);
  const has = cast(greater(n, 0), 'float32'); // [B, 1]
  const mean = div(reduceSum(xs, [1]), nSafe); // [B, C]
  const centred = mul(sub(xs, unsqueeze(mean, [1])), m);
  const std = mul(sqrt(add(div(reduceSum(mul(centred, centred), [1]), nSafe), 1e-8)), has);
  const big = where(unsqueeze(valid, [2]), x, BIG); // padded frames sort last
  const min = mul(neg(reduceMax(neg(big), [1])), has);
  const max = mul(reduceMax(where(unsqueeze(valid, [2]), x, -BIG), [1]), has);
  const sorted = sortAscending(big, 1); // [B, T, C]: the valid values first, in order
  const index = (v: Value) => expand(unsqueeze(cast(v, 'int64'), [2]), shapeOf(slice(sorted, [0], [1], [1])), [x.shape[0], 1, x.shape[2]]);
  const percentile = (p: number) => {
    const pos = mul(sub(nSafe, 1), p); // [B, 1]
    const i0 = floor(pos);
    const i1 = minimum(add(i0, 1), sub(nSafe, 1));
    const v0 = gatherElements(sorted, index(i0), 1);
    const v1 = gatherElements(sorted, index(i1), 1);
    const frac = unsqueeze(sub(pos, i0), [2]);
    return mul(reduceSum(add(v0, mul(frac, sub(v1, v0))), [1]), has); // [B, C]
  };
  const next = slice(xs, [1], [INT_MAX], [1]);
  const prev = slice(xs, [0], [-1], [1]);
  const pairs = mul(slice(m, [1], [INT_MAX], [1]), slice(m, [0], [-1], [1])); // both frames valid
  const mad = div(reduceSum(mul(abs(sub(next, prev)), pairs), [1]), maximum(reduceSum(pairs, [1]), 1));
  return concat([mean, std, min, max, percentile(0.1), percentile(0.5), percentile(0.9), mad], 1);
}
