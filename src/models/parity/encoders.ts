/**
 * Parity of our wav2vec2 / HuBERT / WavLM encoders with the HF reference outputs in an hf-parity folder
 * (`expected.safetensors`; see ../shared/fixtures/hf-parity/README.md). Frame tensors are compared on valid
 * frames only (`frame_mask`), integer tensors exactly. Every stored tensor that is neither an input nor
 * compared gets a "not covered" row.
 */
import path from 'node:path';
import { normalizeWaveformGraph } from '../../audio/normalize.ts';
import { Graph, type Value } from '../../graph/ir.ts';
import { type CompiledGraph, type Tensor, compile } from '../../graph/runtime.ts';
import { SafetensorsFile } from '../../io/safetensors.ts';
import { loadSpeechEncoder } from '../encoder.ts';
import { relativePositionBuckets } from '../wavlm.ts';
import { DEFAULT_TOL, type ParityRow, compareArrays, notCovered } from './compare.ts';

/** Stored tensors the checks feed in rather than compare. */
const isInput = (n: string) => ['input_values', 'attention_mask', 'input_lengths', 'wavlm.relative_positions'].includes(n) || /^raw_audio\.\d+$/.test(n);

const toNumbers = (a: ArrayLike<number | bigint>): Float64Array => Float64Array.from(a as ArrayLike<number>, (x) => Number(x));

async function withSession<T>(outputs: Record<string, Value>, name: string, fn: (s: CompiledGraph) => Promise<T>): Promise<T> {
  const s = await compile(outputs, { name });
  try {
    return await fn(s);
  } finally {
    await s.release();
  }
}

