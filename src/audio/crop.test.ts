import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { centerCrop, randomCrop, slidingWindows } from './crop.ts';
import { speechSegments } from './vad.ts';
import { decodeAudioFile } from './decode.ts';
import { Rng } from '../util/rng.ts';
import { emodbDev } from '../../test/fixtures-gen/paths.ts';

const ramp = (n: number) => Float32Array.from({ length: n }, (_, i) => i + 1);

describe('crops', () => {
  it('randomCrop: exact length, in-range and seeded; every offset reachable', () => {
    const x = ramp(10);
    const starts = new Set<number>();
    const rng = new Rng(7);
    for (let i = 0; i < 400; i++) {
      const c = randomCrop(x, 4, rng);
      expect(c.samples.length).toBe(4);
      expect(c.validLength).toBe(4);
      expect([...c.samples]).toEqual([...x.subarray(c.start, c.start + 4)]);
      starts.add(c.start);
    }
    expect([...starts].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    const a = randomCrop(x, 4, new Rng(3)).start;
    expect(randomCrop(x, 4, new Rng(3)).start).toBe(a);
  });

  it('pads shorter inputs with zeros and reports the valid length', () => {
    const c = randomCrop(ramp(3), 5, new Rng(1));
    expect([...c.samples]).toEqual([1, 2, 3, 0, 0]);
    expect(c.validLength).toBe(3);
    expect(c.start).toBe(0);
    expect(centerCrop(ramp(3), 5).validLength).toBe(3);
  });

  it('centerCrop takes the middle', () => {
    expect([...centerCrop(ramp(10), 4).samples]).toEqual([4, 5, 6, 7]);
    expect([...centerCrop(ramp(9), 4).samples]).toEqual([3, 4, 5, 6]);
    expect(() => centerCrop(ramp(9), 0)).toThrow(RangeError);
  });
});

describe('slidingWindows', () => {
  const sr = 10;
  it('covers the whole signal; the last window is shorter by default', () => {
    const x = ramp(105); // 10.5 s at 10 Hz
    const w = slidingWindows(x, { windowS: 3, hopS: 1.5, sampleRate: sr });
    expect(w.map((v) => [v.start, v.end])).toEqual([[0, 30], [15, 45], [30, 60], [45, 75], [60, 90], [75, 105]]);
    const covered = new Set<number>();
    for (const v of w) for (let i = v.start; i < v.end; i++) covered.add(i);
    expect(covered.size).toBe(105);
    const x2 = ramp(100);
    const w2 = slidingWindows(x2, { windowS: 3, hopS: 1.5, sampleRate: sr });
    expect(w2.at(-1)).toMatchObject({ start: 75, end: 100 });
    expect(w2.at(-1)!.samples.length).toBe(25);
  });

  it("'pad' zero-pads the last window, 'shift' moves it back to end at the signal end", () => {
    const x = ramp(100);
    const p = slidingWindows(x, { windowS: 3, hopS: 1.5, sampleRate: sr, last: 'pad' });
    expect(p.at(-1)!.samples.length).toBe(30);
    expect(p.at(-1)!.samples[24]).toBe(100);
    expect(p.at(-1)!.samples[25]).toBe(0);
    const s = slidingWindows(x, { windowS: 3, hopS: 1.5, sampleRate: sr, last: 'shift' });
    expect(s.at(-1)).toMatchObject({ start: 70, end: 100 });
    expect(s.every((v) => v.samples.length === 30)).toBe(true);
  });

  it('a short signal gives one window; bad arguments throw', () => {
    expect(slidingWindows(ramp(5), { windowS: 3, hopS: 1, sampleRate: sr }).map((v) => [v.start, v.end])).toEqual([[0, 5]]);
    expect(() => slidingWindows(ramp(5), { windowS: 1, hopS: 2, sampleRate: sr })).toThrow(/gaps/);
    expect(() => slidingWindows(ramp(5), { windowS: 0, hopS: 0, sampleRate: sr })).toThrow(RangeError);
  });
});

describe('speechSegments', () => {
  const sr = 16000;
  const tone = (s: number) => Float32Array.from({ length: Math.round(s * sr) }, (_, i) => 0.3 * Math.sin((2 * Math.PI * 220 * i) / sr));
  const silence = (s: number) => Float32Array.from({ length: Math.round(s * sr) }, (_, i) => 1e-4 * Math.sin(i));
  const join = (...xs: Float32Array[]) => {
    const out = new Float32Array(xs.reduce((n, x) => n + x.length, 0));
    let o = 0;
    for (const x of xs) (out.set(x, o), (o += x.length));
    return out;
  };

  it('finds tone bursts, bridges short gaps, drops short blips', () => {
    // 0.5 s quiet, 1 s tone, 0.1 s gap (bridged), 0.5 s tone, 1 s quiet, 0.05 s blip (dropped), 1 s quiet, 0.8 s tone
    const x = join(silence(0.5), tone(1), silence(0.1), tone(0.5), silence(1), tone(0.05), silence(1), tone(0.8), silence(0.3));
    const segs = speechSegments(x, { sampleRate: sr, padS: 0 });
    expect(segs.length).toBe(2);
    expect(segs[0]!.startS).toBeCloseTo(0.5, 1);
    expect(segs[0]!.endS).toBeCloseTo(2.1, 1);
    expect(segs[1]!.startS).toBeCloseTo(4.15, 1);
    expect(segs[1]!.endS).toBeCloseTo(4.95, 1);
  });

  it('on a real EmoDB clip: one or more segments inside the clip, covering most of it', async () => {
    const a = await decodeAudioFile(path.join(emodbDev().wavDir, '03a01Fa.wav'));
    const segs = speechSegments(a.samples, { sampleRate: a.sampleRate });
    expect(segs.length).toBeGreaterThanOrEqual(1);
    for (const s of segs) {
      expect(s.startS).toBeGreaterThanOrEqual(0);
      expect(s.endS).toBeLessThanOrEqual(a.durationS);
      expect(s.endS).toBeGreaterThan(s.startS);
    }
    const speech = segs.reduce((t, s) => t + s.endS - s.startS, 0);
    expect(speech / a.durationS).toBeGreaterThan(0.5);
  });
});
