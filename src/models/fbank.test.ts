import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { emodbDev } from '../../test/fixtures-gen/paths.ts';
import { FBANK_LOG_FLOOR, fbankPlan, inverseMelScale, melScale } from './fbank.ts';
import { FbankEncoder, fbank } from '../../test/oracles/fbank.ts';

/** Reads a mono PCM16 WAV by hand (independent of src/audio), as float in [-1, 1). */
function readPcm16(file: string): Float32Array {
  const b = fs.readFileSync(file);
  if (b.toString('ascii', 0, 4) !== 'RIFF' || b.toString('ascii', 8, 12) !== 'WAVE') throw new Error(`${file}: not a WAV file`);
  let pos = 12;
  let fmtOk = false;
  while (pos + 8 <= b.length) {
    const id = b.toString('ascii', pos, pos + 4);
    const size = b.readUInt32LE(pos + 4);
    if (id === 'fmt ') {
      const tag = b.readUInt16LE(pos + 8);
      const channels = b.readUInt16LE(pos + 10);
      const rate = b.readUInt32LE(pos + 12);
      const bits = b.readUInt16LE(pos + 22);
      if (tag !== 1 || channels !== 1 || rate !== 16000 || bits !== 16) throw new Error(`${file}: expected mono 16 kHz PCM16`);
      fmtOk = true;
    } else if (id === 'data') {
      if (!fmtOk) throw new Error(`${file}: data before fmt`);
      const n = Math.floor(Math.min(size, b.length - pos - 8) / 2);
      const x = new Float32Array(n);
      for (let i = 0; i < n; i++) x[i] = b.readInt16LE(pos + 8 + 2 * i) / 32768;
      return x;
    }
    pos += 8 + size + (size & 1);
  }
  throw new Error(`${file}: no data chunk`);
}

function clip(name: string): Float32Array {
  return readPcm16(path.join(emodbDev().wavDir, name));
}

/**
 * Straightforward float64 reference with the same math: frames -> DC removal -> pre-emphasis (Kaldi's x[0]
 * convention) -> povey window -> zero-pad to 512 -> naive DFT power for bins 0..255 -> Kaldi mel banks
 * (weights where left < mel < right) -> log with float32-epsilon floor. Input scaled by 32768.
 */
