/**
 * Parity of our QPMapper (src/models/qpmapper.ts) with the PyTorch reference folder `qpmapper_ref/`
 * (../shared/fixtures/hf-parity/README.md, "Query-pooling mapper"), all from one compiled graph:
 * - the mapper alone: h_ds, loss = Σ h_ds·R, the gradient of that loss w.r.t. every parameter and the input
 *   hidden states (exactly 0 at padded frames: its own row);
 * - the end-to-end step (`e2e.*`): h_ds followed by embed(prompt) into ../llama + ../llama_lora, HF causal-LM
 *   loss; e2e.logits, e2e.loss, e2e.grad.h_ds, and d e2e.loss / d (every mapper parameter and every LoRA
 *   weight) from a single `grad` call through mapper and LLM. The mapper's backward is also checked on its
 *   own: its VJP with the stored cotangent e2e.grad.h_ds (rows "... (mapper VJP)").
 * Every stored tensor that is not an input gets a row; one no check covers shows up as "not covered".
 */
import fs from 'node:fs';
import path from 'node:path';
import { grad, vjp } from '../../graph/autodiff.ts';
import { Graph, type Value } from '../../graph/ir.ts';
import { concat, mul, reduceSum } from '../../graph/ops.ts';
import { type CompileOptions, type Tensor, compile } from '../../graph/runtime.ts';
import { SafetensorsCheckpoint } from '../../io/safetensors.ts';
import { oneLine } from '../../util/errors.ts';
import { LlamaModel, causalLmLoss } from '../llama.ts';
import { type LoraAdapter, checkAdapter, loadAdapter, loraFeeds, loraInputs } from '../lora.ts';
import { buildQPMapper, checkFrameCount, loadQPMapper, qpmapperFeeds, qpmapperInputs, qpmapperParamShapes } from '../qpmapper.ts';
import { type ParityRow, compareArrays, compareGradient, notCovered } from './compare.ts';

const fail = (folder: string, tensor: string, note: string): ParityRow => ({ folder, tensor, maxAbs: NaN, maxRel: NaN, status: 'FAIL', note });

/** Gradients that are analytically 0 (a key bias shifts all scores of a query equally): absolute floor. */
const ANALYTIC_ZERO = /\.attn\.k_proj\.bias$/;
const ANALYTIC_ZERO_FLOOR = 1e-5;
const gradFloor = (param: string) => (ANALYTIC_ZERO.test(param) ? ANALYTIC_ZERO_FLOOR : 1e-6);

/** Stored tensors that are inputs, not outputs to compare. */
const INPUTS = new Set(['hidden_states', 'frame_mask', 'R', 'e2e.prompt_ids', 'e2e.attention_mask', 'e2e.labels']);

/** The LLM of the e2e step: ../llama_lora (its base model is ../llama), as the README says. */
function openE2ELlm(dir: string): { model: LlamaModel; adapter: LoraAdapter } {
  const adapterDir = path.resolve(dir, '..', 'llama_lora');
  const adapter = loadAdapter(adapterDir);
  const baseDir = path.resolve(adapterDir, adapter.config.baseModelNameOrPath ?? '../llama');
  const model = LlamaModel.open(baseDir);
  checkAdapter(adapter, model.linearModules());
  return { model, adapter };
}

