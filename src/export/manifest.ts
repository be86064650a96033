/**
 * The export format, "emosllm-onnx/1": one schema for the writer (`emosllm export`) and every reader (the web
 * page, Node tests). Pure (zod only, no DOM, no Node APIs), so the page bundles it.
 *
 *   manifest.json  this schema; every file it names is relative to it, inside the export folder
 *   model.onnx     input "audio": float32 [1, samples] (16 kHz mono in [-1, 1], MIN_INPUT_SECONDS .. max_seconds);
 *                  outputs "probabilities" and "scores": float32 [1, labels.length]
 *
 * The manifest is meant to be published beside the model: it carries no local path.
 */
import * as z from 'zod';
import { MIN_INPUT_SECONDS } from '../audio/segments.ts';
import { parseOrThrow } from '../util/schema.ts';

export const EXPORT_FORMAT = 'emosllm-onnx/1';
export const INPUT_NAME = 'audio';
export const OUTPUT_PROBABILITIES = 'probabilities';
export const OUTPUT_SCORES = 'scores';

/** A plain file name inside the export folder: no "..", no absolute path, no URL. */
const fileInFolder = z
  .string()
  .min(1)
  .refine((n) => !/^[a-z][a-z0-9+.-]*:/i.test(n) && !n.startsWith('/') && !n.split(/[\\/]/).some((p) => p === '..' || p === ''), {
    message: 'must be a file name inside the export folder',
  });

const tokenIds = z.array(z.number().int().nonnegative());

export const ExportManifestSchema = z
  .object({
    format: z.literal(EXPORT_FORMAT),
    labels: z
      .array(z.string().min(1))
      .min(1)
      .refine((l) => new Set(l).size === l.length, { message: 'labels contain duplicates' }),
    sample_rate: z.number().int().positive(),
    window_seconds: z.number().min(MIN_INPUT_SECONDS),
    hop_seconds: z.number().positive(),
    /** longest audio model.onnx accepts (the mapper's t_max) */
    max_seconds: z.number().positive(),
    model: fileInFolder,
    /** external data files the model references (absent when weights are inline) */
    external_data: z.array(fileInFolder).optional(),
    /** the same model as three graphs (encoder, mapper, LLM scoring), for runtimes that want them apart */
    stages: z.object({ encoder: fileInFolder, mapper: fileInFolder, llm: fileInFolder }).optional(),
    n_queries: z.number().int().positive(),
    prompt_ids: tokenIds,
    // answer_next holds the ignore index (-100) after a label's last token
    answers: z.object({ first_targets: tokenIds, answer_ids: z.array(tokenIds), answer_next: z.array(z.array(z.number().int())) }),
    /** 'int8' when the LLM's weights were quantised */
    quantization: z.literal('int8').optional(),
  })
  .refine((m) => m.hop_seconds <= m.window_seconds, { message: 'hop_seconds is longer than window_seconds', path: ['hop_seconds'] });

export type ExportManifest = z.infer<typeof ExportManifestSchema>;

/** Validates a parsed manifest.json; a one-line error names the bad field. */
export function parseManifest(json: unknown, where = 'manifest.json'): ExportManifest {
  return parseOrThrow(ExportManifestSchema, json, where);
}

/** Every file the export folder must hold, manifest first. */
export const exportFiles = (m: ExportManifest): string[] => ['manifest.json', m.model, ...(m.external_data ?? [])];
