import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { grad } from '../graph/autodiff.ts';
import { Graph, type Value } from '../graph/ir.ts';
import { compile, tensor } from '../graph/runtime.ts';
import { rng } from '../graph/gradcheck.ts';
import { SafetensorsCheckpoint, writeSafetensors, type TensorInput } from '../io/safetensors.ts';
import { UserError } from '../util/errors.ts';
import { LlamaModel, causalLmLoss, causalLmLossAt, causalLmTargets, loadLlamaConfig } from './llama.ts';
import { checkAdapter, initLora, loadAdapter, loraFeeds, loraInputs, loraKey, mergeLora, readAdapterConfig, saveAdapter } from './lora.ts';
import { checkLlamaFolder, checkLoraFolder, checkLoraGradFolder } from './parity/llama.ts';
import { Weights } from './weights.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const FIXTURES = path.resolve(here, '../../../shared/fixtures/hf-parity');
const cacheDir = path.join(os.tmpdir(), 'emosllm-test-cache');
const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-llama-test-'));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

/** A fixture folder; a missing one FAILS the test with a clear message (never a skip). */
function fixture(name: string): string {
  const dir = path.join(FIXTURES, name);
  if (!fs.existsSync(path.join(dir, 'expected.safetensors')))
    throw new Error(`hf-parity fixture folder ${dir} is missing (expected ../shared/fixtures/hf-parity next to the project; see its README.md)`);
  return dir;
}

/** Runs a thunk expected to throw a one-line UserError; returns its message. */
function userError(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    const msg = (e as Error).message;
    expect(msg).not.toContain('\n');
    return msg;
  }
  throw new Error('expected a UserError');
}

/** A copy of a fixture model folder whose model.safetensors is rewritten by `edit`. */
function copyModel(name: string, edit?: (t: Record<string, TensorInput>) => void, config?: (c: Record<string, unknown>) => void): string {
  const src = fixture(name);
  const dst = fs.mkdtempSync(path.join(tmpRoot, `${name}-`));
  const cfg = JSON.parse(fs.readFileSync(path.join(src, 'config.json'), 'utf8'));
  config?.(cfg);
  fs.writeFileSync(path.join(dst, 'config.json'), JSON.stringify(cfg));
  const ck = SafetensorsCheckpoint.open(path.join(src, 'model.safetensors'));
  const t: Record<string, TensorInput> = {};
  for (const info of ck.infos()) t[info.name] = { dtype: 'F32', shape: info.shape, data: ck.readF32(info.name) };
  ck.close();
  edit?.(t);
  writeSafetensors(path.join(dst, 'model.safetensors'), t, { format: 'pt' });
  return dst;
}

describe('parity with transformers 4.43.4 / peft 0.12.0 (hf-parity fixtures)', () => {
  const expectAllPass = (rows: Awaited<ReturnType<typeof checkLlamaFolder>>, min: number) => {
    const bad = rows.filter((r) => r.status !== 'pass').map((r) => `${r.tensor}: ${r.status} max abs ${r.maxAbs} ${r.note ?? ''}`);
    expect(bad).toEqual([]);
    expect(rows.length).toBeGreaterThanOrEqual(min);
  };
  it('llama (tied lm_head): logits, hidden states, inputs_embeds, single rows, left padding, custom positions, generate', async () => {
    const rows = await checkLlamaFolder(fixture('llama'), 'llama', { cacheDir });
    expectAllPass(rows, 12);
    expect(rows.map((r) => r.tensor)).toEqual(expect.arrayContaining(['rope_inv_freq', 'left.logits', 'custom.logits', 'generate.output_ids']));
  });
  it('llama_untied (separate lm_head)', async () => {
    expectAllPass(await checkLlamaFolder(fixture('llama_untied'), 'llama_untied', { cacheDir }), 12);
  });
  it('llama_lora: unmerged, merged and base logits, merged weights', async () => {
    const rows = await checkLoraFolder(fixture('llama_lora'), 'llama_lora', { cacheDir });
    expectAllPass(rows, 7);
    expect(rows.map((r) => r.tensor)).toEqual(expect.arrayContaining(['logits', 'merged_logits', 'base_logits']));
  });
  it('llama_lora_grad: loss, every LoRA gradient, grad of inputs_embeds; the optimiser steps are not covered without an optimiser', async () => {
    const rows = await checkLoraGradFolder(fixture('llama_lora_grad'), 'llama_lora_grad', { cacheDir });
    const uncovered = rows.filter((r) => r.status === 'not covered');
    expect(uncovered.length).toBe(48 + 1 + 16 + 16 + 1);
    expect(uncovered.every((r) => r.tensor.startsWith('adamw.'))).toBe(true);
    expectAllPass(rows.filter((r) => r.status !== 'not covered'), 3 + 16 + 1);
  });
});

