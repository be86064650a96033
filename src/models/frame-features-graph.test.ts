import { afterAll, describe, expect, it } from 'vitest';
import { emodbDev } from '../../test/fixtures-gen/paths.ts';
import { loadAudio16k } from '../audio/decode.ts';
import { rng } from '../graph/gradcheck.ts';
import { FBANK_LOG_FLOOR } from './fbank.ts';
import { fbank } from '../../test/oracles/fbank.ts';
import { BuiltinFrameEncoder, builtinChannels, parseBuiltinEncoder } from './frame-encoders.ts';
import { MFCC_COEFFS, MFCC_LIFTER, MFCC_MEL_BINS, PITCH_MAX_HZ, PITCH_MIN_HZ, VOICING_THRESHOLD, mfccDctMatrix } from './frame-features-graph.ts';

const SR = 16000;
const rand = rng(15);
const prosody = new BuiltinFrameEncoder({ stack: 1, features: ['prosody'] });
const all = new BuiltinFrameEncoder({ stack: 1, features: ['fbank', 'mfcc', 'prosody'] });
afterAll(async () => {
  await prosody.release();
  await all.release();
});

/** A harmonic tone: `harmonics` partials of F0 with amplitudes 1/k and random phases, peak about 0.3. */
function tone(f0: number, seconds: number, harmonics: number): Float32Array {
  const phases = Array.from({ length: harmonics }, () => 2 * Math.PI * rand());
  return Float32Array.from({ length: Math.round(seconds * SR) }, (_, n) => {
    let v = 0;
    for (let k = 1; k <= harmonics && k * f0 < SR / 2; k++) v += Math.sin((2 * Math.PI * k * f0 * n) / SR + phases[k - 1]!) / k;
    return 0.2 * v;
  });
}

/** Per frame: [log F0, voicing, log energy]. */
async function prosodyOf(x: Float32Array) {
  const [r] = await prosody.encode([x]);
  const s = r!.states[0]!;
  return Array.from({ length: r!.frames }, (_, t) => ({ f0: Math.exp(s[3 * t]!), voicing: s[3 * t + 1]!, logEnergy: s[3 * t + 2]! }));
}

describe('prosody frame features (pitch, voicing, energy) in the encoder graph', () => {
  it('finds the F0 of sine and harmonic tones across the range within 0.5%, every frame voiced', async () => {
    for (const f0 of [62, 85, 110, 147, 196, 262, 349, 440, 494])
      for (const harmonics of [1, 4, 20]) {
        const frames = (await prosodyOf(tone(f0, 0.6, harmonics))).slice(3, -3); // the ends see the zero padding
        for (const f of frames) {
          expect(Math.abs(f.f0 / f0 - 1), `F0 ${f0} Hz, ${harmonics} harmonics: got ${f.f0}`).toBeLessThan(0.005);
          expect(f.voicing).toBeGreaterThan(0.9);
        }
      }
  });

  it('follows a tone that glides an octave (the frame grid is the fbank one: frame i centred at 10 i + 12.5 ms)', async () => {
    const seconds = 1;
    const f = (t: number) => 120 * 2 ** (t / seconds); // 120 -> 240 Hz
    let phase = 0;
    const x = Float32Array.from({ length: seconds * SR }, (_, n) => {
      phase += (2 * Math.PI * f(n / SR)) / SR;
      return 0.2 * (Math.sin(phase) + 0.5 * Math.sin(2 * phase) + 0.3 * Math.sin(3 * phase));
    });
    const frames = await prosodyOf(x);
    for (let i = 5; i < frames.length - 5; i++) expect(Math.abs(frames[i]!.f0 / f((i * 160 + 200) / SR) - 1), `frame ${i}`).toBeLessThan(0.01);
  });

  it('white noise is unvoiced; digital silence has voicing 0, the log floor energy and the mid-range log-F0', async () => {
    const noise = Float32Array.from({ length: SR }, () => 0.3 * (rand() - 0.5));
    const nf = await prosodyOf(noise);
    expect(nf.filter((f) => f.voicing >= VOICING_THRESHOLD).length).toBeLessThan(nf.length * 0.05);
    const mid = Math.sqrt(PITCH_MIN_HZ * PITCH_MAX_HZ);
    for (const f of await prosodyOf(new Float32Array(SR / 2))) {
      expect(f.voicing).toBe(0);
      expect(f.logEnergy).toBeCloseTo(Math.log(FBANK_LOG_FLOOR), 5);
      expect(f.f0).toBeCloseTo(mid, 2);
    }
  });

  it('unvoiced frames of a clip take its mean voiced log-F0', async () => {
    const x = new Float32Array(SR);
    x.set(tone(100, 0.4, 5), 0);
    x.set(tone(200, 0.4, 5), SR * 0.6);
    const frames = await prosodyOf(x);
    const voiced = frames.filter((f) => f.voicing >= VOICING_THRESHOLD);
    expect(voiced.some((f) => Math.abs(f.f0 - 100) < 1) && voiced.some((f) => Math.abs(f.f0 - 200) < 1)).toBe(true);
    const meanLogF0 = voiced.reduce((a, f) => a + Math.log(f.f0), 0) / voiced.length;
    const gap = frames.slice(48, 54); // 0.48 .. 0.55 s: silence
    for (const f of gap) {
      expect(f.voicing).toBe(0);
      expect(Math.abs(Math.log(f.f0) - meanLogF0)).toBeLessThan(1e-4);
    }
  });

  it('log energy is the log of the sum of squares of the DC-removed 25 ms frame on the int16 scale', async () => {
    const x = Float32Array.from({ length: 4000 }, (_, n) => 0.1 + 0.2 * Math.sin(n * 0.03) + 0.05 * (rand() - 0.5));
    const frames = await prosodyOf(x);
    expect(frames).toHaveLength(1 + Math.floor((4000 - 400) / 160));
    frames.forEach((f, t) => {
      const s = Array.from(x.subarray(160 * t, 160 * t + 400), (v) => v * 32768);
      const mean = s.reduce((a, b) => a + b, 0) / 400;
      const want = Math.log(s.reduce((a, v) => a + (v - mean) ** 2, 0));
      expect(Math.abs(f.logEnergy - want)).toBeLessThan(1e-4);
    });
  });

  it('on real speech (emodb-dev) voiced frames are a plausible share and their F0 is in the range of voices', async () => {
    const { wavDir } = emodbDev();
    for (const clip of ['03a01Fa.wav', '08b02Tc.wav', '14a05Wa.wav', '09b02Wd.wav']) {
      const frames = await prosodyOf(await loadAudio16k(`${wavDir}/${clip}`));
      const voiced = frames.filter((f) => f.voicing >= VOICING_THRESHOLD).map((f) => f.f0).sort((a, b) => a - b);
      expect(voiced.length / frames.length, clip).toBeGreaterThan(0.3);
      expect(voiced.length / frames.length, clip).toBeLessThan(0.97);
      const median = voiced[Math.floor(voiced.length / 2)]!;
      expect(median, clip).toBeGreaterThan(75);
      expect(median, clip).toBeLessThan(400);
    }
  });
});

