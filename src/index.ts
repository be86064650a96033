/**
 * The programmatic API of emosllm (`import { ... } from 'emosllm'`): the functions the CLI commands run, so a
 * program gets exactly what `emosllm train`, `eval` and `predict` do. This file is the package's entry point,
 * above every layer (it may import from any; nothing in src/ imports it, see .dependency-cruiser.cjs).
 *
 *   const model = EmoSLLM.load('runs/emodb');                               // a trained model folder
 *   const p = await predictSamples(model, await loadAudio16k('a.wav'));     // label, probabilities, timeline
 *   await model.release();                                                  // frees its ONNX Runtime sessions
 *   await train(defaultTrainConfig({ data: 'corpus/' }), 'runs/mine');      // the run folder is the model
 *   const { metrics } = await runEval({ model: 'runs/mine', data: 'test/', out: 'runs/mine-eval' });
 */
export { loadAudio16k, type Load16kOptions } from './audio/decode.ts';
export type { SegmentMode } from './audio/segments.ts';
export { EmoSLLM, type EmoSLLMSpec, type ScoreResult } from './models/emosllm.ts';
export { predictSamples, type ClipPrediction, type PredictOptions, type Segment } from './eval/predict.ts';
export { runEval, type RunEvalOptions } from './eval/run.ts';
export type { EvalResult, Prediction } from './eval/evaluate.ts';
export type { ClassMetrics, Metrics } from './eval/metrics.ts';
export { defaultTrainConfig, readTrainConfig, TrainConfigSchema, type TrainConfig, type TrainConfigInput } from './train/config.ts';
export { train, type TrainHooks, type TrainProgress, type TrainResult } from './train/trainer.ts';
export { UserError } from './util/errors.ts';
