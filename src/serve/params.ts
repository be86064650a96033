/**
 * Request options of POST /v1/emotion (query parameters of a raw body, or the fields of a multipart form),
 * validated into PredictOptions before the request queues. Every problem is an HttpError 400 with one line.
 */
import { SEGMENT_MODES, type SegmentMode } from '../audio/segments.ts';
import type { PredictOptions } from '../eval/predict.ts';
import type { EmoSLLM } from '../models/emosllm.ts';
import { UserError, oneLine } from '../util/errors.ts';
import { HttpError } from './errors.ts';

export const PARAM_NAMES = ['transcript', 'labels', 'segment', 'window', 'hop'] as const;

/** Bounds on request options (reported by GET /v1/model). */
export const PARAM_LIMITS = {
  maxLabels: 64,
  maxLabelChars: 64,
  maxTranscriptChars: 2000,
  minWindowSeconds: 0.1,
  maxWindowSeconds: 60,
  minHopSeconds: 0.1,
} as const;

const bad = (message: string) => new HttpError(400, 'bad_parameter', message);

function seconds(name: string, v: string, min: number, max: number): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw bad(`${name} must be a number of seconds, got ${JSON.stringify(v)}`);
  if (n < min || n > max) throw bad(`${name} must be between ${min} and ${max} seconds, got ${n}`);
  return n;
}

/**
 * PredictOptions from raw request options. `raw` maps names to a string (a repeated query parameter arrives
 * as an array and is refused); unknown names are refused too, so a typo never silently changes nothing.
 */
export function parseParams(raw: Record<string, unknown>, model: EmoSLLM): PredictOptions {
  const v: Partial<Record<(typeof PARAM_NAMES)[number], string>> = {};
  for (const [k, x] of Object.entries(raw)) {
    if (!(PARAM_NAMES as readonly string[]).includes(k)) throw bad(`unknown parameter ${JSON.stringify(k)} (known: ${PARAM_NAMES.join(', ')})`);
    if (typeof x !== 'string') throw bad(`parameter ${k} must be given once, as a string`);
    v[k as (typeof PARAM_NAMES)[number]] = x;
  }
  const o: PredictOptions = {};
  if (v.segment !== undefined) {
    if (!SEGMENT_MODES.includes(v.segment as SegmentMode)) throw bad(`segment must be one of ${SEGMENT_MODES.join(', ')}, got ${JSON.stringify(v.segment)}`);
    o.segment = v.segment as SegmentMode;
  }
  if (v.window !== undefined) o.windowSeconds = seconds('window', v.window, PARAM_LIMITS.minWindowSeconds, PARAM_LIMITS.maxWindowSeconds);
  if (v.hop !== undefined) {
    const win = o.windowSeconds ?? model.spec.audio.trainCropSeconds;
    o.hopSeconds = seconds('hop', v.hop, PARAM_LIMITS.minHopSeconds, win);
  }
  if (v.transcript !== undefined) {
    if (v.transcript.length > PARAM_LIMITS.maxTranscriptChars) throw bad(`transcript is ${v.transcript.length} characters, over the ${PARAM_LIMITS.maxTranscriptChars}-character limit`);
    if (v.transcript.trim()) o.transcript = v.transcript;
  }
  if (v.labels !== undefined) {
    const labels = v.labels.split(',').map((s) => s.trim());
    if (labels.some((l) => !l)) throw bad(`labels must be a comma-separated list of non-empty labels, got ${JSON.stringify(v.labels)}`);
    if (labels.length < 2) throw bad(`labels must name at least two labels, got ${JSON.stringify(v.labels)}`);
    if (labels.length > PARAM_LIMITS.maxLabels) throw bad(`labels names ${labels.length} labels, over the limit of ${PARAM_LIMITS.maxLabels}`);
    const long = labels.find((l) => l.length > PARAM_LIMITS.maxLabelChars);
    if (long) throw bad(`label ${JSON.stringify(long.slice(0, 20) + '...')} is over ${PARAM_LIMITS.maxLabelChars} characters`);
    const dup = labels.find((l, i) => labels.indexOf(l) !== i);
    if (dup) throw bad(`label ${JSON.stringify(dup)} is listed twice`);
    try {
      model.prompt(labels); // the tokeniser's checks: labels whose answers cannot be told apart, etc.
    } catch (e) {
      if (!(e instanceof UserError)) throw e;
      throw bad(`bad label set: ${oneLine(e)}`);
    }
    o.labels = labels;
  }
  return o;
}