describe('built-in encoders joined on one frame grid', () => {
  it('names: groups joined with +, in a fixed order; anything else is a folder', () => {
    expect(parseBuiltinEncoder('fbank')).toEqual(['fbank']);
    expect(parseBuiltinEncoder('prosody+fbank')).toEqual(['fbank', 'prosody']);
    expect(parseBuiltinEncoder('fbank+mfcc+prosody')).toEqual(['fbank', 'mfcc', 'prosody']);
    expect(parseBuiltinEncoder('runs/wavlm')).toBeUndefined();
    expect(() => parseBuiltinEncoder('fbank+fbank')).toThrow(/twice/);
  });

  it('frame counts equal the fbank frames at every edge length; widths and values add up, all finite', async () => {
    const fb = new BuiltinFrameEncoder({ stack: 1 });
    try {
      const width = 80 + 2 * MFCC_COEFFS + 3;
      expect(all.hiddenSize).toBe(width);
      expect(builtinChannels({ features: ['fbank', 'mfcc', 'prosody'] })).toHaveLength(width);
      expect(new BuiltinFrameEncoder({ stack: 4, features: ['fbank', 'prosody'] }).hiddenSize).toBe(4 * 83);
      for (const n of [1, 399, 400, 401, 560, 561, 16000]) {
        const x = Float32Array.from({ length: n }, () => 0.3 * (rand() - 0.5));
        const [a] = await all.encode([x]);
        const [b] = await fb.encode([x]);
        expect(a!.frames, `S=${n}`).toBe(b!.frames);
        const s = a!.states[0]!;
        expect(s).toHaveLength(a!.frames * width);
        expect(s.every(Number.isFinite)).toBe(true);
        // the fbank group is exactly the plain fbank encoder's output
        for (let t = 0; t < a!.frames; t++) for (let k = 0; k < 80; k++) expect(s[t * width + k]).toBe(b!.states[0]![t * 80 + k]);
      }
    } finally {
      await fb.release();
    }
  });

  it('MFCCs and deltas match a JS oracle (JS Kaldi fbank with 23 bins, the DCT, add-deltas) on real clips', async () => {
    const { wavDir } = emodbDev();
    const dct = mfccDctMatrix(MFCC_MEL_BINS, MFCC_COEFFS, MFCC_LIFTER);
    // Kaldi's lifter: coefficient k scaled by 1 + L/2 sin(pi k / L); c0 keeps its orthonormal DCT weight
    expect(dct[0]).toBeCloseTo(Math.sqrt(1 / MFCC_MEL_BINS), 6);
    expect(dct[1]).toBeCloseTo((1 + (MFCC_LIFTER / 2) * Math.sin(Math.PI / MFCC_LIFTER)) * Math.sqrt(2 / MFCC_MEL_BINS) * Math.cos(Math.PI / MFCC_MEL_BINS / 2), 5);
    for (const clip of ['03a01Fa.wav', '14a05Wa.wav']) {
      const x = await loadAudio16k(`${wavDir}/${clip}`);
      const mel = fbank(x, { numMelBins: MFCC_MEL_BINS });
      const T = mel.frames;
      const ceps = Array.from({ length: T }, (_, t) =>
        Array.from({ length: MFCC_COEFFS }, (_, k) => {
          let v = 0;
          for (let b = 0; b < MFCC_MEL_BINS; b++) v += mel.data[t * MFCC_MEL_BINS + b]! * dct[b * MFCC_COEFFS + k]!;
          return v;
        }),
      );
      const at = (t: number) => ceps[Math.min(Math.max(t, 0), T - 1)]!;
      const [r] = await all.encode([x]);
      expect(r!.frames).toBe(T);
      const width = all.hiddenSize;
      let worst = 0;
      for (let t = 0; t < T; t++)
        for (let k = 0; k < MFCC_COEFFS; k++) {
          const delta = (at(t + 1)[k]! - at(t - 1)[k]! + 2 * (at(t + 2)[k]! - at(t - 2)[k]!)) / 10;
          worst = Math.max(worst, Math.abs(r!.states[0]![t * width + 80 + k]! - ceps[t]![k]!), Math.abs(r!.states[0]![t * width + 80 + MFCC_COEFFS + k]! - delta));
        }
      expect(worst, clip).toBeLessThan(2e-2);
    }
  });
});
