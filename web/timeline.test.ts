/** The pure windowing / aggregation / manifest code shared by the page and Node (no browser needed). */
import { describe, expect, it } from 'vitest';
import { EXPORT_FORMAT, exportFiles, parseManifest } from './src/manifest.ts';
import { argmax, meanRows, runTimeline, windowSpans } from './src/timeline.ts';

const M = { labels: ['a', 'b', 'c'], sample_rate: 16000, window_seconds: 3, hop_seconds: 1.5 };
const spans = (seconds: number, m: Partial<typeof M> = {}) =>
  windowSpans(new Float32Array(Math.round(seconds * 16000)), { ...M, ...m }).map(({ start, end }) => [start / 16000, end / 16000]);

describe('windowSpans', () => {
  it('splits long clips into windows with the hop; the last one may be shorter', () => {
    expect(spans(7)).toEqual([[0, 3], [1.5, 4.5], [3, 6], [4.5, 7]]);
    expect(spans(6)).toEqual([[0, 3], [1.5, 4.5], [3, 6]]);
    expect(spans(3.2)).toEqual([[0, 3], [1.5, 3.2]]);
  });
  it('gives one window for a clip up to window_seconds, down to 25 ms', () => {
    expect(spans(3)).toEqual([[0, 3]]);
    expect(spans(0.5)).toEqual([[0, 0.5]]);
    expect(spans(0.025)).toEqual([[0, 0.025]]);
  });
  it('refuses clips shorter than the model minimum (25 ms)', () => {
    expect(() => spans(0.02)).toThrow(/at least 25 ms/);
    expect(() => spans(0)).toThrow(/at least 25 ms/);
  });
  it('moves a too-short last window back so the model always gets >= 25 ms', () => {
    // hop = window: 3.01 s leaves a 10 ms tail
    expect(spans(3.01, { hop_seconds: 3 })).toEqual([[0, 3], [2.985, 3.01]]);
  });
});

describe('aggregation', () => {
  it('means rows and picks the argmax', () => {
    expect(meanRows([[0.2, 0.8], [0.6, 0.4]])).toEqual([0.4, 0.6000000000000001]);
    expect(argmax([0.1, 0.7, 0.2])).toBe(1);
    expect(() => meanRows([])).toThrow();
  });
  it('runs every window and averages the probabilities', async () => {
    const x = new Float32Array(7 * 16000);
    const seen: number[][] = [];
    const r = await runTimeline(x, M, async (w) => {
      seen.push([w.length]);
      const k = seen.length;
      return { probabilities: k % 2 ? [0.7, 0.2, 0.1] : [0.1, 0.2, 0.7], scores: [k, 0, 0] };
    });
    expect(seen).toEqual([[48000], [48000], [48000], [40000]]);
    expect(r.segments.map((s) => s.label)).toEqual(['a', 'c', 'a', 'c']);
    expect(r.segments[3]).toMatchObject({ start: 4.5, end: 7, startSample: 72000, endSample: 112000 });
    expect(r.aggregate.map((v) => +v.toFixed(12))).toEqual([0.4, 0.2, 0.4]);
    expect(r.label).toBe('a');
    expect(r.durationSeconds).toBe(7);
  });
  it('rejects a model whose outputs do not match the labels', async () => {
    const infer = async () => ({ probabilities: [0.5, 0.5], scores: [0, 0] });
    await expect(runTimeline(new Float32Array(16000), M, infer)).rejects.toThrow(/2 probabilities .* 3 labels/);
  });
});

describe('parseManifest', () => {
  const good = { format: EXPORT_FORMAT, labels: ['anger', 'neutral'], sample_rate: 16000, window_seconds: 3, hop_seconds: 1.5, model: 'model.onnx' };
  it('accepts the contract, with or without external data', () => {
    expect(parseManifest(good)).toEqual(good);
    const ext = parseManifest({ ...good, external_data: ['model.onnx.data'] });
    expect(exportFiles(ext)).toEqual(['manifest.json', 'model.onnx', 'model.onnx.data']);
  });
  it('names the bad field', () => {
    expect(() => parseManifest({ ...good, format: 'x' })).toThrow(/format/);
    expect(() => parseManifest({ ...good, labels: [] })).toThrow(/labels/);
    expect(() => parseManifest({ ...good, labels: ['a', 'a'] })).toThrow(/duplicates/);
    expect(() => parseManifest({ ...good, hop_seconds: 4 })).toThrow(/hop_seconds/);
    expect(() => parseManifest({ ...good, sample_rate: 0 })).toThrow(/sample_rate/);
    expect(() => parseManifest({ ...good, model: '../x.onnx' })).toThrow(/model/);
    expect(() => parseManifest({ ...good, model: 'https://cdn.example/x.onnx' })).toThrow(/model/);
    expect(() => parseManifest({ ...good, external_data: ['/etc/passwd'] })).toThrow(/external_data\[0\]/);
    expect(() => parseManifest([])).toThrow(/object/);
  });
});