function referenceFbank(x: Float32Array, bins = 80): { frames: number; data: Float64Array } {
  const L = 400;
  const S = 160;
  const N = 512;
  const frames = x.length < L ? 0 : 1 + Math.floor((x.length - L) / S);
  const cosT = new Float64Array(N);
  const sinT = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    cosT[i] = Math.cos((2 * Math.PI * i) / N);
    sinT[i] = Math.sin((2 * Math.PI * i) / N);
  }
  // mel banks, bank-by-bin dense matrix
  const melLow = 1127 * Math.log(1 + 20 / 700);
  const melHigh = 1127 * Math.log(1 + 8000 / 700);
  const delta = (melHigh - melLow) / (bins + 1);
  const W: number[][] = [];
  for (let m = 0; m < bins; m++) {
    const left = melLow + m * delta;
    const center = left + delta;
    const right = center + delta;
    const row: number[] = [];
    for (let k = 0; k < N / 2; k++) {
      const mel = 1127 * Math.log(1 + (k * 16000) / N / 700);
      let w = 0;
      if (mel > left && mel < right) w = mel <= center ? (mel - left) / (center - left) : (right - mel) / (right - center);
      row.push(w);
    }
    W.push(row);
  }
  const out = new Float64Array(frames * bins);
  const fr = new Float64Array(L);
  for (let f = 0; f < frames; f++) {
    let mean = 0;
    for (let i = 0; i < L; i++) {
      fr[i] = x[f * S + i]! * 32768;
      mean += fr[i]!;
    }
    mean /= L;
    for (let i = 0; i < L; i++) fr[i]! -= mean;
    for (let i = L - 1; i > 0; i--) fr[i] = fr[i]! - 0.97 * fr[i - 1]!;
    fr[0] = fr[0]! - 0.97 * fr[0]!;
    for (let i = 0; i < L; i++) fr[i] = fr[i]! * Math.pow(0.5 - 0.5 * Math.cos((2 * Math.PI * i) / (L - 1)), 0.85);
    const power = new Float64Array(N / 2);
    for (let k = 0; k < N / 2; k++) {
      let re = 0;
      let im = 0;
      for (let n = 0; n < L; n++) {
        const idx = (k * n) % N;
        re += fr[n]! * cosT[idx]!;
        im -= fr[n]! * sinT[idx]!;
      }
      power[k] = re * re + im * im;
    }
    for (let m = 0; m < bins; m++) {
      let e = 0;
      for (let k = 0; k < N / 2; k++) e += W[m]![k]! * power[k]!;
      out[f * bins + m] = Math.log(Math.max(e, 1.1920928955078125e-7));
    }
  }
  return { frames, data: out };
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('fbank', () => {
  it('matches a float64 naive-DFT reference on real speech (emodb 03a01Fa.wav)', () => {
    const x = clip('03a01Fa.wav');
    const ours = fbank(x);
    const ref = referenceFbank(x);
    expect(ours.frames).toBe(ref.frames);
    expect(ours.bins).toBe(80);
    expect(ours.frames).toBe(188);
    // measured 9.5e-7: the float32 rounding of outputs up to ~25
    expect(maxAbsDiff(ours.data, ref.data)).toBeLessThan(5e-6);
  });

  it('agrees with torchaudio.compliance.kaldi.fbank(wav * 32768, num_mel_bins=80, dither=0) on emodb 03a01Fa.wav', () => {
    // torchaudio 0.13.1: kaldi.fbank((wav * 32768).double(), num_mel_bins=80, dither=0.0), wav from torchaudio.load.
    // Whole-clip max |diff| is 9e-5 (torchaudio builds its mel matrix in float32 even for float64 input).
    const gold: Array<[number, number[]]> = [
      [0, [8.956635, 7.121725, 5.479959, 9.00094, 9.653251]],
      [60, [11.204951, 16.038251, 15.257592, 15.119956, 11.762962]],
      [187, [9.82317, 7.701769, 8.570183, 8.485482, 9.275929]],
    ];
    const cols = [0, 7, 20, 40, 79];
    const r = fbank(clip('03a01Fa.wav'));
    for (const [f, vals] of gold) cols.forEach((b, j) => expect(Math.abs(r.data[f * 80 + b]! - vals[j]!)).toBeLessThan(5e-4));
  });

  it('matches the reference on a second clip and with non-default bins', () => {
    const x = clip('08b02Tc.wav').subarray(0, 16000);
    const ours = fbank(x, { numMelBins: 40 });
    const ref = referenceFbank(x, 40);
    expect(maxAbsDiff(ours.data, ref.data)).toBeLessThan(5e-6);
  });

  it('frame count is 1 + floor((N - 400) / 160), 0 below one window', () => {
    const cases: Array<[number, number]> = [
      [0, 0],
      [1, 0],
      [399, 0],
      [400, 1],
      [559, 1],
      [560, 2],
      [16000, 98],
      [48000, 298],
    ];
    for (const [n, want] of cases) {
      expect(n < 400 ? 0 : 1 + Math.floor((n - 400) / 160)).toBe(want);
      const r = fbank(new Float32Array(n).map((_, i) => Math.sin(i)));
      expect(r.frames, `N=${n}`).toBe(want);
      expect(r.data.length).toBe(want * 80);
    }
  });

  it('a pure tone peaks in the mel bin centred on its frequency', () => {
    const plan = fbankPlan();
    expect(plan.fftSize).toBe(512);
    const melLow = melScale(20);
    const delta = (melScale(8000) - melLow) / 81;
    const centre = (b: number) => inverseMelScale(melLow + (b + 1) * delta);
    // below ~bin 10 the mel triangles are narrower than the 31.25 Hz FFT bins, so start there
    for (const bin of [10, 24, 40, 55, 70, 78]) {
      const hz = centre(bin);
      const x = new Float32Array(8000);
      for (let i = 0; i < x.length; i++) x[i] = 0.5 * Math.sin((2 * Math.PI * hz * i) / 16000);
      const r = fbank(x);
      for (let f = 0; f < r.frames; f++) {
        let arg = 0;
        for (let b = 1; b < 80; b++) if (r.data[f * 80 + b]! > r.data[f * 80 + arg]!) arg = b;
        expect(arg, `${hz.toFixed(1)} Hz, frame ${f}`).toBe(bin);
      }
    }
  });

  it('silence sits exactly at the log floor; CMVN maps it to 0', () => {
    const z = new Float32Array(4000);
    const r = fbank(z);
    expect(r.frames).toBe(23);
    const floor = Math.fround(Math.log(FBANK_LOG_FLOOR));
    expect(floor).toBeCloseTo(-15.942385, 5);
    for (const v of r.data) expect(v).toBe(floor);
    // a DC offset is removed per frame, so it is silence too
    expect(fbank(new Float32Array(4000).fill(0.25)).data.every((v) => v === floor)).toBe(true);
    const c = fbank(z, { cmvn: true });
    expect(c.data.every((v) => v === 0)).toBe(true);
  });

  it('is deterministic and CMVN gives zero mean, unit variance per bin', () => {
    const x = clip('14a05Wa.wav');
    const a = fbank(x, { cmvn: true });
    const b = fbank(x, { cmvn: true });
    expect(Buffer.from(a.data.buffer).equals(Buffer.from(b.data.buffer))).toBe(true);
    for (let bin = 0; bin < 80; bin += 13) {
      let m = 0;
      let v = 0;
      for (let f = 0; f < a.frames; f++) m += a.data[f * 80 + bin]!;
      m /= a.frames;
      for (let f = 0; f < a.frames; f++) v += (a.data[f * 80 + bin]! - m) ** 2;
      v /= a.frames;
      expect(Math.abs(m)).toBeLessThan(1e-5);
      expect(Math.abs(v - 1)).toBeLessThan(1e-3);
    }
    // the input scale only shifts raw log-energies by 2 ln(scale), except where the epsilon floor is hit
    const raw1 = fbank(x);
    const raw2 = fbank(x, { inputScale: 1 });
    const shift = 2 * Math.log(32768);
    let checked = 0;
    let worst = 0;
    for (let i = 0; i < raw1.data.length; i++) {
      if (raw2.data[i]! < Math.log(FBANK_LOG_FLOOR) + 1) continue;
      worst = Math.max(worst, Math.abs(raw1.data[i]! - raw2.data[i]! - shift));
      checked++;
    }
    expect(worst).toBeLessThan(1e-3);
    expect(checked).toBeGreaterThan(raw1.data.length / 2);
  });

  it('rejects bad options and non-finite samples with one-line errors', () => {
    expect(() => fbank(new Float32Array(800), { numMelBins: 0 })).toThrow(/numMelBins/);
    expect(() => fbank(new Float32Array(800), { lowFreq: 9000 })).toThrow(/lowFreq/);
    expect(() => fbank(new Float32Array(800), { windowType: 'kaiser' as never })).toThrow(/windowType/);
    expect(() => fbank(new Float32Array(800), { foo: 1 } as never)).toThrow(/unknown option "foo"/);
    const x = new Float32Array(800);
    x[17] = NaN;
    expect(() => fbank(x)).toThrow(/non-finite sample \(NaN\) at index 17/);
  });
});

