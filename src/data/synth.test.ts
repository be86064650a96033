import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ensureSynthCorpus, isCompleteCorpus, synthesizeCorpus } from './synth.ts';
import { parseCsvTable } from './csv.ts';
import { MANIFEST_COLUMNS } from './manifest.ts';
import { loadDataset } from './dataset.ts';
import { decodeAudioFile } from '../audio/decode.ts';
import { readWavHeader } from '../audio/wav.ts';
import { tempDir } from '../../test/fixtures-gen/paths.ts';
import { medianF0, rms } from '../../test/fixtures-gen/prosody.ts';

const dir = tempDir('synth');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const opts = { seed: 7, speakers: 2, sentences: 3, emotions: ['neutral', 'anger', 'sadness'] };

describe('synthesizeCorpus (espeak-ng)', () => {
  it('writes 2 x 3 x 3 labelled 16 kHz clips, an emodb-dev style manifest and a SYNTHETIC README', async () => {
    const out = path.join(dir, 'small');
    const r = await synthesizeCorpus(out, opts);
    expect(r.clips).toBe(18);
    const text = fs.readFileSync(r.manifest, 'utf8');
    const t = parseCsvTable(text, r.manifest);
    expect(t.header).toEqual([...MANIFEST_COLUMNS]);
    expect(t.records.length).toBe(18);
    for (const { values: v } of t.records) {
      const h = readWavHeader(path.join(out, v.path!));
      expect([h.sampleRate, h.channels, h.bitsPerSample]).toEqual([16000, 1, 16]);
      expect(Math.abs(h.durationS - Number(v.duration_s))).toBeLessThanOrEqual(0.001);
      expect(h.durationS).toBeGreaterThan(0.8);
      expect(h.durationS).toBeLessThan(8);
      expect(v.sample_rate).toBe('16000');
      expect(['male', 'female']).toContain(v.gender);
    }
    expect(fs.readFileSync(path.join(out, 'README.md'), 'utf8')).toMatch(/SYNTHETIC/);
    const ds = await loadDataset(out);
    expect(new Set(ds.items.map((i) => i.label))).toEqual(new Set(['neutral', 'anger', 'sadness']));
    expect(new Set(ds.items.map((i) => i.speaker)).size).toBe(2);
    expect(new Set(ds.items.map((i) => i.transcript)).size).toBe(3);

    // Emotions differ in measured energy, rate and pitch. Compare within each (speaker, sentence) pair so
    // voice and text are held fixed.
    const m: Record<string, { rmsDb: number; dur: number; f0: number }> = {};
    for (const it of ds.items) {
      const a = await decodeAudioFile(it.path);
      m[`${it.speaker}|${it.transcript}|${it.label}`] = { rmsDb: 20 * Math.log10(rms(a.samples)), dur: a.durationS, f0: medianF0(a.samples, 16000) };
    }
    const pairs = [...new Set(ds.items.map((i) => `${i.speaker}|${i.transcript}`))];
    const mean = (label: string, k: 'rmsDb' | 'dur' | 'f0') => pairs.reduce((s, p) => s + m[`${p}|${label}`]![k], 0) / pairs.length;
    for (const p of pairs) {
      // Loudness: anger > neutral > sadness in every pair (several dB apart, jitter ~1 dB).
      expect(m[`${p}|anger`]!.rmsDb).toBeGreaterThan(m[`${p}|neutral`]!.rmsDb);
      expect(m[`${p}|neutral`]!.rmsDb).toBeGreaterThan(m[`${p}|sadness`]!.rmsDb);
      // Sadness is slower than anger in every pair.
      expect(m[`${p}|sadness`]!.dur).toBeGreaterThan(m[`${p}|anger`]!.dur);
    }
    expect(mean('sadness', 'dur')).toBeGreaterThan(mean('neutral', 'dur') * 1.15);
    expect(mean('neutral', 'dur')).toBeGreaterThan(mean('anger', 'dur'));
    expect(mean('anger', 'f0')).toBeGreaterThan(mean('sadness', 'f0') * 1.1);

    // A complete corpus is recognised and reused; other parameters are not.
    expect(isCompleteCorpus(out, opts)).toBe(true);
    expect(isCompleteCorpus(out, { ...opts, seed: 8 })).toBe(false);
    const again = await ensureSynthCorpus(out, opts);
    expect(again).toMatchObject({ reused: true, clips: 18 });
    fs.rmSync(ds.items[0]!.path);
    expect(isCompleteCorpus(out, opts)).toBe(false);
  });

  it('is deterministic for a seed', async () => {
    const one = { seed: 3, speakers: 1, sentences: 1, emotions: ['anger'] };
    const a = await synthesizeCorpus(path.join(dir, 'a'), one);
    const b = await synthesizeCorpus(path.join(dir, 'b'), one);
    const wav = (d: string) => fs.readFileSync(path.join(d, 'wav', fs.readdirSync(path.join(d, 'wav'))[0]!));
    expect(wav(a.dir).equals(wav(b.dir))).toBe(true);
    expect(fs.readFileSync(a.manifest, 'utf8')).toBe(fs.readFileSync(b.manifest, 'utf8'));
  });
});

describe('emosllm demo (runDemo)', () => {
  it('synthesises into <out>/corpus, summarises it, says training is not built yet; the second run reuses the corpus', async () => {
    const { runDemo } = await import('../cli/demo.ts');
    const out = path.join(dir, 'demo');
    const synth = { speakers: 1, sentences: 2, emotions: ['anger', 'neutral'] };
    const lines: string[] = [];
    const s1 = await runDemo({ out, synth, log: (l) => lines.push(l) });
    expect(s1.corpusDir).toBe(path.join(out, 'corpus'));
    expect(s1.summary!.clips).toBe(4);
    const text = lines.join('\n');
    expect(text).toMatch(/synthesised 4 SYNTHETIC clips/);
    expect(text).toMatch(/clips: 4 {3}speakers: 1 {3}labels: 2/);
    expect(text).toMatch(/not built yet/);
    const lines2: string[] = [];
    await runDemo({ out, synth, log: (l) => lines2.push(l) });
    expect(lines2.join('\n')).toMatch(/reusing the SYNTHETIC corpus/);
    // --data summarises the given corpus instead.
    const lines3: string[] = [];
    const s3 = await runDemo({ out, data: path.join(out, 'corpus', 'manifest.csv'), log: (l) => lines3.push(l) });
    expect(s3.summary!.clips).toBe(4);
    expect(lines3[0]).toMatch(/corpus: using .*manifest\.csv/);
  });
});
