/**
 * Parity of our QPMapper (src/models/qpmapper.ts) with the PyTorch reference folder `qpmapper_ref/`
 * (../shared/fixtures/hf-parity/README.md, "Query-pooling mapper"): forward output, loss = Σ h_ds·R, and the
 * gradient of that loss w.r.t. every parameter and the input hidden states, all from one compiled graph.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Graph } from '../../graph/ir.ts';
import { grad, vjp } from '../../graph/autodiff.ts';
import { mul, reduceSum } from '../../graph/ops.ts';
import { type Tensor, compile } from '../../graph/runtime.ts';
import { SafetensorsCheckpoint } from '../../io/safetensors.ts';
import { oneLine } from '../../util/errors.ts';
import { buildQPMapper, checkFrameCount, loadQPMapper, qpmapperFeeds, qpmapperInputs, qpmapperParamShapes } from '../qpmapper.ts';
import { type ParityRow, compareArrays, compareGradient, notCovered } from './compare.ts';

const fail = (folder: string, tensor: string, note: string): ParityRow => ({ folder, tensor, maxAbs: NaN, maxRel: NaN, status: 'FAIL', note });

/** Gradients that are analytically 0 (a key bias shifts all scores of a query equally): absolute floor. */
const ANALYTIC_ZERO = /\.attn\.k_proj\.bias$/;
const ANALYTIC_ZERO_FLOOR = 1e-5;

export async function checkQPMapperFolder(dir: string, name: string): Promise<ParityRow[]> {
  const expectedFile = path.join(dir, 'expected.safetensors');
  if (!fs.existsSync(expectedFile)) return [fail(name, '*', `missing ${expectedFile}`)];
  let mapper: ReturnType<typeof loadQPMapper>;
  try {
    mapper = loadQPMapper(dir);
  } catch (e) {
    return [fail(name, '*', oneLine(e))];
  }
  const { config: cfg, params } = mapper;
  const exp = SafetensorsCheckpoint.open(expectedFile);
  try {
    const hsInfo = exp.info('hidden_states');
    const [, B, T] = hsInfo.shape;
    checkFrameCount(cfg, T, expectedFile);
    const hidden = exp.readF32('hidden_states');
    const mask = exp.readI64('frame_mask');
    const R = exp.readF32('R');

    // one graph: forward, loss, gradients w.r.t. every parameter and the hidden states (B and T symbolic)
    const g = new Graph();
    const p = qpmapperInputs(g, cfg);
    const hs = g.input('hidden_states', 'float32', [cfg.numHiddenStates, 'B', 'T', cfg.dIn]);
    const fm = g.input('frame_mask', 'int64', ['B', 'T']);
    const r = g.input('R', 'float32', ['B', cfg.nQueries, cfg.dLlm]);
    const hDs = buildQPMapper(g, cfg, p, hs, fm);
    const loss = reduceSum(mul(hDs, r), [0, 1, 2]);
    const names = qpmapperParamShapes(cfg).map(([n]) => n);
    const grads = grad(loss, [...names.map((n) => p[n]), hs]);
    const outputs: Record<string, (typeof grads)[number]> = { h_ds: hDs, loss };
    names.forEach((n, i) => (outputs[`grad.${n}`] = grads[i]));
    outputs['grad.hidden_states'] = grads[names.length];
    // e2e.*: the mapper's part of the end-to-end step is its VJP with the stored cotangent e2e.grad.h_ds
    const hasE2E = exp.has('e2e.grad.h_ds');
    if (hasE2E) {
      const cot = g.input('e2e.grad.h_ds', 'float32', ['B', cfg.nQueries, cfg.dLlm]);
      const pulled = vjp([hDs], [cot], names.map((n) => p[n]));
      names.forEach((n, i) => (outputs[`e2e.grad.${n}`] = pulled[i]));
    }
    const sess = await compile(outputs, { name: `parity ${name}` });
    const feeds: Record<string, Tensor> = {
      ...qpmapperFeeds(cfg, params),
      hidden_states: { dtype: 'float32', shape: hsInfo.shape, data: hidden },
      frame_mask: { dtype: 'int64', shape: [B, T], data: mask },
      R: { dtype: 'float32', shape: exp.info('R').shape, data: R },
    };
    if (hasE2E) feeds['e2e.grad.h_ds'] = { dtype: 'float32', shape: exp.info('e2e.grad.h_ds').shape, data: exp.readF32('e2e.grad.h_ds') };
    const out = await sess.run(feeds);
    await sess.release();

    const rows: ParityRow[] = [];
    const ours = (k: string) => out[k].data as Float32Array;
    rows.push(compareArrays(name, 'h_ds', ours('h_ds'), exp.readF32('h_ds')));
    rows.push(compareArrays(name, 'loss', ours('loss'), exp.readF32('loss')));
    for (const n of names) {
      const key = `grad.${n}`;
      if (!exp.has(key)) {
        rows.push(fail(name, key, 'not in expected.safetensors'));
        continue;
      }
      rows.push(compareGradient(name, key, ours(key), exp.readF32(key), 1e-4, ANALYTIC_ZERO.test(n) ? ANALYTIC_ZERO_FLOOR : 1e-6));
    }
    const gh = ours('grad.hidden_states');
    rows.push(compareGradient(name, 'grad.hidden_states', gh, exp.readF32('grad.hidden_states')));

    // Padded frames must get exactly zero gradient (not just small): checked on their own.
    const frameSize = cfg.dIn;
    let maxPadded = 0;
    let nPadded = 0;
    for (let l = 0; l < cfg.numHiddenStates; l++)
      for (let b = 0; b < B; b++)
        for (let t = 0; t < T; t++) {
          if (mask[b * T + t] !== 0n) continue;
          nPadded++;
          const base = ((l * B + b) * T + t) * frameSize;
          for (let c = 0; c < frameSize; c++) maxPadded = Math.max(maxPadded, Number.isNaN(gh[base + c]) ? Infinity : Math.abs(gh[base + c]));
        }
    rows.push({
      folder: name,
      tensor: 'grad.hidden_states[padded frames] == 0',
      maxAbs: maxPadded,
      maxRel: NaN,
      status: maxPadded === 0 ? 'pass' : 'FAIL',
      note: `${nPadded / cfg.numHiddenStates} padded frames x ${cfg.numHiddenStates} hidden states`,
    });

    if (hasE2E) {
      if (exp.has('e2e.h_ds')) rows.push(compareArrays(name, 'e2e.h_ds', ours('h_ds'), exp.readF32('e2e.h_ds')));
      for (const n of names) {
        const key = `e2e.grad.${n}`;
        if (!exp.has(key)) rows.push(fail(name, key, 'not in expected.safetensors'));
        else rows.push({ ...compareGradient(name, key, ours(key), exp.readF32(key), 1e-4, ANALYTIC_ZERO.test(n) ? ANALYTIC_ZERO_FLOOR : 1e-6), note: 'mapper VJP of the stored e2e.grad.h_ds' });
      }
      rows.push({
        ...notCovered(name, 'e2e.loss, logits, grad.h_ds, grad.<PEFT key>, one-graph gradients: need src/models/llama.ts + lora.ts, not in the tree yet'),
        tensor: 'e2e.* (through the LLM)',
      });
    }
    return rows;
  } catch (e) {
    return [fail(name, '*', oneLine(e))];
  } finally {
    exp.close();
  }
}