describe('FbankEncoder', () => {
  it('implements FrameEncoder: 1 state of [T, 80] at 100 frames/s, CMVN on by default', async () => {
    const enc = new FbankEncoder();
    expect(enc.numHiddenStates).toBe(1);
    expect(enc.hiddenSize).toBe(80);
    expect(enc.frameRate).toBe(100);
    const x = clip('03a01Fa.wav');
    const [r] = await enc.encode([x]);
    expect(r!.frames).toBe(188);
    expect(r!.states).toHaveLength(1);
    const direct = fbank(x, { cmvn: true });
    expect(Buffer.from(r!.states[0]!.buffer).equals(Buffer.from(direct.data.buffer))).toBe(true);
    // short clips are zero-padded to one frame
    const [short] = await enc.encode([new Float32Array(100).fill(0.1)]);
    expect(short!.frames).toBe(1);
    expect(short!.states[0]).toHaveLength(80);
  });

  it('has a stable id that changes with the configuration', () => {
    expect(new FbankEncoder().id).toBe(new FbankEncoder({}).id);
    expect(new FbankEncoder().id).toBe(new FbankEncoder({ cmvn: true, numMelBins: 80 }).id);
    expect(new FbankEncoder().id).toMatch(/^fbank-v1-[0-9a-f]{16}$/);
    const ids = new Set([
      new FbankEncoder().id,
      new FbankEncoder({ cmvn: false }).id,
      new FbankEncoder({ numMelBins: 40 }).id,
      new FbankEncoder({ preemphasis: 0 }).id,
      new FbankEncoder({ inputScale: 1 }).id,
    ]);
    expect(ids.size).toBe(5);
  });

});
