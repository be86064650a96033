/**
 * The export format read by the browser demo (written by `emosllm export`), "emosllm-onnx/1":
 *
 *   manifest.json  {"format": "emosllm-onnx/1", "labels": [...], "sample_rate": 16000, "window_seconds": 3,
 *                   "hop_seconds": 1.5, "model": "model.onnx", "external_data": ["model.onnx.data"]?}
 *   model.onnx     input "audio": float32 [1, samples] (16 kHz mono in [-1, 1], 0.025 s .. max_seconds);
 *                  outputs "probabilities" and "scores": float32 [1, labels.length].
 *
 * Pure (no DOM, no Node APIs): the page and the Node tests both use it.
 */

import { MIN_INPUT_SECONDS } from '../../src/audio/segments.ts';

export const EXPORT_FORMAT = 'emosllm-onnx/1';
export const INPUT_NAME = 'audio';
export const OUTPUT_PROBABILITIES = 'probabilities';
export const OUTPUT_SCORES = 'scores';

export interface ExportManifest {
  format: typeof EXPORT_FORMAT;
  labels: string[];
  sample_rate: number;
  window_seconds: number;
  hop_seconds: number;
  /** Model file name, relative to the manifest. */
  model: string;
  /** External data files the model references, relative to the manifest (absent when weights are inline). */
  external_data?: string[];
}

/** A plain relative file name inside the export folder (no "..", no absolute paths, no URLs). */
function checkRelative(name: string, what: string): string {
  if (typeof name !== 'string' || name === '') throw new Error(`manifest.json: ${what} must be a non-empty file name`);
  if (/^[a-z][a-z0-9+.-]*:/i.test(name) || name.startsWith('/') || name.split(/[\\/]/).some((p) => p === '..' || p === '')) {
    throw new Error(`manifest.json: ${what} must be a file name inside the export folder, got ${JSON.stringify(name)}`);
  }
  return name;
}

/** Validates a parsed manifest.json; throws a one-line message naming the bad field. */
export function parseManifest(json: unknown): ExportManifest {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error('manifest.json: not a JSON object');
  const m = json as Record<string, unknown>;
  if (m.format !== EXPORT_FORMAT) {
    throw new Error(`manifest.json: format must be "${EXPORT_FORMAT}", got ${JSON.stringify(m.format)}`);
  }
  const labels = m.labels;
  if (!Array.isArray(labels) || labels.length < 1 || !labels.every((l) => typeof l === 'string' && l !== '')) {
    throw new Error('manifest.json: labels must be a non-empty list of names');
  }
  if (new Set(labels).size !== labels.length) throw new Error('manifest.json: labels contain duplicates');
  const num = (k: string): number => {
    const v = m[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new Error(`manifest.json: ${k} must be a positive number, got ${JSON.stringify(v)}`);
    return v;
  };
  const sampleRate = num('sample_rate');
  if (!Number.isInteger(sampleRate)) throw new Error(`manifest.json: sample_rate must be an integer, got ${sampleRate}`);
  const windowS = num('window_seconds');
  const hopS = num('hop_seconds');
  if (hopS > windowS) throw new Error(`manifest.json: hop_seconds (${hopS}) is longer than window_seconds (${windowS})`);
  if (windowS < MIN_INPUT_SECONDS) throw new Error(`manifest.json: window_seconds (${windowS}) is below the ${MIN_INPUT_SECONDS} s minimum input`);
  const model = checkRelative(m.model as string, 'model');
  let external: string[] | undefined;
  if (m.external_data !== undefined) {
    if (!Array.isArray(m.external_data)) throw new Error('manifest.json: external_data must be a list of file names');
    external = m.external_data.map((f, i) => checkRelative(f as string, `external_data[${i}]`));
  }
  return {
    format: EXPORT_FORMAT,
    labels: [...(labels as string[])],
    sample_rate: sampleRate,
    window_seconds: windowS,
    hop_seconds: hopS,
    model,
    ...(external ? { external_data: external } : {}),
  };
}

/** Every file the export folder must hold, manifest first. */
export const exportFiles = (m: ExportManifest): string[] => ['manifest.json', m.model, ...(m.external_data ?? [])];
