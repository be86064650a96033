/** Small real audio files for tests (short tones, written as genuine WAVs). */
import fs from 'node:fs';
import path from 'node:path';
import { encodeWav } from '../../src/audio/wav.ts';

/** A `seconds`-long tone at `freq` Hz (16 kHz, 16-bit mono) written to `file` (folders created). */
export function writeTone(file: string, seconds = 0.25, freq = 220, sampleRate = 16000): string {
  const n = Math.round(seconds * sampleRate);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = 0.3 * Math.sin((2 * Math.PI * freq * i) / sampleRate);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, encodeWav(x, sampleRate, 'pcm16'));
  return file;
}

/** Write a text file (folders created). */
export function writeText(file: string, text: string): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
  return file;
}
