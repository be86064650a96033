/** The export manifest schema shared by the writer, the page and Node (no browser needed). */
import { describe, expect, it } from 'vitest';
import { EXPORT_FORMAT, exportFiles, parseManifest } from './manifest.ts';

describe('parseManifest', () => {
  const good = {
    format: EXPORT_FORMAT,
    labels: ['anger', 'neutral'],
    sample_rate: 16000,
    window_seconds: 3,
    hop_seconds: 1.5,
    max_seconds: 30,
    model: 'model.onnx',
    n_queries: 4,
    prompt_ids: [1, 2],
    answers: { first_targets: [5, 6], answer_ids: [[5], [6]], answer_next: [[0], [0]] },
  };
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
    expect(() => parseManifest({ ...good, external_data: ['/etc/passwd'] })).toThrow(/external_data\.0/);
    expect(() => parseManifest([])).toThrow(/object/);
    expect(() => parseManifest({ ...good, stages: { encoder: 'e.onnx', mapper: '../m.onnx', llm: 'l.onnx' } })).toThrow(/stages\.mapper/);
    expect(() => parseManifest({ ...good, window_seconds: 0.01 })).toThrow(/window_seconds/);
    const { n_queries: _, ...noQueries } = good;
    expect(() => parseManifest(noQueries)).toThrow(/n_queries: missing/);
  });
  it('drops fields it does not know (a 0.1 export still loads), and nothing in it is a local path', () => {
    expect(parseManifest({ ...good, source: '/home/someone/runs/emodb' })).toEqual(good);
  });
});
