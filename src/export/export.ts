/**
 * `emosllm export`: a trained model folder -> ONNX files that run with plain ONNX Runtime (node, web, python),
 * no emosllm code needed:
 *
 *   manifest.json   labels, audio settings, the prompt's token ids and the candidate answers (for the stages)
 *   model.onnx      audio [1, samples] (16 kHz mono, [-1, 1]) -> probabilities [1, C], scores [1, C]:
 *                   encoder (fbank graph, or the HF encoder with its waveform normalisation), QPMapper, the LLM
 *                   with LoRA merged (or its trained weights), and the label-scoring head, in one graph
 *   encoder.onnx    audio [1, samples] -> hidden_states [L, 1, T, D] (the mapper's layers)
 *   mapper.onnx     hidden_states [L, 1, T, D] -> audio_tokens [1, n_q, H] (feature normalisation included)
 *   llm.onnx        audio_tokens, prompt_ids [1, P], first_targets [C], answer_ids [C, A], answer_next [C, A]
 *                   -> scores [C], probabilities [C]   (any label set / prompt, e.g. with a transcript)
 *
 * The graphs are built by the same functions the toolkit trains and predicts with, with the trained
 * parameters as constants, so `emosllm predict` and the export agree to float rounding.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Graph, type Value } from '../graph/ir.ts';
import { concat, constant, fill, reshape, runtimeShape, slice, unsqueeze } from '../graph/ops.ts';
import { EmoSLLM, scoreLabels } from '../models/emosllm.ts';
import { loadSpeechEncoder } from '../models/encoder.ts';
import { builtinEncoderGraph, hfEncoderGraph } from '../models/frame-encoders.ts';
import { LlamaModel } from '../models/llama.ts';
import { answerTensors } from '../models/processor.ts';
import { loadAdapter, mergeLora } from '../models/lora.ts';
import { buildQPMapper, qpmapperParamShapes } from '../models/qpmapper.ts';
import { writeFileAtomic } from '../util/fs.ts';
import { EXPORT_FORMAT, type ExportManifest, parseManifest } from './manifest.ts';
import { writeOnnxFile } from './onnx-file.ts';

/** The LLM with its trained weights as constants: LoRA merged (as PEFT merges), or the full fine-tune's tensors. */
function adaptedLlm(m: EmoSLLM, modelDir: string): LlamaModel {
  let overrides: Map<string, Float32Array> | undefined;
  if (m.spec.llmTrain === 'lora') overrides = mergeLora(m.llm.weights, loadAdapter(path.join(modelDir, 'adapter')), m.llm.linearModules());
  else if (m.spec.llmTrain === 'full') overrides = new Map(m.paramNames.filter((k) => k.startsWith('llm.')).map((k) => [k.slice(4), m.params[k]]));
  return new LlamaModel(m.llm.config, m.llm.weights, { overrides });
}

/** Encoder states in a graph: the mapper's layers, each [1, T, D], from audio [1, S]. */
function encoderGraph(m: EmoSLLM, modelDir: string, audio: Value): Value[] {
  const spec = m.spec.encoder;
  if (spec.kind === 'fbank') return [builtinEncoderGraph(audio, spec)];
  const out = hfEncoderGraph(audio, loadSpeechEncoder(path.resolve(modelDir, spec.path)));
  return m.spec.encoderLayers.map((l) => out.hiddenStates[l]);
}

function mapperConstants(g: Graph, m: EmoSLLM): Record<string, Value> {
  const p: Record<string, Value> = {};
  for (const [n, shape] of qpmapperParamShapes(m.mapperConfig)) p[n] = g.constant(m.params[`mapper.${n}`], shape, 'float32', `qpmapper.${n}`);
  return p;
}

/** [L, 1, T, D] from the per-layer [1, T, D] states. */
const stackLayers = (states: Value[]) => concat(states.map((s) => unsqueeze(s, [0])), 0);

/** A frame mask of ones [1, T] for hidden states [L, 1, T, D]. */
const onesMask = (hs: Value) => fill(slice(runtimeShape(hs), [1], [3], [0]), [1, hs.shape[2]], 1, 'int64');

export interface ExportOptions {
  stages?: boolean;
  /** int8 weights for the LLM's linear layers (quantize.ts) */
  quantize?: 'int8';
  windowSeconds?: number;
  hopSeconds?: number;
  log?: (line: string) => void;
}

