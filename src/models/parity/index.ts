/**
 * `emosllm parity DIR`: runs our implementation on every fixture folder laid out like
 * ../shared/fixtures/hf-parity (see its README.md) and compares every stored output.
 * Folder kinds are recognised by their files, not their names, so other seeds and sizes work too.
 */
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../../util/errors.ts';
import { type ParityRow, notCovered } from './compare.ts';
import { checkEncoderFolder } from './encoders.ts';
import { type ParityOptimizerFactory, checkLlamaFolder, checkLoraFolder, checkLoraGradFolder } from './llama.ts';
import { checkQPMapperFolder } from './qpmapper.ts';

export type FolderKind = 'encoder' | 'llama' | 'lora' | 'lora_grad' | 'qpmapper' | 'unknown';

export function folderKind(dir: string): FolderKind {
  const has = (f: string) => fs.existsSync(path.join(dir, f));
  if (!has('expected.safetensors')) return 'unknown';
  if (has('train_config.json')) return 'lora_grad';
  if (has('adapter_config.json')) return 'lora';
  if (!has('config.json')) return 'unknown';
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  } catch {
    throw new UserError('config.json is not valid JSON', path.join(dir, 'config.json'));
  }
  if (cfg.n_queries !== undefined) return 'qpmapper';
  const mt = cfg.model_type;
  if (mt === 'llama') return 'llama';
  if (mt === 'wav2vec2' || mt === 'hubert' || mt === 'wavlm') return 'encoder';
  return 'unknown';
}

export interface ParityOptions {
  only?: string[];
  log?: (row: ParityRow) => void;
  /** the optimiser a training-step folder checks (train/ is above models/: the CLI passes AdamW) */
  optimizer?: ParityOptimizerFactory;
}

export async function runParity(root: string, opts: ParityOptions = {}): Promise<ParityRow[]> {
  if (!fs.existsSync(root) || !fs.statSync(root).isDirectory()) throw new UserError('not a directory', root);
  const all = fs
    .readdirSync(root)
    .filter((f) => fs.statSync(path.join(root, f)).isDirectory())
    .sort();
  const unknown = opts.only?.filter((f) => !all.includes(f)) ?? [];
  if (unknown.length) throw new UserError(`no fixture folder ${unknown.map((f) => JSON.stringify(f)).join(', ')} (folders: ${all.join(', ') || 'none'})`, root);
  const folders = all.filter((f) => !opts.only || opts.only.includes(f));
  if (folders.length === 0) throw new UserError('no fixture folders to check', root);
  const rows: ParityRow[] = [];
  for (const name of folders) {
    const dir = path.join(root, name);
    const kind = folderKind(dir);
    let out: ParityRow[];
    switch (kind) {
      case 'encoder':
        out = await checkEncoderFolder(dir, name);
        break;
      case 'llama':
        out = await checkLlamaFolder(dir, name);
        break;
      case 'lora':
        out = await checkLoraFolder(dir, name);
        break;
      case 'lora_grad':
        out = await checkLoraGradFolder(dir, name, {}, opts.optimizer);
        break;
      case 'qpmapper':
        out = await checkQPMapperFolder(dir, name);
        break;
      default:
        out = [notCovered(name, 'unrecognised folder')];
    }
    for (const r of out) opts.log?.(r);
    rows.push(...out);
  }
  return rows;
}