export async function checkQPMapperFolder(dir: string, name: string, opts: CompileOptions = {}): Promise<ParityRow[]> {
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
  const seen = new Set<string>();
  const rows: ParityRow[] = [];
  const ref = (k: string) => {
    seen.add(k);
    return exp.readF32(k);
  };
  const feed = (k: string): Tensor => {
    const info = exp.info(k);
    return info.dtype === 'I64' ? { dtype: 'int64', shape: info.shape, data: exp.readI64(k) } : { dtype: 'float32', shape: info.shape, data: exp.readF32(k) };
  };
  try {
    const hsShape = exp.info('hidden_states').shape;
    const [, B, T] = hsShape;
    checkFrameCount(cfg, T, expectedFile);
    const mask = exp.readI64('frame_mask');
    const names = qpmapperParamShapes(cfg).map(([n]) => n);

    // --- the mapper alone: forward, loss, gradients w.r.t. every parameter and the hidden states (B, T symbolic)
    const g = new Graph();
    const p = qpmapperInputs(g, cfg);
    const hs = g.input('hidden_states', 'float32', [cfg.numHiddenStates, 'B', 'T', cfg.dIn]);
    const fm = g.input('frame_mask', 'int64', ['B', 'T']);
    const r = g.input('R', 'float32', ['B', cfg.nQueries, cfg.dLlm]);
    const hDs = buildQPMapper(g, cfg, p, hs, fm);
    const loss = reduceSum(mul(hDs, r), [0, 1, 2]);
    const grads = grad(loss, [...names.map((n) => p[n]), hs]);
    const outputs: Record<string, Value> = { h_ds: hDs, loss };
    names.forEach((n, i) => (outputs[`grad.${n}`] = grads[i]));
    outputs['grad.hidden_states'] = grads[names.length];
    const feeds: Record<string, Tensor> = { ...qpmapperFeeds(cfg, params), hidden_states: feed('hidden_states'), frame_mask: feed('frame_mask'), R: feed('R') };

    // --- e2e.*, mapper side: its VJP with the stored cotangent e2e.grad.h_ds
    const hasE2E = exp.has('e2e.grad.h_ds');
    if (hasE2E) {
      const cot = g.input('cotangent.h_ds', 'float32', ['B', cfg.nQueries, cfg.dLlm]);
      const pulled = vjp([hDs], [cot], names.map((n) => p[n]));
      names.forEach((n, i) => (outputs[`vjp.${n}`] = pulled[i]));
      feeds['cotangent.h_ds'] = feed('e2e.grad.h_ds');
    }

    // --- e2e.*, through the LLM: [h_ds | embed(prompt)] -> Llama + LoRA -> causal-LM loss, one graph
    let llm: ReturnType<typeof openE2ELlm> | undefined;
    let llmError: string | undefined;
    let loraKeys: string[] = [];
    if (hasE2E) {
      try {
        llm = openE2ELlm(dir);
      } catch (e) {
        llmError = oneLine(e);
      }
    }
    if (llm) {
      const { model, adapter } = llm;
      const promptIds = g.input('e2e.prompt_ids', 'int64', ['B', 'P']);
      const attentionMask = g.input('e2e.attention_mask', 'int64', ['B', 'S']);
      const labels = g.input('e2e.labels', 'int64', ['B', 'S']);
      const lora = loraInputs(g, adapter.config, model.linearModules());
      loraKeys = [...lora.inputs.keys()];
      const embeds = concat([hDs, model.embed(g, promptIds)], 1); // [B, n_q + P, H]: audio tokens first
      const out = model.forward(g, { inputsEmbeds: embeds, attentionMask, lora: lora.params });
      const e2eLoss = causalLmLoss(out.logits, labels).loss;
      // one grad call through LLM and mapper: every mapper parameter and every LoRA weight
      const all = grad(e2eLoss, [...names.map((n) => p[n]), ...lora.inputs.values()]);
      // d loss / d h_ds needs its own call: asked together with the mapper parameters (its ancestors), the
      // engine's vjp consumes h_ds's cotangent on the way through and returns zeros for it.
      const [gH] = grad(e2eLoss, [hDs]);
      Object.assign(outputs, { 'e2e.inputs_embeds': embeds, 'e2e.logits': out.logits, 'e2e.loss': e2eLoss, 'e2e.grad.h_ds': gH });
      names.forEach((n, i) => (outputs[`e2e.grad.${n}`] = all[i]));
      loraKeys.forEach((k, i) => (outputs[`e2e.grad.${k}`] = all[names.length + i]));
      Object.assign(feeds, loraFeeds(adapter.tensors), {
        'e2e.prompt_ids': feed('e2e.prompt_ids'),
        'e2e.attention_mask': feed('e2e.attention_mask'),
        'e2e.labels': feed('e2e.labels'),
      });
    }

    const sess = await compile(outputs, { name: `parity ${name}`, ...opts });
    let out: Record<string, Tensor>;
    try {
      out = await sess.run(feeds);
    } finally {
      await sess.release();
      await llm?.model.release();
    }
    const ours = (k: string) => out[k].data as Float32Array;
    /** A gradient row: our output `outKey` against the stored `refKey`, shown as `label`. */
    const cmpGrad = (label: string, refKey: string, outKey: string, param: string, note?: string) => {
      if (!exp.has(refKey)) return rows.push(fail(name, label, `${refKey} not in expected.safetensors`));
      const row = compareGradient(name, label, ours(outKey), ref(refKey), 1e-4, gradFloor(param));
      rows.push(note ? { ...row, note } : row);
    };

    rows.push(compareArrays(name, 'h_ds', ours('h_ds'), ref('h_ds')));
    rows.push(compareArrays(name, 'loss', ours('loss'), ref('loss')));
    for (const n of names) cmpGrad(`grad.${n}`, `grad.${n}`, `grad.${n}`, n);
    const gh = ours('grad.hidden_states');
    rows.push(compareGradient(name, 'grad.hidden_states', gh, ref('grad.hidden_states')));

    // Padded frames must get exactly zero gradient (not just small): checked on their own.
    let maxPadded = 0;
    let nPadded = 0;
    for (let l = 0; l < cfg.numHiddenStates; l++)
      for (let b = 0; b < B; b++)
        for (let t = 0; t < T; t++) {
          if (mask[b * T + t] !== 0n) continue;
          nPadded++;
          const base = ((l * B + b) * T + t) * cfg.dIn;
          for (let c = 0; c < cfg.dIn; c++) maxPadded = Math.max(maxPadded, Number.isNaN(gh[base + c]) ? Infinity : Math.abs(gh[base + c]));
        }
    rows.push({
      folder: name,
      tensor: 'grad.hidden_states[padded frames] == 0',
      maxAbs: maxPadded,
      maxRel: NaN,
      status: maxPadded === 0 && nPadded > 0 ? 'pass' : 'FAIL',
      note: nPadded > 0 ? `${nPadded / cfg.numHiddenStates} padded frames x ${cfg.numHiddenStates} hidden states` : 'the fixture has no padded frame',
    });

    if (hasE2E) {
      if (exp.has('e2e.h_ds')) rows.push(compareArrays(name, 'e2e.h_ds', ours('h_ds'), ref('e2e.h_ds')));
      for (const n of names) cmpGrad(`e2e.grad.${n} (mapper VJP)`, `e2e.grad.${n}`, `vjp.${n}`, n, 'VJP of the stored e2e.grad.h_ds');
      if (llm) {
        const am = exp.readI64('e2e.attention_mask');
        const V = llm.model.config.vocabSize;
        const H = llm.model.config.hiddenSize;
        if (exp.has('e2e.inputs_embeds'))
          rows.push(compareArrays(name, 'e2e.inputs_embeds', ours('e2e.inputs_embeds'), ref('e2e.inputs_embeds'), undefined, (i) => am[Math.floor(i / H)] !== 0n));
        rows.push(compareArrays(name, 'e2e.logits', ours('e2e.logits'), ref('e2e.logits'), undefined, (i) => am[Math.floor(i / V)] !== 0n));
        rows.push(compareArrays(name, 'e2e.loss', ours('e2e.loss'), ref('e2e.loss')));
        rows.push(compareGradient(name, 'e2e.grad.h_ds', ours('e2e.grad.h_ds'), ref('e2e.grad.h_ds')));
        for (const n of names) cmpGrad(`e2e.grad.${n}`, `e2e.grad.${n}`, `e2e.grad.${n}`, n, 'one grad call through LLM + mapper');
        for (const k of loraKeys) cmpGrad(`e2e.grad.${k}`, `e2e.grad.${k}`, `e2e.grad.${k}`, k);
      } else rows.push(fail(name, 'e2e.* (through the LLM)', `cannot open ../llama + ../llama_lora: ${llmError}`));
    }
    for (const k of exp.names())
      if (!seen.has(k) && !INPUTS.has(k)) rows.push({ ...notCovered(name, 'stored output without a check'), tensor: k });
    return rows;
  } catch (e) {
    return [...rows, fail(name, '*', oneLine(e))];
  } finally {
    exp.close();
  }
}