describe('LlamaModel', () => {
  it('logitsFor computes the lm_head only at the requested positions, with symbolic batch and length', async () => {
    const dir = fixture('llama');
    const model = LlamaModel.open(dir);
    const exp = SafetensorsCheckpoint.open(path.join(dir, 'expected.safetensors'));
    const g = new Graph();
    const ids = g.input('input_ids', 'int64', ['b', 'l']);
    const mask = g.input('attention_mask', 'int64', ['b', 'l']);
    const at = g.input('at', 'int64', ['b', 'k']);
    const out = model.forward(g, { inputIds: ids, attentionMask: mask, logitsFor: at });
    expect(out.logits.shape).toEqual(['b', 'k', 300]);
    const s = await compile({ logits: out.logits }, { cacheDir });
    const r = await s.run({
      input_ids: tensor(exp.readI64('input_ids'), [2, 8]),
      attention_mask: tensor(exp.readI64('attention_mask'), [2, 8]),
      at: tensor(BigInt64Array.from([7n, 0n, 4n, 2n]), [2, 2]),
    });
    await s.release();
    const ref = exp.readF32('logits');
    const got = r.logits.data as Float32Array;
    const pick = [
      [0, 7],
      [0, 0],
      [1, 4],
      [1, 2],
    ];
    pick.forEach(([b, t], j) => {
      for (let v = 0; v < 300; v += 17) expect(Math.abs(got[j * 300 + v] - ref[(b * 8 + t) * 300 + v])).toBeLessThan(1e-4);
    });
    exp.close();
  });

  it("runs from a folder of symlinks (Hugging Face's hub cache layout: snapshots/<rev>/* -> ../../blobs/<hash>)", async () => {
    const src = fixture('llama');
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-hfcache-'));
    try {
      fs.mkdirSync(path.join(root, 'blobs'));
      const snap = path.join(root, 'snapshots', 'abc123');
      fs.mkdirSync(snap, { recursive: true });
      for (const f of ['config.json', 'model.safetensors']) {
        fs.copyFileSync(path.join(src, f), path.join(root, 'blobs', `blob-${f}`));
        fs.symlinkSync(path.join('..', '..', 'blobs', `blob-${f}`), path.join(snap, f));
      }
      const exp = SafetensorsCheckpoint.open(path.join(src, 'expected.safetensors'));
      const g = new Graph();
      const ids = g.input('input_ids', 'int64', [2, 8]);
      const out = LlamaModel.open(snap).forward(g, { inputIds: ids, attentionMask: g.input('attention_mask', 'int64', [2, 8]) });
      const s = await compile({ logits: out.logits }, { cacheDir: path.join(root, 'cache') });
      const r = await s.run({ input_ids: tensor(exp.readI64('input_ids'), [2, 8]), attention_mask: tensor(exp.readI64('attention_mask'), [2, 8]) });
      await s.release();
      const ref = exp.readF32('logits');
      const mask = exp.readI64('attention_mask');
      const got = r.logits.data as Float32Array;
      let worst = 0;
      for (let i = 0; i < got.length; i++) if (mask[Math.floor(i / 300)] !== 0n) worst = Math.max(worst, Math.abs(got[i] - ref[i]));
      expect(worst).toBeLessThan(1e-4);
      exp.close();
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});

describe("layouts 'rows' and 'columns' compute the same model", () => {
  it('logits, hidden states, loss and every LoRA / input gradient agree; generate agrees', async () => {
    const model = LlamaModel.open(fixture('llama'));
    const adapter = loadAdapter(fixture('llama_lora'));
    const exp = SafetensorsCheckpoint.open(path.join(fixture('llama_lora_grad'), 'expected.safetensors'));
    const results = [];
    for (const layout of ['rows', 'columns'] as const) {
      const g = new Graph();
      const embeds = g.input('inputs_embeds', 'float32', ['b', 'l', 64]);
      const mask = g.input('attention_mask', 'int64', ['b', 'l']);
      const labels = g.input('labels', 'int64', ['b', 'l']);
      const { params, inputs } = loraInputs(g, adapter.config, model.linearModules());
      const out = model.forward(g, { inputsEmbeds: embeds, attentionMask: mask, lora: params, outputHiddenStates: true, layout });
      const { loss } = causalLmLoss(out.logits, labels);
      const grads = grad(loss, [embeds, ...inputs.values()]);
      const outputs: Record<string, Value> = { loss, logits: out.logits, h1: out.hiddenStates![1], h2: out.hiddenStates![2] };
      grads.forEach((gr, i) => (outputs[`g${i}`] = gr));
      const s = await compile(outputs, { cacheDir });
      results.push(
        await s.run({
          inputs_embeds: tensor(exp.readF32('inputs_embeds'), [2, 8, 64]),
          attention_mask: tensor(exp.readI64('attention_mask'), [2, 8]),
          labels: tensor(exp.readI64('labels'), [2, 8]),
          ...loraFeeds(adapter.tensors),
        }),
      );
      await s.release();
    }
    const [a, b] = results;
    for (const k of Object.keys(a)) {
      const x = a[k].data as Float32Array;
      const y = b[k].data as Float32Array;
      const scale = Math.max(1, ...Array.from(x, Math.abs));
      const diff = x.reduce((m, v, i) => Math.max(m, Math.abs(v - y[i])), 0);
      expect(diff, k).toBeLessThanOrEqual(2e-5 * scale);
    }
    exp.close();
    const prompt = [53, 158, 109, 290, 241, 190, 205, 160];
    const shared = await model.generate(prompt, 6, { compile: { cacheDir }, layout: 'columns' });
    expect(shared).toEqual([53, 158, 109, 290, 241, 190, 205, 160, 169, 169, 169, 227, 19, 19]);
    await model.release();
  });
});

describe('attention_bias / mlp_bias', () => {
  const withBiases = (value: (i: number) => number) =>
    copyModel(
      'llama',
      (t) => {
        const model = LlamaModel.open(fixture('llama'));
        for (const [m, s] of model.linearModules())
          t[`${m}.bias`] = { dtype: 'F32', shape: [s.out], data: Float32Array.from({ length: s.out }, (_, i) => value(i)) };
      },
      (c) => {
        c.attention_bias = true;
        c.mlp_bias = true;
      },
    );
  const logits = async (dir: string, layout: 'rows' | 'columns') => {
    const model = LlamaModel.open(dir);
    const exp = SafetensorsCheckpoint.open(path.join(fixture('llama'), 'expected.safetensors'));
    const g = new Graph();
    const ids = g.input('input_ids', 'int64', ['b', 'l']);
    const s = await compile({ logits: model.forward(g, { inputIds: ids, layout }).logits }, { cacheDir });
    const r = await s.run({ input_ids: tensor(exp.readI64('input_ids').slice(0, 8), [1, 8]) }); // row 0 is unpadded
    await s.release();
    const ref = exp.readF32('single.0.logits');
    exp.close();
    return { got: r.logits.data as Float32Array, ref };
  };
  const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
  it('zero biases reproduce the bias-free reference in both weight modes', async () => {
    const dir = withBiases(() => 0);
    for (const mode of ['rows', 'columns'] as const) {
      const { got, ref } = await logits(dir, mode);
      expect(maxDiff(got, ref), mode).toBeLessThan(1e-4);
    }
  });
  it('non-zero biases are applied, identically in both weight modes', async () => {
    const dir = withBiases((i) => 0.05 * Math.sin(i + 1));
    const a = await logits(dir, 'rows');
    const b = await logits(dir, 'columns');
    expect(maxDiff(a.got, a.ref)).toBeGreaterThan(1e-2);
    expect(maxDiff(a.got, b.got)).toBeLessThan(1e-4);
  });
});

describe('causal-LM loss on the scored positions only', () => {
  it('causalLmTargets + logitsFor + causalLmLossAt reproduce the fixture loss and LoRA gradients', async () => {
    const model = LlamaModel.open(fixture('llama'));
    const adapter = loadAdapter(fixture('llama_lora'));
    const exp = SafetensorsCheckpoint.open(path.join(fixture('llama_lora_grad'), 'expected.safetensors'));
    const t = causalLmTargets(exp.readI64('labels'), [2, 8]);
    expect(t.shape).toEqual([2, 3]); // 3 and 2 targets per row (README), padded to 3
    expect(Array.from(t.targets)).toEqual([26n, 123n, 290n, 269n, 40n, -100n]);
    // labels carry ids at t = 5, 6, 7 (row 0) and t = 3, 4 (row 1): scored by the logits one position earlier
    expect(Array.from(t.positions)).toEqual([4n, 5n, 6n, 2n, 3n, 0n]);
    const g = new Graph();
    const embeds = g.input('inputs_embeds', 'float32', ['b', 'l', 64]);
    const mask = g.input('attention_mask', 'int64', ['b', 'l']);
    const positions = g.input('positions', 'int64', ['b', 'k']);
    const targets = g.input('targets', 'int64', ['b', 'k']);
    const { params, inputs } = loraInputs(g, adapter.config, model.linearModules());
    const out = model.forward(g, { inputsEmbeds: embeds, attentionMask: mask, lora: params, logitsFor: positions, layout: 'columns' });
    const { loss } = causalLmLossAt(out.logits, targets);
    const keys = [...inputs.keys()];
    const grads = grad(loss, [...inputs.values()]);
    const outputs: Record<string, Value> = { loss };
    keys.forEach((k, i) => (outputs[`grad.${k}`] = grads[i]));
    const s = await compile(outputs, { cacheDir });
    const r = await s.run({
      inputs_embeds: tensor(exp.readF32('inputs_embeds'), [2, 8, 64]),
      attention_mask: tensor(exp.readI64('attention_mask'), [2, 8]),
      positions: tensor(t.positions, t.shape),
      targets: tensor(t.targets, t.shape),
      ...loraFeeds(adapter.tensors),
    });
    await s.release();
    expect(Math.abs((r.loss.data as Float32Array)[0] - exp.readF32('loss')[0])).toBeLessThan(1e-4);
    for (const k of keys) {
      const ref = exp.readF32(`grad.${k}`);
      const got = r[`grad.${k}`].data as Float32Array;
      const refMax = Math.max(...Array.from(ref, Math.abs));
      expect(got.reduce((m, v, i) => Math.max(m, Math.abs(v - ref[i])), 0), k).toBeLessThanOrEqual(Math.max(1e-4 * refMax, 1e-6));
    }
    exp.close();
  });
});

describe('LoRA adapters', () => {
  it('save -> load round trip keeps PEFT key names, shapes, values and config', () => {
    const a = loadAdapter(fixture('llama_lora'));
    const dir = path.join(tmpRoot, 'adapter-copy');
    saveAdapter(dir, a.tensors, a.config);
    const b = loadAdapter(dir);
    expect(b.config).toEqual(a.config);
    expect([...b.tensors.keys()].sort()).toEqual([...a.tensors.keys()].sort());
    for (const [k, t] of a.tensors) {
      expect(b.tensors.get(k)!.shape).toEqual(t.shape);
      expect(Array.from(b.tensors.get(k)!.data)).toEqual(Array.from(t.data));
    }
    const keys = SafetensorsCheckpoint.open(path.join(dir, 'adapter_model.safetensors')).names();
    expect(keys).toContain('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight');
    expect(keys).toContain('base_model.model.model.layers.1.self_attn.o_proj.lora_B.weight');
    const json = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
    expect(json).toMatchObject({ peft_type: 'LORA', r: 4, lora_alpha: 8, fan_in_fan_out: false, use_dora: false, bias: 'none' });
    expect([...json.target_modules].sort()).toEqual(['k_proj', 'o_proj', 'q_proj', 'v_proj']);
  });

  it('initLora: A ~ U(-1/sqrt(in), 1/sqrt(in)) from the seeded rng, B = 0; merging it leaves the weights unchanged', () => {
    const model = LlamaModel.open(fixture('llama'));
    const config = { ...readAdapterConfig(fixture('llama_lora')), targetModules: ['v_proj', 'q_proj'], r: 3 };
    const t1 = initLora(config, model.linearModules(), rng(7));
    const t2 = initLora(config, model.linearModules(), rng(7));
    expect(t1.size).toBe(2 * 2 * 2); // 2 layers x (q, v) x (A, B)
    const A = t1.get(loraKey('model.layers.1.self_attn.v_proj', 'A'))!;
    expect(A.shape).toEqual([3, 64]);
    expect(Math.max(...A.data.map(Math.abs))).toBeLessThanOrEqual(1 / 8);
    expect(Math.max(...A.data.map(Math.abs))).toBeGreaterThan(0.1);
    expect(Array.from(A.data)).toEqual(Array.from(t2.get(loraKey('model.layers.1.self_attn.v_proj', 'A'))!.data));
    const B = t1.get(loraKey('model.layers.0.self_attn.q_proj', 'B'))!;
    expect(B.shape).toEqual([64, 3]);
    expect(B.data.every((x) => x === 0)).toBe(true);
    const merged = mergeLora(model.weights, { config, tensors: t1 }, model.linearModules());
    expect(Array.from(merged.get('model.layers.0.self_attn.q_proj.weight')!)).toEqual(Array.from(model.weights.read('model.layers.0.self_attn.q_proj.weight')));
  });

  it('target_modules is a set matched by module-name suffix', () => {
    const model = LlamaModel.open(fixture('llama'));
    const config = { ...readAdapterConfig(fixture('llama_lora')), targetModules: ['self_attn.o_proj', 'down_proj'] };
    const keys = [...initLora(config, model.linearModules(), rng(1)).keys()];
    expect(keys).toContain(loraKey('model.layers.0.self_attn.o_proj', 'A'));
    expect(keys).toContain(loraKey('model.layers.1.mlp.down_proj', 'B'));
    expect(keys.length).toBe(8);
    expect(userError(() => initLora({ ...config, targetModules: ['nope'] }, model.linearModules(), rng(1)))).toMatch(/target_modules/);
  });
});

describe('malformed checkpoints and configs: one-line UserError naming the tensor or key', () => {
  it('missing tensor', () => {
    const dir = copyModel('llama', (t) => delete t['model.layers.1.mlp.up_proj.weight']);
    expect(userError(() => LlamaModel.open(dir))).toMatch(/missing tensor "model\.layers\.1\.mlp\.up_proj\.weight"/);
  });
  it('wrong shape', () => {
    const dir = copyModel('llama', (t) => {
      t['model.layers.0.self_attn.k_proj.weight'] = { dtype: 'F32', shape: [64, 64], data: new Float32Array(64 * 64) };
    });
    expect(userError(() => LlamaModel.open(dir))).toMatch(/"model\.layers\.0\.self_attn\.k_proj\.weight" has shape \[64, 64\].*\[32, 64\]/);
  });
  it('untied model without lm_head.weight', () => {
    const dir = copyModel('llama', undefined, (c) => (c.tie_word_embeddings = false));
    expect(userError(() => LlamaModel.open(dir))).toMatch(/missing tensor "lm_head\.weight"/);
  });
  it('unknown model_type', () => {
    const dir = copyModel('llama', undefined, (c) => (c.model_type = 'mistral'));
    const msg = userError(() => loadLlamaConfig(dir));
    expect(msg).toMatch(/config\.json.*"model_type".*mistral/);
  });
  it.each(['linear', 'dynamic', 'yarn'])('unsupported rope_type %s', (type) => {
    const dir = copyModel('llama', undefined, (c) => ((c.rope_scaling as Record<string, unknown>).rope_type = type));
    expect(userError(() => LlamaModel.open(dir))).toMatch(new RegExp(`config\\.json.*"rope_scaling\\.rope_type".*${type}`));
  });
  it('legacy rope_scaling.type key and default rope are accepted', () => {
    const d1 = copyModel('llama', undefined, (c) => (c.rope_scaling = { type: 'default' }));
    expect(loadLlamaConfig(d1).ropeScaling).toBeNull();
    const d2 = copyModel('llama', undefined, (c) => (c.rope_scaling = { type: 'dynamic', factor: 2 }));
    expect(userError(() => loadLlamaConfig(d2))).toMatch(/"rope_scaling\.type"/);
  });
  it('head_dim key is honoured and validated', () => {
    const d = copyModel('llama', undefined, (c) => (c.head_dim = 16));
    expect(loadLlamaConfig(d).headDim).toBe(16);
    const bad = copyModel('llama', undefined, (c) => (c.head_dim = 32));
    expect(userError(() => LlamaModel.open(bad))).toMatch(/q_proj\.weight" has shape/);
  });

  const adapterCopy = (edit: (c: Record<string, unknown>) => void) => {
    const src = fixture('llama_lora');
    const dst = fs.mkdtempSync(path.join(tmpRoot, 'lora-'));
    const cfg = JSON.parse(fs.readFileSync(path.join(src, 'adapter_config.json'), 'utf8'));
    edit(cfg);
    fs.writeFileSync(path.join(dst, 'adapter_config.json'), JSON.stringify(cfg));
    fs.copyFileSync(path.join(src, 'adapter_model.safetensors'), path.join(dst, 'adapter_model.safetensors'));
    return dst;
  };
  it('fan_in_fan_out true', () => {
    const dir = adapterCopy((c) => (c.fan_in_fan_out = true));
    expect(userError(() => loadAdapter(dir))).toMatch(/adapter_config\.json.*"fan_in_fan_out"/);
  });
  it('use_dora true, bias not none', () => {
    expect(userError(() => loadAdapter(adapterCopy((c) => (c.use_dora = true))))).toMatch(/"use_dora"/);
    expect(userError(() => loadAdapter(adapterCopy((c) => (c.bias = 'all'))))).toMatch(/"bias"/);
  });
  it('adapter tensor missing or of the wrong shape for the model', () => {
    const model = LlamaModel.open(fixture('llama'));
    const a = loadAdapter(fixture('llama_lora'));
    const key = loraKey('model.layers.1.self_attn.k_proj', 'B');
    const missing = { ...a, tensors: new Map([...a.tensors].filter(([k]) => k !== key)) };
    expect(userError(() => checkAdapter(missing, model.linearModules()))).toContain(`missing tensor "${key}"`);
    const wrong = { ...a, tensors: new Map(a.tensors).set(key, { shape: [64, 4], data: new Float32Array(256) }) };
    expect(userError(() => checkAdapter(wrong, model.linearModules()))).toMatch(/k_proj\.lora_B\.weight" has shape \[64, 4\].*\[32, 4\]/);
    expect(userError(() => mergeLora(new Weights(model.weights.ckpt, 'x'), wrong, model.linearModules()))).toMatch(/lora_B/);
  });
});