export async function exportModel(modelDir: string, outDir: string, o: ExportOptions = {}): Promise<ExportManifest> {
  const log = o.log ?? ((l: string) => console.error(l));
  const m = EmoSLLM.load(modelDir);
  try {
    fs.mkdirSync(outDir, { recursive: true });
    const llm = adaptedLlm(m, modelDir);
    const prompt = m.prompt();
    const promptIds = prompt.promptIds();
    const ans = answerTensors(prompt.answerIds);
    const ids = (t: { data: unknown }) => Array.from(t.data as BigInt64Array, Number);
    const C = m.labels.length;
    const A = ans.answer_ids.shape[1];
    const ansConst = (g: Graph) => ({
      first: g.constant(ans.first_targets.data, [C], 'int64', 'answers.first_targets'),
      ids: g.constant(ans.answer_ids.data, [C, A], 'int64', 'answers.answer_ids'),
      next: g.constant(ans.answer_next.data, [C, A], 'int64', 'answers.answer_next'),
    });

    // model.onnx: everything in one graph
    let external: string[];
    {
      const g = new Graph();
      const audio = g.input('audio', 'float32', [1, 'samples']);
      const hs = stackLayers(encoderGraph(m, modelDir, audio));
      const tokens = buildQPMapper(g, m.mapperConfig, mapperConstants(g, m), m.normalizeStates(hs), onesMask(hs));
      const a = ansConst(g);
      const p = g.constant(BigInt64Array.from(promptIds, BigInt), [1, promptIds.length], 'int64', 'prompt_ids');
      const { scores, probabilities } = scoreLabels(g, llm, tokens, p, a.first, a.ids, a.next);
      const r = writeOnnxFile({ probabilities: reshape(probabilities, [1, C]), scores: reshape(scores, [1, C]) }, path.join(outDir, 'model.onnx'), { graphName: 'emosllm', quantize: o.quantize });
      log(`export: model.onnx (${(r.bytes / 2 ** 20).toFixed(1)} MB${r.externalData.length ? ', external data' : ''}${r.quantized ? `, ${r.quantized.gemms} Gemms in int8` : ''})`);
      external = r.externalData;
    }
    if (o.stages ?? true) {
      {
        const g = new Graph();
        const audio = g.input('audio', 'float32', [1, 'samples']);
        writeOnnxFile({ hidden_states: stackLayers(encoderGraph(m, modelDir, audio)) }, path.join(outDir, 'encoder.onnx'), { graphName: 'emosllm-encoder' });
      }
      {
        const g = new Graph();
        const cfg = m.mapperConfig;
        const hs = g.input('hidden_states', 'float32', [cfg.numHiddenStates, 1, 'frames', cfg.dIn]);
        writeOnnxFile({ audio_tokens: buildQPMapper(g, cfg, mapperConstants(g, m), m.normalizeStates(hs), onesMask(hs)) }, path.join(outDir, 'mapper.onnx'), { graphName: 'emosllm-mapper' });
      }
      {
        const g = new Graph();
        const tokens = g.input('audio_tokens', 'float32', [1, m.mapperConfig.nQueries, llm.config.hiddenSize]);
        const p = g.input('prompt_ids', 'int64', [1, 'P']);
        const first = g.input('first_targets', 'int64', ['C']);
        const aIds = g.input('answer_ids', 'int64', ['C', 'A']);
        const aNext = g.input('answer_next', 'int64', ['C', 'A']);
        writeOnnxFile(scoreLabels(g, llm, tokens, p, first, aIds, aNext), path.join(outDir, 'llm.onnx'), { graphName: 'emosllm-llm', quantize: o.quantize });
      }
      log('export: encoder.onnx, mapper.onnx, llm.onnx');
    }
    const manifest: ExportManifest = {
      format: EXPORT_FORMAT,
      labels: m.labels,
      sample_rate: 16000,
      window_seconds: o.windowSeconds ?? m.spec.audio.trainCropSeconds,
      hop_seconds: o.hopSeconds ?? (o.windowSeconds ?? m.spec.audio.trainCropSeconds) / 2,
      max_seconds: m.mapperConfig.tMax / m.frameRate,
      model: 'model.onnx',
      ...(external.length ? { external_data: external } : {}),
      ...((o.stages ?? true) ? { stages: { encoder: 'encoder.onnx', mapper: 'mapper.onnx', llm: 'llm.onnx' } } : {}),
      n_queries: m.mapperConfig.nQueries,
      prompt_ids: promptIds,
      answers: {
        first_targets: ids(ans.first_targets),
        answer_ids: chunk(ids(ans.answer_ids), A),
        answer_next: chunk(ids(ans.answer_next), A),
      },
      ...(o.quantize ? { quantization: o.quantize } : {}),
    };
    parseManifest(manifest, path.join(outDir, 'manifest.json')); // the writer keeps the contract its readers check
    writeFileAtomic(path.join(outDir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    return manifest;
  } finally {
    await m.release();
  }
}

const chunk = (xs: number[], n: number) => Array.from({ length: xs.length / n }, (_, i) => xs.slice(i * n, (i + 1) * n));
