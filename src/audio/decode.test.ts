import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeAudioFile, loadAudio16k, probeAudio, shutdownDecoders } from './decode.ts';
import { readWavHeader } from './wav.ts';
import { parseCsvTable } from '../data/csv.ts';
import { emodbDev, tempDir } from '../../test/fixtures-gen/paths.ts';
import { bestCorrelation, ffmpeg, sox } from '../../test/fixtures-gen/tools.ts';

const emo = emodbDev();
const manifest = parseCsvTable(fs.readFileSync(emo.manifest, 'utf8'), emo.manifest).records.map((r) => r.values);

afterAll(() => shutdownDecoders());

describe('decodeAudioFile on the real EmoDB dev clips', () => {
  it('decodes all 373 clips at 16 kHz mono with the manifest durations (within 1 ms)', async () => {
    expect(manifest.length).toBe(373);
    let worst = 0;
    for (const row of manifest) {
      const file = path.join(emo.dir, row.path!);
      const a = await decodeAudioFile(file);
      expect(a.format).toBe('wav');
      expect(a.sampleRate).toBe(16000);
      expect(a.channels).toBe(1);
      expect(a.samples.length).toBe(Math.round(a.durationS * 16000));
      expect(a.durationS).toBeGreaterThanOrEqual(1.2);
      expect(a.durationS).toBeLessThanOrEqual(9);
      worst = Math.max(worst, Math.abs(a.durationS - Number(row.duration_s)));
      // 16-bit PCM: every sample is a multiple of 2^-15 within [-1, 1).
      const v = a.samples[a.samples.length >> 1]!;
      expect(Number.isInteger(v * 32768)).toBe(true);
    }
    expect(worst).toBeLessThanOrEqual(0.001);
  });

  it('probeAudio reads the duration from the WAV header without decoding', async () => {
    const row = manifest[0]!;
    const info = await probeAudio(path.join(emo.dir, row.path!));
    expect(info.source).toBe('header');
    expect(info.sampleRate).toBe(16000);
    expect(Math.abs(info.durationS - Number(row.duration_s))).toBeLessThanOrEqual(0.001);
  });
});

