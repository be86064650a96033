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
  it('synthesises into <out>/corpus, trains on some speakers, beats chance on the others; a second run reuses corpus and model', async () => {
    const { runDemo } = await import('../cli/demo.ts');
    const out = path.join(dir, 'demo');
    const synth = { speakers: 6, sentences: 4, emotions: ['anger', 'neutral', 'sadness'] };
    const train = { maxSteps: 40, batchSize: 8, cacheDir: path.join(dir, 'cache') };
    const lines: string[] = [];
    const s1 = await runDemo({ out, synth, train, log: (l) => lines.push(l) });
    expect(s1.corpusDir).toBe(path.join(out, 'corpus'));
    expect(s1.summary!.clips).toBe(72);
    const text = lines.join('\n');
    expect(text).toMatch(/synthesised 72 SYNTHETIC clips/);
    expect(text).toMatch(/clips: 72 {3}speakers: 6 {3}labels: 3/);
    // whole speakers: train, validation and test are disjoint
    const sp = s1.split!.speakers;
    expect(new Set([...sp.train, ...sp.valid, ...sp.test]).size).toBe(6);
    expect(sp.test.length).toBeGreaterThan(0);
    const metrics = JSON.parse(fs.readFileSync(path.join(out, 'eval', 'metrics.json'), 'utf8'));
    expect(metrics.labels).toEqual(['anger', 'neutral', 'sadness']);
    expect(metrics.n).toBe(s1.split!.test.length);
    // the test speakers' UA clears chance (1/3) by 20 points (measured: 95.8% on 24 clips after 40 steps)
    expect(metrics.ua).toBeGreaterThan(1 / 3 + 0.2);
    expect(fs.readFileSync(path.join(out, 'eval', 'report.html'), 'utf8')).toMatch(/synthetic/i);
    expect(text).toMatch(/demo: test speakers .*: UA \d+\.\d%/);
    expect(text).toMatch(/SYNTHETIC \(espeak-ng prosody\)/);

    const lines2: string[] = [];
    await runDemo({ out, synth, train, log: (l) => lines2.push(l) });
    expect(lines2.join('\n')).toMatch(/reusing the SYNTHETIC corpus/);
    expect(lines2.join('\n')).toMatch(/continuing the model/);
  }, 400_000);
});
