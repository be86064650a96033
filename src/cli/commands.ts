import type { Command } from 'commander';

/**
 * A CLI command: what `emosllm --help` lists (name, description), and the module that defines its options and
 * action. The module is imported only when its command runs, so `--version` and `--help` load no model code
 * (nor ONNX Runtime) and start fast.
 */
export interface CliCommand {
  name: string;
  description: string;
  define: () => Promise<(cmd: Command) => void>;
}

/** Every CLI command, in the order `emosllm --help` lists them. Add new commands here. */
export const commands: CliCommand[] = [
  {
    name: 'train',
    description: 'train EmoSLLM (QPMapper + LoRA or LLM weights) on a labelled corpus; the run folder is the model',
    define: async () => (await import('./train.ts')).defineTrain,
  },
  {
    name: 'eval',
    description: 'evaluate a trained model on a labelled corpus: metrics.json, predictions.jsonl, report.html',
    define: async () => (await import('./eval.ts')).defineEval,
  },
  {
    name: 'cv',
    description: 'leave-one-speaker-out (or -session-out) cross-validation: train and evaluate one model per fold',
    define: async () => (await import('./eval.ts')).defineCv,
  },
  {
    name: 'predict',
    description: 'label audio files (any length: long audio gets a timeline of windows or speech segments)',
    define: async () => (await import('./predict.ts')).definePredict,
  },
  {
    name: 'serve',
    description: 'HTTP inference server: POST /v1/emotion (audio in, label + timeline out), GET /v1/model, GET /healthz',
    define: async () => (await import('./serve.ts')).defineServe,
  },
  {
    name: 'queue',
    description: 'archive-scale prediction on a Redis job queue (BullMQ): add files, status, collect results, retry-failed, drain',
    define: async () => (await import('./queue.ts')).defineQueue,
  },
  {
    name: 'worker',
    description: 'take prediction jobs from a Redis queue (emosllm queue add) and write results as JSON lines; any number, on any machine',
    define: async () => (await import('./queue.ts')).defineWorker,
  },
  {
    name: 'export',
    description: 'export a trained model as ONNX files that run with plain ONNX Runtime (node, web) and a manifest.json',
    define: async () => (await import('./export.ts')).defineExport,
  },
  {
    name: 'parity',
    description: 'compare our models with Hugging Face reference outputs in a fixtures folder (hf-parity layout); exits 1 on any FAIL or not-covered row',
    define: async () => (await import('./parity.ts')).defineParity,
  },
  {
    name: 'convert',
    description: 'rewrite a torch .bin checkpoint folder (or Hub id) as safetensors, every tensor as stored, so weights load in place',
    define: async () => (await import('./convert.ts')).defineConvert,
  },
  {
    name: 'data',
    description: 'inspect labelled speech corpora (manifests, EmoDB, RAVDESS, CREMA-D, TESS, IEMOCAP, MELD)',
    define: async () => (await import('./data.ts')).defineData,
  },
  {
    name: 'demo',
    description: 'synthesise a small labelled corpus (or use --data), train EmoSLLM (fbank + tiny LLM) on some speakers and evaluate it on others',
    define: async () => (await import('./demo.ts')).defineDemo,
  },
];
