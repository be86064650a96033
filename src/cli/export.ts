import type { Command } from 'commander';
import { exportModel } from '../export/export.ts';
import { UserError } from '../util/errors.ts';
import { trainedModelFolder } from './hub.ts';

/** The options and action of `emosllm export` (its name and description are in commands.ts). */
export function defineExport(cmd: Command): void {
  cmd
    .argument('<model-dir|id>', 'a trained model folder, or a Hub id org/name[@rev] of one')
    .requiredOption('--onnx <dir>', 'output folder (model.onnx, encoder/mapper/llm.onnx, manifest.json)')
    .option('--no-stages', 'write only the all-in-one model.onnx')
    .option('--int8', "int8 weights for the LLM's linear layers (smaller and faster; probabilities change slightly)")
    .option('--window <s>', 'window length the manifest asks players to use for long audio (default: the training crop)')
    .option('--hop <s>', 'window hop (default half the window)')
    .action(async (dir: string, f: { onnx: string; stages: boolean; int8?: boolean; window?: string; hop?: string }) => {
      const sec = (name: string, v?: string) => {
        if (v === undefined) return undefined;
        const n = Number(v);
        if (!(n > 0)) throw new UserError(`${name} must be a positive number of seconds, got "${v}"`);
        return n;
      };
      const m = await exportModel(await trainedModelFolder(dir), f.onnx, { stages: f.stages, quantize: f.int8 ? 'int8' : undefined, windowSeconds: sec('--window', f.window), hopSeconds: sec('--hop', f.hop) });
      console.log(JSON.stringify({ out: f.onnx, labels: m.labels, model: m.model }));
    });
}
