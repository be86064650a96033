/**
 * WavLM (Hugging Face WavLMModel, transformers 4.43): the wav2vec2 pipeline (wav2vec2.ts) with a gated relative
 * position bias in every attention layer. Only layer 0 holds `rel_attn_embed`; its un-gated bias [heads, T, T]
 * is reused by all layers, each gating it per head and query frame from its own attention input.
 */
import type { Graph, Value } from '../graph/ir.ts';
import * as O from '../graph/ops.ts';
import {
  type AttentionFn,
  type EncoderWeights,
  type SpeechEncoderBuildOptions,
  type SpeechEncoderOutputs,
  buildSpeechEncoderGraph,
  dimScalar,
  frozen,
  multiHeadAttention,
} from './wav2vec2.ts';

/**
 * HF `_relative_positions_bucket` on int64 relative positions (key - query), any shape, in float32 like torch:
 * nb = num_buckets/2, max_exact = nb/2; bucket = (r > 0) * nb + (|r| < max_exact ? |r| :
 * min(nb - 1, trunc(max_exact + log(|r|/max_exact) / log(max_distance/max_exact) * (nb - max_exact)))).
 */
export function relativePositionBuckets(rel: Value, numBuckets: number, maxDistance: number): Value {
  const nb = Math.floor(numBuckets / 2);
  const maxExact = Math.floor(nb / 2);
  const f = (v: number) => O.constant(rel, [v], [], 'float32');
  const side = O.mul(O.cast(O.greater(rel, 0), 'int64'), nb);
  const a = O.abs(rel);
  const isSmall = O.less(a, maxExact);
  // |r| >= max_exact >= 1 wherever the large branch is used; the clamp only keeps log(0) out of the dead lanes.
  const af = O.cast(O.maximum(a, 1), 'float32');
  let large = O.div(O.log(O.div(af, f(maxExact))), f(Math.log(maxDistance / maxExact)));
  large = O.add(f(maxExact), O.mul(large, f(nb - maxExact)));
  const largeI = O.minimum(O.cast(large, 'int64'), nb - 1); // Cast float -> int truncates, like .to(torch.long)
  return O.add(side, O.where(isSmall, a, largeI));
}

/** The un-gated position bias of layer 0 for T frames: [1, heads, T, T]. `tScalar` is T as an int64 scalar (built inside layer 0's scope). */
export function relativePositionBias(g: Graph, ew: EncoderWeights, tScalar: Value): Value {
  const { numBuckets, maxBucketDistance, numAttentionHeads: nh } = ew.cfg;
  return g.scope('attention.rel_attn_embed', () => {
    const t = O.range(O.constant(tScalar, [0], [], 'int64'), tScalar, O.constant(tScalar, [1], [], 'int64'));
    const rel = O.sub(O.unsqueeze(t, [0]), O.unsqueeze(t, [1])); // [T(query), T(key)] = key - query
    const buckets = relativePositionBuckets(rel, numBuckets, maxBucketDistance);
    const table = frozen(g, ew, 'encoder.layers.0.attention.rel_attn_embed.weight', [numBuckets, nh]);
    return O.unsqueeze(O.transpose(O.gather(table, buckets, 0), [2, 0, 1]), [0]);
  });
}

/**
 * Per-head gate [B, heads, T, 1] from the attention input x [B, T, H]:
 * p = gru_rel_pos_linear(x_h) summed in groups of 4 -> (a, b) = sigmoid(p), gate = a * (b * const_h - 1) + 2.
 * Summing the Linear's outputs in groups of 4 equals a Linear with the group-summed weight rows (folded by ORT).
 */
function relativePositionGate(g: Graph, ew: EncoderWeights, layer: number, x: Value): Value {
  const { hiddenSize: h, numAttentionHeads: nh } = ew.cfg;
  const hd = h / nh;
  const p = `encoder.layers.${layer}.attention`;
  return g.scope('attention.gru_rel_pos', () => {
    const w = O.reduceSum(O.reshape(frozen(g, ew, `${p}.gru_rel_pos_linear.weight`, [8, hd]), [2, 4, hd]), [1]); // [2, hd]
    const b = O.reduceSum(O.reshape(frozen(g, ew, `${p}.gru_rel_pos_linear.bias`, [8]), [2, 4]), [1]); // [2]
    const c = O.reshape(frozen(g, ew, `${p}.gru_rel_pos_const`, [1, nh, 1, 1]), [nh]);
    const xh = O.reshape(x, [0, 0, nh, hd]); // [B, T, nh, hd]
    const s = O.sigmoid(O.add(O.matmul(xh, w, { transB: true }), b)); // [B, T, nh, 2]
    const ga = O.squeeze(O.slice(s, [0], [1], [3]), [3]);
    const gb = O.squeeze(O.slice(s, [1], [2], [3]), [3]);
    const gate = O.add(O.mul(ga, O.sub(O.mul(gb, c), 1)), 2); // [B, T, nh]
    return O.unsqueeze(O.transpose(gate, [0, 2, 1]), [3]);
  });
}

/** WavLM attention: torch MHA (q / sqrt(head_dim)) with the gated relative position bias and key padding. */
export function wavlmAttention(g: Graph, ew: EncoderWeights): AttentionFn {
  const hd = ew.cfg.hiddenSize / ew.cfg.numAttentionHeads;
  const sq = Math.sqrt(hd);
  let posBias: Value | undefined;
  return (layer, x, keyBias) => {
    posBias ??= relativePositionBias(g, ew, dimScalar(x, 1));
    let bias = O.mul(relativePositionGate(g, ew, layer, x), posBias); // [B, nh, T, T]
    if (keyBias) bias = O.add(bias, keyBias);
    return multiHeadAttention(g, ew, layer, x, bias, (q) => O.div(q, sq));
  };
}

export function buildWavLM(
  g: Graph,
  ew: EncoderWeights,
  inputValues: Value,
  attentionMask?: Value,
  opts: SpeechEncoderBuildOptions = {},
): SpeechEncoderOutputs {
  return buildSpeechEncoderGraph(g, ew, inputValues, attentionMask, opts, wavlmAttention(g, ew));
}
