/**
 * A small SYNTHETIC emotional-speech corpus rendered with espeak-ng, for the demo and for tests that need
 * labelled audio without a licensed corpus. Emotions are rendered through prosody only (rate, pitch level,
 * pitch range, loudness, word gaps), following the usual acoustic profiles (anger fast/loud/wide range,
 * sadness slow/quiet/low/narrow, boredom slow/low/monotone, ...), with seeded per-clip jitter so that no
 * single measurement separates the classes. It says nothing about real emotional speech.
 */
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError, oneLine } from '../util/errors.ts';
import { openRegularFile, writeFileAtomic } from '../util/fs.ts';
import { decodeWavFd, readWavHeader, writeWav } from '../audio/wav.ts';
import { resample } from '../audio/resample.ts';
import { loadManifest, writeManifest, type ManifestRow } from './manifest.ts';
import { Rng } from '../util/rng.ts';

/** Bump when the rendering changes, so stale demo corpora are regenerated. */
export const SYNTH_VERSION = 3;

export interface SynthSpeaker {
  id: string;
  /** espeak-ng voice with variant, e.g. `en-us+m3`. */
  voice: string;
  gender: 'male' | 'female';
  /** Base pitch (espeak -p, 0-99) and rate (-s, words per minute) that make speakers differ. */
  pitch: number;
  rate: number;
}

export const SYNTH_SPEAKERS: readonly SynthSpeaker[] = [
  { id: 'us_m3', voice: 'en-us+m3', gender: 'male', pitch: 40, rate: 170 },
  { id: 'us_f2', voice: 'en-us+f2', gender: 'female', pitch: 55, rate: 175 },
  { id: 'gb_m1', voice: 'en-gb+m1', gender: 'male', pitch: 35, rate: 165 },
  { id: 'gb_f3', voice: 'en-gb+f3', gender: 'female', pitch: 60, rate: 180 },
  { id: 'sc_m4', voice: 'en-gb-scotland+m4', gender: 'male', pitch: 45, rate: 160 },
  { id: 'rp_f4', voice: 'en-gb-x-rp+f4', gender: 'female', pitch: 50, rate: 170 },
  { id: 'cb_m7', voice: 'en-029+m7', gender: 'male', pitch: 42, rate: 175 },
  { id: 'ny_f5', voice: 'en-us-nyc+f5', gender: 'female', pitch: 58, rate: 168 },
];

export const SYNTH_SENTENCES: readonly string[] = [
  'The train leaves at seven tonight.',
  'I put the box on the kitchen table.',
  'We are going to see them tomorrow.',
  'She said the door was already open.',
  'That is not what I asked for.',
  'The meeting has been moved to Friday.',
  'He left his keys in the car again.',
  'You can take the blue one home.',
  'It is raining outside right now.',
  'Nobody told me about the new plan.',
];

/** Prosody per emotion, relative to the speaker's base: SSML rate/pitch/range/volume in %, word gap in 10 ms. */
interface Prosody {
  rate: number;
  pitch: number;
  range: number;
  volume: number;
  gap: number;
  /** Rate wobble between words (fear's "tremble"), as a fraction. */
  wobble: number;
}

export const EMOTION_PROSODY: Readonly<Record<string, Prosody>> = {
  neutral: { rate: 100, pitch: 0, range: 100, volume: 100, gap: 0, wobble: 0 },
  anger: { rate: 118, pitch: 12, range: 170, volume: 150, gap: 0, wobble: 0 },
  happiness: { rate: 110, pitch: 30, range: 190, volume: 120, gap: 0, wobble: 0 },
  fear: { rate: 128, pitch: 35, range: 60, volume: 95, gap: 1, wobble: 0.25 },
  sadness: { rate: 75, pitch: -18, range: 50, volume: 55, gap: 3, wobble: 0 },
  boredom: { rate: 80, pitch: -12, range: 25, volume: 75, gap: 2, wobble: 0 },
  disgust: { rate: 85, pitch: -8, range: 130, volume: 100, gap: 4, wobble: 0 },
};

export const SYNTH_EMOTIONS = Object.keys(EMOTION_PROSODY);

