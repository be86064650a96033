/**
 * EmoSLLM with the other pieces plugged in: a Hugging Face speech encoder (the tiny random WavLM of
 * ../shared/fixtures/hf-parity) instead of fbank, and a Llama folder adapted with LoRA instead of full
 * training: training runs, the adapter is a PEFT adapter, prediction and the ONNX export (LoRA merged) agree.
 */
import fs from 'node:fs';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { loadAudio16k } from '../audio/decode.ts';
import { exportModel } from '../export/export.ts';
import { predictSamples } from '../eval/predict.ts';
import { defaultTrainConfig } from '../train/config.ts';
import { train } from '../train/trainer.ts';
import { emodbDev, hfParity, tempDir } from '../../test/fixtures-gen/paths.ts';
import { emodbSubset } from '../../test/fixtures-gen/subset.ts';
import { EmoSLLM } from './emosllm.ts';
import { loadAdapter } from './lora.ts';
import { writeTinyLlama } from './tiny.ts';

const tmp = tempDir('emosllm');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('EmoSLLM with a Hugging Face encoder and a LoRA-adapted Llama folder', () => {
  it('trains, saves a PEFT adapter, predicts, and exports with LoRA merged (same probabilities, 1e-4)', async () => {
    const llm = writeTinyLlama(path.join(tmp, 'llama'), { seed: 5 }); // an ordinary HF Llama folder with a tokenizer
    const data = emodbSubset(path.join(tmp, 'data'), ['03', '08', '09'], 10);
    const out = path.join(tmp, 'run');
    const r = await train(
      defaultTrainConfig({ data, encoder: hfParity('wavlm'), llm, maxSteps: 3, batchSize: 6, validFraction: 0, cacheDir: path.join(tmp, 'cache') }),
      out,
      { hooks: { log: () => {} } },
    );
    expect(r.steps).toBe(3);
    const spec = JSON.parse(fs.readFileSync(path.join(out, 'emosllm.json'), 'utf8'));
    expect(spec.llmTrain).toBe('lora');
    expect(spec.encoder.kind).toBe('hf');
    expect(spec.encoderLayers).toEqual([0, 1, 2]); // every hidden state of the 2-layer encoder
    expect(path.resolve(out, spec.llm.path)).toBe(llm);
    const adapter = loadAdapter(path.join(out, 'adapter'));
    expect(adapter.config.r).toBe(8);
    expect([...adapter.tensors.keys()].some((k) => /^base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_B\.weight$/.test(k))).toBe(true);
    // B starts at 0 (PEFT init; A is random from the start): after 3 steps every B matrix has moved
    const bs = [...adapter.tensors.entries()].filter(([k]) => /\.lora_B\.weight$/.test(k));
    expect(bs.length).toBe(2 * 2); // q_proj and v_proj of both layers
    for (const [k, t] of bs) expect(t.data.some((x) => x !== 0), k).toBe(true);

    const samples = await loadAudio16k(path.join(emodbDev().wavDir, '03a01Fa.wav'));
    const m = EmoSLLM.load(out);
    let pred;
    try {
      expect(m.frameRate).toBeCloseTo(16000 / 60, 6); // the fixture's conv stack: strides 5, 3, 2, 2
      pred = await predictSamples(m, samples, { segment: 'whole' });
    } finally {
      await m.release();
    }
    const onnxDir = path.join(tmp, 'onnx');
    const man = await exportModel(out, onnxDir, { stages: false, log: () => {} });
    const s = await ort.InferenceSession.create(path.join(onnxDir, man.model));
    try {
      const res = await s.run({ audio: new ort.Tensor('float32', samples, [1, samples.length]) });
      const p = res.probabilities.data as Float32Array;
      man.labels.forEach((l, j) => expect(Math.abs(p[j] - pred.probabilities[l])).toBeLessThan(1e-4));
    } finally {
      await s.release();
    }
  }, 300_000);
});
