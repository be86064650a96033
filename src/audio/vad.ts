/**
 * Energy-based speech segmentation: frame RMS in dB against a threshold relative to the loudest frame, then
 * hysteresis by duration (short gaps bridged, short blips dropped). Good enough to trim leading/trailing silence
 * and split long recordings at pauses; not a substitute for a trained VAD on noisy audio.
 */

export interface SpeechSegment {
  startS: number;
  endS: number;
}

export interface SegmentOptions {
  sampleRate: number;
  /** Analysis frame and hop (default 25 ms / 10 ms). */
  frameS?: number;
  hopS?: number;
  /** A frame is speech when its RMS is within this many dB of the loudest frame (default -35 dB). */
  thresholdDb?: number;
  /** Frames quieter than this absolute level (dBFS) are never speech (default -60). */
  floorDb?: number;
  /** Speech runs shorter than this are dropped (default 0.15 s). */
  minSpeechS?: number;
  /** Silences shorter than this between speech are bridged (default 0.3 s). */
  minSilenceS?: number;
  /** Padding added around each segment (default 0.05 s), clipped to the signal. */
  padS?: number;
}

/** Frame RMS levels in dBFS (1.0 full scale). */
export function frameRmsDb(x: Float32Array, frame: number, hop: number): Float64Array {
  const nFrames = x.length <= frame ? 1 : 1 + Math.ceil((x.length - frame) / hop);
  const out = new Float64Array(nFrames);
  for (let f = 0; f < nFrames; f++) {
    const s = f * hop;
    const e = Math.min(x.length, s + frame);
    let acc = 0;
    for (let i = s; i < e; i++) acc += x[i]! * x[i]!;
    const rms = e > s ? Math.sqrt(acc / (e - s)) : 0;
    out[f] = 20 * Math.log10(rms + 1e-12);
  }
  return out;
}

export function speechSegments(x: Float32Array, opts: SegmentOptions): SpeechSegment[] {
  const sr = opts.sampleRate;
  if (!(sr > 0)) throw new RangeError(`sampleRate must be positive, got ${sr}`);
  const frame = Math.max(1, Math.round((opts.frameS ?? 0.025) * sr));
  const hop = Math.max(1, Math.round((opts.hopS ?? 0.01) * sr));
  const thresholdDb = opts.thresholdDb ?? -35;
  const floorDb = opts.floorDb ?? -60;
  const minSpeech = opts.minSpeechS ?? 0.15;
  const minSilence = opts.minSilenceS ?? 0.3;
  const pad = opts.padS ?? 0.05;
  if (x.length === 0) return [];
  const db = frameRmsDb(x, frame, hop);
  let max = -Infinity;
  for (const v of db) max = Math.max(max, v);
  const thr = Math.max(max + thresholdDb, floorDb);
  const durS = x.length / sr;
  // Runs of active frames, as [startS, endS).
  let runs: SpeechSegment[] = [];
  let runStart = -1;
  for (let f = 0; f <= db.length; f++) {
    const active = f < db.length && db[f]! > thr;
    if (active && runStart < 0) runStart = f;
    if (!active && runStart >= 0) {
      runs.push({ startS: (runStart * hop) / sr, endS: Math.min(durS, ((f - 1) * hop + frame) / sr) });
      runStart = -1;
    }
  }
  // Bridge short silences first (so a word split by a stop consonant stays whole), then drop short blips.
  const merged: SpeechSegment[] = [];
  for (const r of runs) {
    const prev = merged[merged.length - 1];
    if (prev && r.startS - prev.endS < minSilence) prev.endS = r.endS;
    else merged.push({ ...r });
  }
  runs = merged.filter((r) => r.endS - r.startS >= minSpeech);
  const out: SpeechSegment[] = [];
  for (const r of runs) {
    const s = { startS: Math.max(0, r.startS - pad), endS: Math.min(durS, r.endS + pad) };
    const prev = out[out.length - 1];
    if (prev && s.startS <= prev.endS) prev.endS = s.endS;
    else out.push(s);
  }
  return out;
}
