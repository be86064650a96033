/** Fixed-length crops and sliding windows over a mono waveform. */

/** Anything with a uniform integer draw (src/util/rng.ts `Rng` satisfies it). */
export interface IntRng {
  int(n: number): number;
}

export interface Crop {
  /** Exactly `lengthSamples` long; zero-padded at the end when the input is shorter. */
  samples: Float32Array;
  /** Offset of the crop in the input. */
  start: number;
  /** Samples [0, validLength) are real audio, the rest padding (for the attention mask / normalisation). */
  validLength: number;
}

function checkLength(lengthSamples: number): void {
  if (!Number.isInteger(lengthSamples) || lengthSamples < 1) throw new RangeError(`crop length must be a positive integer, got ${lengthSamples}`);
}

function cropAt(x: Float32Array, start: number, length: number): Crop {
  const out = new Float32Array(length);
  const valid = Math.min(length, x.length - start);
  out.set(x.subarray(start, start + valid));
  return { samples: out, start, validLength: valid };
}

/** A crop at a uniformly random offset (every offset equally likely); shorter inputs are zero-padded. */
export function randomCrop(x: Float32Array, lengthSamples: number, rng: IntRng): Crop {
  checkLength(lengthSamples);
  const start = x.length > lengthSamples ? rng.int(x.length - lengthSamples + 1) : 0;
  return cropAt(x, start, lengthSamples);
}

/** The middle `lengthSamples` (deterministic, for evaluation); shorter inputs are zero-padded. */
export function centerCrop(x: Float32Array, lengthSamples: number): Crop {
  checkLength(lengthSamples);
  const start = x.length > lengthSamples ? Math.floor((x.length - lengthSamples) / 2) : 0;
  return cropAt(x, start, lengthSamples);
}

export interface Window {
  /** First sample (inclusive) and end (exclusive) in the input; `end - start` is the valid length. */
  start: number;
  end: number;
  samples: Float32Array;
}

export interface WindowOptions {
  windowS: number;
  hopS: number;
  sampleRate: number;
  /**
   * How the final window is handled when the signal does not end on the hop grid:
   * 'shorter' (default): the last window stops at the signal end and is shorter than the others (no padding,
   *   so padding never dilutes pooled predictions);
   * 'pad': the last window is zero-padded to full length (`end` still marks the real audio);
   * 'shift': the last window is moved back to end exactly at the signal end (full length, more overlap).
   */
  last?: 'shorter' | 'pad' | 'shift';
}

/**
 * Windows starting at 0, hop, 2*hop, ... until one reaches the end, so every sample is covered. A signal shorter
 * than one window gives a single window. 'shorter' windows are views into `x` (no copy).
 */
export function slidingWindows(x: Float32Array, opts: WindowOptions): Window[] {
  const { windowS, hopS, sampleRate } = opts;
  const last = opts.last ?? 'shorter';
  if (!(sampleRate > 0)) throw new RangeError(`sampleRate must be positive, got ${sampleRate}`);
  const win = Math.round(windowS * sampleRate);
  const hop = Math.round(hopS * sampleRate);
  if (!(win >= 1)) throw new RangeError(`window ${windowS} s is shorter than one sample`);
  if (!(hop >= 1)) throw new RangeError(`hop ${hopS} s is shorter than one sample`);
  if (hop > win) throw new RangeError(`hop (${hopS} s) longer than the window (${windowS} s) would leave gaps`);
  const n = x.length;
  const out: Window[] = [];
  if (n === 0) return out;
  for (let start = 0; ; start += hop) {
    const end = Math.min(n, start + win);
    if (end - start === win || last === 'shorter') {
      out.push({ start, end, samples: x.subarray(start, end) });
    } else if (last === 'pad') {
      const s = new Float32Array(win);
      s.set(x.subarray(start, end));
      out.push({ start, end, samples: s });
    } else {
      const s0 = Math.max(0, n - win);
      // Skip a shifted window identical to the previous one.
      if (!out.length || out[out.length - 1]!.start !== s0) out.push({ start: s0, end: n, samples: x.subarray(s0, n) });
    }
    if (end >= n) break;
  }
  return out;
}
