/**
 * Prediction on audio of any length with a trained model: the shared segmenting and aggregation
 * (src/audio/segments.ts, also used by the server and the browser page) with the model's encoder and label
 * scoring, giving the clip's label, probabilities and timeline {start, end, label, probabilities}.
 *
 * Group normalisation (models/normalize.ts): 'recording' normalises every segment with the statistics of all the
 * recording's segments (each is encoded once, before the first is scored); 'speaker' with a speaker's statistics,
 * which the caller gathers with gatherSpeakerStats (`predict` takes every file of the call as one speaker's).
 */
import { type SegmentOptions, scoreTimeline, segmentRanges } from '../audio/segments.ts';
import type { EmoSLLM } from '../models/emosllm.ts';
import { type ChannelStats, FrameStats, type NormalizeMode, functionalGroupStats } from '../models/normalize.ts';
import type { ClipStates } from '../models/processor.ts';
import { UserError } from '../util/errors.ts';

export interface PredictOptions extends SegmentOptions {
  transcript?: string;
  labels?: string[];
  /** group normalisation (default: the model's own, emosllm.json "normalize") */
  normalize?: NormalizeMode;
  /** 'speaker': the speaker's statistics (gatherSpeakerStats) */
  speakerStats?: SpeakerStats;
  /** checked before every segment: an aborted prediction stops there (a server's timeouts) */
  signal?: AbortSignal;
}

export interface Segment {
  start: number;
  end: number;
  label: string;
  probabilities: Record<string, number>;
}

export interface ClipPrediction {
  label: string;
  probabilities: Record<string, number>;
  /** audio duration */
  seconds: number;
  segments: Segment[];
}

const SR = 16000;

/** Windows default to the model's training crop. */
const segmentOptions = (model: EmoSLLM, o: PredictOptions) => ({ ...o, windowSeconds: o.windowSeconds ?? model.spec.audio.trainCropSeconds });

/** The encoder states of every segment predictSamples scores, keyed by the segment's first sample. */
async function segmentStates(model: EmoSLLM, samples: Float32Array, o: PredictOptions): Promise<Map<number, ClipStates>> {
  const out = new Map<number, ClipStates>();
  for (const [a, b] of segmentRanges(samples, SR, segmentOptions(model, o))) {
    o.signal?.throwIfAborted();
    out.set(a, (await model.encode([samples.subarray(a, b)]))[0]!);
  }
  return out;
}

/** A speaker's statistics: of the encoder states, and of the stat token's inputs (models/normalize.ts). */
export interface SpeakerStats {
  frames: ChannelStats;
  /** absent for a mapper without a stat token, or too few segments */
  functionals?: ChannelStats;
}

const newFrameStats = (model: EmoSLLM) => new FrameStats(model.mapperConfig.numHiddenStates, model.mapperConfig.dIn);

/**
 * One speaker's statistics over their recordings, each cut into the segments predictSamples scores. Two passes
 * (`recordings` is called once per pass, so long audio is never all in memory): the encoder states' statistics,
 * then those of the stat token's inputs of the segments normalised with them.
 */
export async function gatherSpeakerStats(model: EmoSLLM, recordings: () => AsyncIterable<Float32Array>, o: PredictOptions = {}): Promise<SpeakerStats> {
  const stats = newFrameStats(model);
  for await (const samples of recordings()) for (const s of (await segmentStates(model, samples, o)).values()) stats.add(s);
  const frames = stats.result();
  if (!model.mapperConfig.statChannels) return { frames };
  const rows: Float32Array[] = [];
  for await (const samples of recordings())
    rows.push(...(await model.clipFunctionals([...(await segmentStates(model, samples, o)).values()].map((s) => model.normalizeGroup(s, frames)))));
  return { frames, functionals: functionalGroupStats(rows) };
}

/** Label, probabilities and timeline for 16 kHz mono samples. */
export async function predictSamples(model: EmoSLLM, samples: Float32Array, o: PredictOptions = {}): Promise<ClipPrediction> {
  const labels = o.labels ?? model.labels;
  const byLabel = (ps: number[]) => Object.fromEntries(labels.map((l, i) => [l, ps[i]!]));
  const mode = o.normalize ?? model.normalize;
  if (mode === 'speaker' && !o.speakerStats) throw new UserError("speaker normalisation needs the speaker's statistics (predict: all the files of the call are one speaker's)");
  // 'recording' needs every segment before the first is scored; the others encode as they go (long audio stays small)
  let recording: { states: Map<number, ClipStates>; stats: ChannelStats } | undefined;
  if (mode === 'recording') {
    const states = await segmentStates(model, samples, o);
    const g = newFrameStats(model);
    for (const s of states.values()) g.add(s);
    recording = { states, stats: g.result() };
  }
  const t = await scoreTimeline(samples, { ...segmentOptions(model, o), labels, sampleRate: SR }, async (piece) => {
    const start = piece.byteOffset / Float32Array.BYTES_PER_ELEMENT - samples.byteOffset / Float32Array.BYTES_PER_ELEMENT;
    let states = recording?.states.get(start) ?? (await model.encode([piece]))[0]!;
    if (recording) states = model.normalizeGroup(states, recording.stats);
    else if (mode === 'speaker') states = model.normalizeGroup(states, o.speakerStats!.frames, o.speakerStats!.functionals);
    return model.scoreStates(states, { transcript: o.transcript, labels });
  });
  return {
    label: t.label,
    probabilities: byLabel(t.probabilities),
    seconds: t.seconds,
    segments: t.segments.map((s) => ({ start: s.start, end: s.end, label: s.label, probabilities: byLabel(s.probabilities) })),
  };
}