describe('other formats, generated from an EmoDB clip with ffmpeg / sox', () => {
  const src = path.join(emo.wavDir, '03a05Aa.wav');
  let dir = '';
  let ref: Float32Array;
  let refDur = 0;
  beforeAll(async () => {
    dir = tempDir('formats');
    const a = await decodeAudioFile(src);
    ref = a.samples;
    refDur = a.durationS;
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  // [name, make(out), expected channels, lossless?, expected sample rate, wav extensible?]
  const cases: Array<{ name: string; file: string; make: (out: string) => void; channels: number; lossy: boolean; rate: number; extensible?: boolean; minR?: number }> = [
    { name: 'MP3', file: 'x.mp3', make: (o) => ffmpeg('-i', src, '-c:a', 'libmp3lame', '-b:a', '64k', o), channels: 1, lossy: true, rate: 16000 },
    { name: 'FLAC', file: 'x.flac', make: (o) => ffmpeg('-i', src, o), channels: 1, lossy: false, rate: 16000 },
    { name: 'Ogg Vorbis', file: 'x.ogg', make: (o) => ffmpeg('-i', src, '-c:a', 'libvorbis', o), channels: 1, lossy: true, rate: 16000 },
    { name: 'Ogg Opus (48 kHz)', file: 'x.opus', make: (o) => ffmpeg('-i', src, '-c:a', 'libopus', '-b:a', '48k', o), channels: 1, lossy: true, rate: 48000 },
    { name: 'M4A/AAC', file: 'x.m4a', make: (o) => ffmpeg('-i', src, '-c:a', 'aac', '-b:a', '64k', o), channels: 1, lossy: true, rate: 16000 },
    { name: 'WAV 24-bit (sox writes WAVE_FORMAT_EXTENSIBLE)', file: 's24.wav', make: (o) => sox(src, '-b', '24', o), channels: 1, lossy: false, rate: 16000, extensible: true },
    { name: 'WAV 32-bit float', file: 'f32.wav', make: (o) => sox(src, '-e', 'floating-point', '-b', '32', o), channels: 1, lossy: false, rate: 16000, extensible: false },
    { name: 'WAV 64-bit float', file: 'f64.wav', make: (o) => ffmpeg('-i', src, '-c:a', 'pcm_f64le', o), channels: 1, lossy: false, rate: 16000 },
    { name: 'WAV 32-bit int', file: 's32.wav', make: (o) => ffmpeg('-i', src, '-c:a', 'pcm_s32le', o), channels: 1, lossy: false, rate: 16000 },
    { name: 'WAV 8-bit unsigned', file: 'u8.wav', make: (o) => sox(src, '-b', '8', o), channels: 1, lossy: true, rate: 16000, extensible: false, minR: 0.99 },
    { name: 'WAV A-law', file: 'alaw.wav', make: (o) => sox(src, '-e', 'a-law', o), channels: 1, lossy: true, rate: 16000, minR: 0.99 },
    { name: 'WAV mu-law', file: 'ulaw.wav', make: (o) => sox(src, '-e', 'u-law', o), channels: 1, lossy: true, rate: 16000, minR: 0.99 },
    {
      name: 'WAV stereo (L = x, R = x/2)',
      file: 'stereo.wav',
      make: (o) => sox('-M', src, '|sox ' + src + ' -p vol 0.5', o),
      channels: 2,
      lossy: false,
      rate: 16000,
    },
    { name: 'WAV 4-channel 16-bit WAVE_FORMAT_EXTENSIBLE', file: 'quad.wav', make: (o) => ffmpeg('-i', src, '-ac', '4', '-c:a', 'pcm_s16le', o), channels: 4, lossy: false, rate: 16000, extensible: true },
    { name: 'WAV 44.1 kHz float extensible stereo', file: 'f44.wav', make: (o) => sox(src, '-e', 'floating-point', '-b', '32', '-c', '2', '-r', '44100', o), channels: 2, lossy: false, rate: 44100 },
  ];

  it('probeAudio reads FLAC durations from STREAMINFO, decodes MP3 to measure it', async () => {
    const flac = path.join(dir, 'probe.flac');
    const mp3 = path.join(dir, 'probe.mp3');
    ffmpeg('-i', src, flac);
    ffmpeg('-i', src, mp3);
    expect(await probeAudio(flac)).toEqual({ format: 'flac', sampleRate: 16000, channels: 1, frames: ref.length, durationS: refDur, source: 'header' });
    const p = await probeAudio(mp3);
    expect(p.source).toBe('decoded');
    expect(Math.abs(p.durationS - refDur)).toBeLessThan(0.03);
  });

  for (const c of cases) {
    it(`decodes ${c.name} to the right duration, correlated with the original`, async () => {
      const out = path.join(dir, c.file);
      c.make(out);
      if (c.extensible !== undefined) expect(readWavHeader(out).extensible).toBe(c.extensible);
      const a = await decodeAudioFile(out);
      expect(a.channels).toBe(c.channels);
      expect(a.sampleRate).toBe(c.rate);
      // Lossy codecs may add up to one codec frame of padding/priming that the container does not trim.
      expect(Math.abs(a.durationS - refDur)).toBeLessThanOrEqual(c.lossy && !c.file.endsWith('.wav') ? 0.03 : 1 / c.rate + 1e-9);
      const x16 = await loadAudio16k(out);
      const { r, lag } = bestCorrelation(ref, x16, 8);
      expect(Math.abs(lag)).toBeLessThanOrEqual(c.lossy ? 8 : 0);
      expect(r).toBeGreaterThan(c.minR ?? (c.lossy ? 0.95 : 0.999));
    });
  }
});