export interface SynthOptions {
  seed?: number;
  /** A count (first N of SYNTH_SPEAKERS) or explicit speakers (default 6). */
  speakers?: number | SynthSpeaker[];
  /** A count (first N of SYNTH_SENTENCES) or explicit sentences (default 8). */
  sentences?: number | string[];
  /** Subset of EMOTION_PROSODY keys (default all 7). */
  emotions?: string[];
  /** espeak processes run at once (default 2). */
  concurrency?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface SynthResult {
  dir: string;
  manifest: string;
  clips: number;
  seconds: number;
  /** True when an existing complete corpus with the same parameters was reused. */
  reused: boolean;
}

interface Resolved {
  seed: number;
  speakers: SynthSpeaker[];
  sentences: string[];
  emotions: string[];
}

function resolve(opts: SynthOptions): Resolved {
  const pick = <T>(v: number | T[] | undefined, all: readonly T[], dflt: number, what: string): T[] => {
    if (Array.isArray(v)) {
      if (v.length === 0) throw new UserError(`synthesizeCorpus: no ${what}`);
      return v;
    }
    const n = v ?? dflt;
    if (!Number.isInteger(n) || n < 1 || n > all.length) throw new UserError(`synthesizeCorpus: ${what} must be 1..${all.length}, got ${n}`);
    return all.slice(0, n);
  };
  const emotions = opts.emotions ?? SYNTH_EMOTIONS;
  for (const e of emotions) if (!EMOTION_PROSODY[e]) throw new UserError(`synthesizeCorpus: unknown emotion ${JSON.stringify(e)} (${SYNTH_EMOTIONS.join(', ')})`);
  return {
    seed: opts.seed ?? 0,
    speakers: pick(opts.speakers, SYNTH_SPEAKERS, 6, 'speakers'),
    sentences: pick(opts.sentences, SYNTH_SENTENCES, 8, 'sentences'),
    emotions: [...emotions],
  };
}

const ESPEAK = 'espeak-ng';

/** Make sure espeak-ng can run: install it with the project's system-deps script when missing. */
export function ensureEspeak(): void {
  const ok = () => spawnSync(ESPEAK, ['--version'], { stdio: 'ignore' }).status === 0;
  if (ok()) return;
  const script = fileURLToPath(new URL('../../scripts/system-deps.mjs', import.meta.url));
  spawnSync(process.execPath, [script, 'espeak-ng'], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (!ok()) throw new UserError('espeak-ng is not installed and could not be installed automatically: run `apt-get install espeak-ng`');
}

const escapeXml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

interface ClipSpec {
  file: string;
  speaker: SynthSpeaker;
  sentenceId: string;
  text: string;
  emotion: string;
  args: string[];
}

/** SSML and espeak arguments for one clip, with seeded jitter on every prosody dimension. */
function clipSpec(r: Resolved, spk: SynthSpeaker, si: number, emotion: string, dir: string): ClipSpec {
  const p = EMOTION_PROSODY[emotion]!;
  // One stream per clip, keyed by its identity, so adding speakers or emotions leaves other clips unchanged.
  const rng = new Rng(`${r.seed}:${spk.id}:${si}:${emotion}`);
  const j = (sd: number) => 1 + sd * rng.normal();
  const rate = Math.round(p.rate * j(0.07));
  const pitch = Math.round(p.pitch + 6 * rng.normal());
  const range = Math.max(5, Math.round(p.range * j(0.15)));
  const volume = Math.max(20, Math.min(160, Math.round(p.volume * j(0.1))));
  const gap = Math.max(0, Math.round(p.gap + rng.normal()));
  const text = r.sentences[si]!;
  let body = escapeXml(text);
  if (p.wobble > 0) {
    // Trembling delivery: each word at its own rate.
    body = text
      .split(/\s+/)
      .map((w) => `<prosody rate="${Math.round(100 * (1 + p.wobble * (rng.next() * 2 - 1)))}%">${escapeXml(w)}</prosody>`)
      .join(' ');
  }
  const ssml = `<speak><prosody rate="${rate}%" pitch="${pitch >= 0 ? '+' : ''}${pitch}%" range="${range}%" volume="${volume}%">${body}</prosody></speak>`;
  const sentenceId = `s${String(si + 1).padStart(2, '0')}`;
  const file = path.join(dir, 'wav', `${spk.id}_${sentenceId}_${emotion}.wav`);
  // Base amplitude 60 (of espeak's 0-200) leaves headroom: at the default 100, volume above ~140 % clips.
  const args = ['-m', '-v', spk.voice, '-a', '60', '-p', String(spk.pitch), '-s', String(spk.rate), '-g', String(gap), ssml];
  return { file, speaker: spk, sentenceId, text, emotion, args };
}

function runEspeak(args: string[], out: string): Promise<void> {
  return new Promise((resolveP, reject) => {
    const child = spawn(ESPEAK, [...args.slice(0, -1), '-w', out, args.at(-1)!], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()).length > 4000 && (err = err.slice(-4000)));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new UserError(`cannot run espeak-ng: ${e.message} (apt-get install espeak-ng)`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolveP();
      else reject(new UserError(`espeak-ng failed (${signal ?? `exit ${code}`}): ${oneLine(err) || 'no message'}`, out));
    });
  });
}

function paramsKey(r: Resolved): string {
  return JSON.stringify({ version: SYNTH_VERSION, seed: r.seed, speakers: r.speakers, sentences: r.sentences, emotions: r.emotions });
}

/**
 * True when `dir` holds a complete corpus made with these parameters: corpus.json matches, the manifest lists
 * every clip, and every WAV header is valid with the listed duration.
 */
export function isCompleteCorpus(dir: string, opts: SynthOptions = {}): boolean {
  const r = resolve(opts);
  try {
    const meta = JSON.parse(fs.readFileSync(path.join(dir, 'corpus.json'), 'utf8')) as { params?: string };
    if (meta.params !== paramsKey(r)) return false;
    const ds = loadManifest(path.join(dir, 'manifest.csv'));
    if (ds.items.length !== r.speakers.length * r.sentences.length * r.emotions.length) return false;
    for (const it of ds.items) {
      const h = readWavHeader(it.path);
      if (h.sampleRate !== 16000 || h.channels !== 1 || Math.abs(h.durationS - it.durationS!) > 0.001) return false;
    }
    return true;
  } catch {
    return false;
  }
}

