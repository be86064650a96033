/** Shared helpers for benchmarks: timing with warm-up, medians, peak RSS, JSON output. */
import fs from 'node:fs';

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Runs `fn` `warmup` times, then `runs` timed times; returns per-run milliseconds. */
export async function timeit(fn: () => Promise<unknown>, runs = 5, warmup = 1): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn();
  const out: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await fn();
    out.push(performance.now() - t0);
  }
  return out;
}

/** Peak resident set size of this process so far (VmHWM), in MB. */
export function peakRssMb(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) / 1024;
  } catch {
    // not Linux
  }
  return process.memoryUsage().rss / 1024 / 1024;
}

export const log = (...args: unknown[]) => console.error('[bench]', ...args);

export const round = (x: number, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;

export function randomArray(n: number, scale: number, seed = 1): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 4294967296 - 0.5) * 2 * scale;
  }
  return out;
}

/** Current resident set size in MB: total (VmRSS), anonymous memory and mapped files (0 when not on Linux). */
export function rssMb(): { total: number; anon: number; file: number } {
  try {
    const st = fs.readFileSync('/proc/self/status', 'utf8');
    const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(st)?.[1] ?? 0) / 1024;
    return { total: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile') };
  } catch {
    return { total: process.memoryUsage().rss / 1024 / 1024, anon: 0, file: 0 };
  }
}

/**
 * Fills `out` with uniform values in [-scale, scale) from a xorshift32 stream whose state is `state`; returns the
 * next state, so a long tensor can be filled chunk by chunk with the same values as in one go.
 */
export function fillRandom(out: Float32Array, scale: number, state: number): number {
  let s = state >>> 0 || 1;
  const k = scale / 2147483648;
  for (let i = 0; i < out.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = (s | 0) * k;
  }
  return s >>> 0;
}
