import { describe, expect, it } from 'vitest';
import { UserError } from '../util/errors.ts';
import { ClipTooShortError, type SegmentOptions, aggregate, argmax, checkClipDuration, scoreTimeline, segmentRanges } from './segments.ts';

const SR = 16000;
const ranges = (seconds: number, o: SegmentOptions = {}) => segmentRanges(new Float32Array(Math.round(seconds * SR)), SR, o).map(([a, b]) => [a / SR, b / SR]);

describe('segmentRanges', () => {
  it('auto: clips up to 10 s are one segment, longer ones 3 s windows with a 1.5 s hop', () => {
    expect(ranges(7)).toEqual([[0, 7]]);
    expect(ranges(10)).toEqual([[0, 10]]);
    const w = ranges(20);
    expect(w).toHaveLength(13); // starts 0, 1.5, ..., 18
    expect(w[0]).toEqual([0, 3]);
    expect(w[12]).toEqual([18, 20]);
    expect(ranges(10.5, { wholeMaxSeconds: 11 })).toEqual([[0, 10.5]]);
  });
  it('window: every sample is covered; the last window stops at the clip end', () => {
    expect(ranges(7, { segment: 'window' })).toEqual([[0, 3], [1.5, 4.5], [3, 6], [4.5, 7]]);
    expect(ranges(3.2, { segment: 'window' })).toEqual([[0, 3], [1.5, 3.2]]);
    expect(ranges(2, { segment: 'window' })).toEqual([[0, 2]]);
    expect(ranges(4, { segment: 'window', windowSeconds: 2, hopSeconds: 1 })).toEqual([[0, 2], [1, 3], [2, 4]]);
  });
  it('moves a last window below the 25 ms minimum back so it ends at the clip end', () => {
    expect(ranges(3.01, { segment: 'window', hopSeconds: 3 })).toEqual([[0, 3], [2.985, 3.01]]);
  });
  it('refuses a clip below 0.25 s as too short (its own error, code too_short) and bad window settings with a UserError', () => {
    for (const s of [1 / SR, 0.02, 0.249]) {
      expect(() => ranges(s)).toThrow(ClipTooShortError);
      expect(() => ranges(s)).toThrow(/too short: the audio is [\d.]+ ms long, the minimum is 250 ms/);
    }
    expect(() => checkClipDuration(1000 / 2, SR, 'x.wav')).toThrow(expect.objectContaining({ code: 'too_short', message: 'x.wav: too short: the audio is 31.3 ms long, the minimum is 250 ms' }));
    expect(new ClipTooShortError(0.1)).toBeInstanceOf(UserError);
    expect(ranges(0.25)).toEqual([[0, 0.25]]);
    expect(ranges(0.25, { segment: 'window' })).toEqual([[0, 0.25]]);
    expect(() => ranges(20, { hopSeconds: 4 })).toThrow(/hop/);
    expect(() => ranges(20, { windowSeconds: 0 })).toThrow(/> 0/);
    expect(() => ranges(20, { segment: 'sometimes' as never })).toThrow(/segment must be one of/);
  });
  it('vad: speech runs only, silence left out', () => {
    const x = new Float32Array(12 * SR);
    for (let i = 2 * SR; i < 4 * SR; i++) x[i] = 0.3 * Math.sin(i / 5);
    const r = segmentRanges(x, SR, { segment: 'vad' });
    expect(r).toHaveLength(1);
    expect(r[0]![0] / SR).toBeCloseTo(1.95, 1);
    expect(r[0]![1] / SR).toBeCloseTo(4.05, 1);
  });
});

describe('aggregation', () => {
  it('weights segments by their duration', () => {
    const segs = [
      { startSample: 0, endSample: 3, probabilities: [0.9, 0.1] },
      { startSample: 3, endSample: 4, probabilities: [0.1, 0.9] },
    ];
    const a = aggregate(segs, ['x', 'y']);
    expect(a.probabilities[0]).toBeCloseTo(0.7, 12);
    expect(a.probabilities[1]).toBeCloseTo(0.3, 12);
    expect(a.label).toBe('x');
    expect(aggregate([], ['x', 'y'])).toEqual({ probabilities: [0.5, 0.5], label: 'none' });
    expect(argmax([0.1, 0.7, 0.2])).toBe(1);
  });
  it('scoreTimeline scores each segment once, in order, and aggregates', async () => {
    const x = new Float32Array(20 * SR);
    const seen: number[] = [];
    const t = await scoreTimeline(x, { labels: ['a', 'b'], sampleRate: SR }, async (piece) => {
      seen.push(piece.length);
      return { probabilities: seen.length === 13 ? [0.2, 0.8] : [0.6, 0.4], scores: [seen.length, 0] };
    });
    expect(seen).toEqual([...Array(12).fill(3 * SR), 2 * SR]);
    expect(t.segments.map((s) => s.label)).toEqual([...Array(12).fill('a'), 'b']);
    expect(t.segments[12]).toMatchObject({ start: 18, end: 20, startSample: 18 * SR, endSample: 20 * SR, scores: [13, 0] });
    expect(t.probabilities[0]).toBeCloseTo((12 * 3 * 0.6 + 2 * 0.2) / 38, 12);
    expect(t.seconds).toBe(20);
    expect(t.label).toBe('a');
  });
  it('rejects a scorer whose outputs do not match the labels, and stops when aborted', async () => {
    await expect(scoreTimeline(new Float32Array(SR), { labels: ['a', 'b', 'c'], sampleRate: SR }, async () => ({ probabilities: [0.5, 0.5] }))).rejects.toThrow(/2 probabilities for 3 labels/);
    const ac = new AbortController();
    let calls = 0;
    const run = scoreTimeline(new Float32Array(20 * SR), { labels: ['a'], sampleRate: SR, signal: ac.signal }, async () => {
      if (++calls === 2) ac.abort();
      return { probabilities: [1] };
    });
    await expect(run).rejects.toThrow();
    expect(calls).toBe(2);
  });
});