/** Render the corpus into `outDir` (wav/ + manifest.csv + README.md + corpus.json). */
export async function synthesizeCorpus(outDir: string, opts: SynthOptions = {}): Promise<SynthResult> {
  const t0 = performance.now();
  const dir = path.resolve(outDir);
  const r = resolve(opts);
  ensureEspeak();
  fs.mkdirSync(path.join(dir, 'wav'), { recursive: true });
  const specs: ClipSpec[] = [];
  for (const spk of r.speakers) for (let si = 0; si < r.sentences.length; si++) for (const e of r.emotions) specs.push(clipSpec(r, spk, si, e, dir));
  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-espeak-'));
  const rows: ManifestRow[] = new Array(specs.length);
  let next = 0;
  let done = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= specs.length) return;
      const s = specs[i]!;
      const tmp = path.join(tmpDir, `${i}-${crypto.randomBytes(3).toString('hex')}.wav`);
      await runEspeak(s.args, tmp);
      const fd = openRegularFile(tmp);
      let decoded;
      try {
        decoded = decodeWavFd(fd, fs.fstatSync(fd).size, tmp, { maxSeconds: 60, maxBytes: 64 << 20 });
      } finally {
        fs.closeSync(fd);
      }
      fs.rmSync(tmp, { force: true });
      // espeak writes 22.05 kHz; MEDIUM quality is plenty for synthetic speech and ~4x faster than BEST.
      const y = await resample(decoded.mono, decoded.header.sampleRate, 16000, { quality: 'medium' });
      // A seeded noise floor (-60 dBFS RMS, a quiet room): espeak's pauses are digital zeros, which no recording
      // has and which put a fixed fraction of every clip at the fbank's log floor.
      const noise = new Rng(`${r.seed}:noise:${s.speaker.id}:${s.sentenceId}:${s.emotion}`);
      for (let k = 0; k < y.length; k++) y[k] = Math.max(-1, Math.min(1, y[k]! + 0.001 * noise.normal()));
      writeWav(s.file, y, 16000, 'pcm16');
      rows[i] = {
        path: path.relative(dir, s.file).split(path.sep).join('/'),
        speaker: s.speaker.id,
        gender: s.speaker.gender,
        emotion: s.emotion,
        sentence: s.sentenceId,
        transcript: s.text,
        duration_s: (y.length / 16000).toFixed(3),
        sample_rate: 16000,
      };
      opts.onProgress?.(++done, specs.length);
    }
  };
  try {
    const n = Math.max(1, Math.min(opts.concurrency ?? 2, specs.length));
    await Promise.all(Array.from({ length: n }, worker));
  } finally {
    fs.rmSync(tmpDir, { recursive: true, force: true });
  }
  // Metadata last: a corpus without corpus.json (an interrupted run) is regenerated by the demo.
  writeManifest(path.join(dir, 'manifest.csv'), rows);
  writeFileAtomic(
    path.join(dir, 'README.md'),
    [
      '# SYNTHETIC emotional speech (espeak-ng) - not real speech',
      '',
      `SYNTHETIC corpus generated by \`emosllm demo\` (src/data/synth.ts, version ${SYNTH_VERSION}, seed ${r.seed}): ${specs.length} clips =`,
      `${r.speakers.length} espeak-ng voices x ${r.sentences.length} English sentences x ${r.emotions.length} emotions (${r.emotions.join(', ')}).`,
      'Emotions are rendered with prosody only (rate, pitch, pitch range, loudness, word gaps, with per-clip random jitter),',
      'over a seeded -60 dBFS noise floor.',
      'It exercises the pipeline end to end; results on it say nothing about real emotional speech.',
      'Files: wav/<speaker>_<sentence>_<emotion>.wav (16 kHz mono 16-bit), manifest.csv (same columns as emodb-dev).',
      '',
    ].join('\n'),
  );
  writeFileAtomic(path.join(dir, 'corpus.json'), JSON.stringify({ synthetic: true, generator: 'emosllm synth', params: paramsKey(r), clips: specs.length }, null, 2) + '\n');
  return { dir, manifest: path.join(dir, 'manifest.csv'), clips: specs.length, seconds: (performance.now() - t0) / 1000, reused: false };
}

/** Reuse `outDir` when it already holds this exact corpus, otherwise (re)generate it. */
export async function ensureSynthCorpus(outDir: string, opts: SynthOptions = {}): Promise<SynthResult> {
  const dir = path.resolve(outDir);
  if (isCompleteCorpus(dir, opts)) {
    const clips = loadManifest(path.join(dir, 'manifest.csv')).items.length;
    return { dir, manifest: path.join(dir, 'manifest.csv'), clips, seconds: 0, reused: true };
  }
  return synthesizeCorpus(dir, opts);
}