/** Runs our encoder on the folder's stored inputs and compares every stored output. */
export async function checkEncoderFolder(dir: string, name: string): Promise<ParityRow[]> {
  const enc = loadSpeechEncoder(dir);
  const exp = SafetensorsFile.open(path.join(dir, 'expected.safetensors'));
  try {
    const rows: ParityRow[] = [];
    const compared = new Set<string>();
    /** a row comparing the stored tensor `ref` */
    const push = (ref: string, row: ParityRow) => {
      compared.add(ref);
      rows.push(row);
    };
    const has = (n: string) => exp.has(n);
    const f32 = (n: string) => exp.readF32(n);
    const shapeOf = (n: string) => exp.info(n).shape;

    const [B, S] = shapeOf('input_values');
    const inputValues = f32('input_values');
    const maskRaw = exp.read('attention_mask') as ArrayLike<number | bigint>;
    const mask = BigInt64Array.from(Array.from(maskRaw, (v) => BigInt(v)));
    const lengths = has('input_lengths')
      ? Array.from(exp.readI64('input_lengths'), Number)
      : Array.from({ length: B }, (_, b) => Array.from(mask.subarray(b * S, (b + 1) * S)).filter((v) => v !== 0n).length);

    // input_values re-derived from the raw audio with our normalisation graph, padded with padding_value
    const raws = Array.from({ length: B }, (_, b) => `raw_audio.${b}`).filter(has);
    const ng = new Graph();
    const normalized = { input_values: normalizeWaveformGraph(ng.input('audio', 'float32', [1, 'samples'])) };
    const normalize = async (raw: Float32Array, sess?: CompiledGraph) =>
      sess ? ((await sess.run({ audio: { dtype: 'float32', shape: [1, raw.length], data: raw } })).input_values.data as Float32Array) : raw;
    const compareInputs = async (sess?: CompiledGraph) => {
      for (const rawName of raws) {
        const b = Number(rawName.slice('raw_audio.'.length));
        const ours = new Float32Array(S).fill(enc.preprocessor.paddingValue);
        ours.set(await normalize(f32(rawName).subarray(0, S), sess));
        push('input_values', compareArrays(name, `input_values[${b}] (from ${rawName})`, ours, inputValues.subarray(b * S, (b + 1) * S), { atol: 1e-5, rtol: 0 }));
      }
    };
    if (raws.length > 0 && enc.preprocessor.doNormalize) await withSession(normalized, `${name}/normalize`, compareInputs);
    else await compareInputs();

    // main run: batch with attention mask; symbolic batch and samples (the single-item run reuses the session)
    const g = new Graph();
    const xIn = g.input('input_values', 'float32', ['batch', 'samples']);
    const mIn = g.input('attention_mask', 'int64', ['batch', 'samples']);
    const out = enc.build(g, xIn, mIn);
    const outputs: Record<string, Value> = {
      conv_features: out.convFeatures,
      last_hidden_state: out.lastHiddenState,
      frame_mask: out.frameMask,
    };
    if (out.extractFeatures) outputs.extract_features = out.extractFeatures;
    out.hiddenStates.forEach((h, i) => (outputs[`hidden_states.${i}`] = h));

    const feeds = (x: Float32Array, m: BigInt64Array, b: number, s: number): Record<string, Tensor> => ({
      input_values: { dtype: 'float32', shape: [b, s], data: x },
      attention_mask: { dtype: 'int64', shape: [b, s], data: m },
    });
    const [res, single] = await withSession(outputs, `${name}/encoder`, async (sess) => {
      const r = await sess.run(feeds(inputValues, mask, B, S));
      let s1: Record<string, Tensor> | undefined;
      if (has('single.1.last_hidden_state') && B > 1) {
        const len = lengths[1];
        const x1 = inputValues.slice(S, S + len);
        s1 = await sess.run(feeds(x1, new BigInt64Array(len).fill(1n), 1, len));
      }
      return [r, s1] as const;
    });

    // frame mask: exact, and the validity predicate for every frame tensor
    const refMask = exp.readI64('frame_mask');
    const T = shapeOf('frame_mask')[1];
    const ourMask = res.frame_mask;
    push('frame_mask', compareArrays(name, 'frame_mask', toNumbers(ourMask.data as Uint8Array), toNumbers(refMask), { atol: 0, rtol: 0 }));
    const validBTX = (X: number) => (i: number) => refMask[Math.floor(i / (T * X)) * T + (Math.floor(i / X) % T)] !== 0n;
    const validBCT = (C: number) => (i: number) => refMask[Math.floor(i / (C * T)) * T + (i % T)] !== 0n;

    const frameTensor = (refName: string, ours: Tensor | undefined, layout: 'BTX' | 'BCT') => {
      if (!has(refName)) return;
      const refShape = shapeOf(refName);
      if (!ours) {
        push(refName, { folder: name, tensor: refName, maxAbs: NaN, maxRel: NaN, status: 'FAIL', note: 'not produced' });
        return;
      }
      if (ours.shape.join(',') !== refShape.join(',')) {
        push(refName, { folder: name, tensor: refName, maxAbs: Infinity, maxRel: Infinity, status: 'FAIL', note: `shape [${ours.shape}] vs reference [${refShape}]` });
        return;
      }
      const valid = layout === 'BCT' ? validBCT(refShape[1]) : validBTX(refShape[2]);
      push(refName, compareArrays(name, refName, ours.data as Float32Array, f32(refName), DEFAULT_TOL, valid));
    };

    frameTensor('conv_features', res.conv_features, 'BCT');
    if (has('extract_features') || res.extract_features) frameTensor('extract_features', res.extract_features, 'BTX');
    for (let i = 0; has(`hidden_states.${i}`) || res[`hidden_states.${i}`]; i++) {
      if (!has(`hidden_states.${i}`)) {
        rows.push({ folder: name, tensor: `hidden_states.${i}`, maxAbs: NaN, maxRel: NaN, status: 'FAIL', note: 'we produce it, the reference has none' });
        continue;
      }
      frameTensor(`hidden_states.${i}`, res[`hidden_states.${i}`], 'BTX');
    }
    frameTensor('last_hidden_state', res.last_hidden_state, 'BTX');

    // no attention mask (HF's way of running group-norm base models)
    if (has('nomask.last_hidden_state')) {
      const g2 = new Graph();
      const o2 = enc.build(g2, g2.input('input_values', 'float32', ['batch', 'samples']));
      const r2 = await withSession({ last_hidden_state: o2.lastHiddenState }, `${name}/encoder-nomask`, (s) =>
        s.run({ input_values: { dtype: 'float32', shape: [B, S], data: inputValues } }),
      );
      frameTensor('nomask.last_hidden_state', r2.last_hidden_state, 'BTX');
    }

    // item 1 alone, unpadded: every frame is valid
    if (single) {
      const ref = f32('single.1.last_hidden_state');
      const ours = single.last_hidden_state;
      const refShape = shapeOf('single.1.last_hidden_state');
      push(
        'single.1.last_hidden_state',
        ours.shape.join(',') === refShape.join(',')
          ? compareArrays(name, 'single.1.last_hidden_state', ours.data as Float32Array, ref)
          : { folder: name, tensor: 'single.1.last_hidden_state', maxAbs: Infinity, maxRel: Infinity, status: 'FAIL', note: `shape [${ours.shape}] vs reference [${refShape}]` },
      );
    }

    // WavLM relative position buckets
    if (has('wavlm.relative_positions') && has('wavlm.relative_position_buckets')) {
      const rel = exp.readI64('wavlm.relative_positions');
      const g3 = new Graph();
      const r = g3.input('relative_positions', 'int64', ['n']);
      const buckets = relativePositionBuckets(r, enc.config.numBuckets, enc.config.maxBucketDistance);
      const r3 = await withSession({ buckets }, `${name}/wavlm-buckets`, (s) =>
        s.run({ relative_positions: { dtype: 'int64', shape: [rel.length], data: rel } }),
      );
      push(
        'wavlm.relative_position_buckets',
        compareArrays(name, 'wavlm.relative_position_buckets', toNumbers(r3.buckets.data as BigInt64Array), toNumbers(exp.readI64('wavlm.relative_position_buckets')), {
          atol: 0,
          rtol: 0,
        }),
      );
    }
    for (const n of exp.names()) if (!compared.has(n) && !isInput(n)) rows.push({ ...notCovered(name, 'stored output without a check'), tensor: n });
    return rows;
  } finally {
    exp.close();
  }
}
