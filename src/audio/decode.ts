/**
 * Audio file decoding: WAV by our own validating parser (wav.ts), everything else by the WASM decoders of
 * `audio-decode` (all shipped as npm packages, no network or system codecs) in a worker thread with a timeout.
 * Every rejection is a one-line UserError naming the file.
 */
import fs from 'node:fs';
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { UserError, oneLine } from '../util/errors.ts';
import { openRegularFile } from '../util/fs.ts';
import { decodeWavFd, readWavHeaderFd } from './wav.ts';
import { resample, type ResampleQuality } from './resample.ts';

export type AudioFormat = 'wav' | 'flac' | 'mp3' | 'ogg-vorbis' | 'opus' | 'm4a' | 'webm';

export interface DecodeOptions {
  /** Longest accepted clip, in seconds (default 600). Checked before samples are allocated where possible. */
  maxSeconds?: number;
  /** Largest accepted file, in bytes (default 1 GiB). */
  maxBytes?: number;
  /** Wall-clock limit for the compressed-format decoders (default 60 s). */
  timeoutMs?: number;
}

export interface DecodedAudio {
  /** Mono mix (mean of the channels), float32, nominally in [-1, 1]. */
  samples: Float32Array;
  sampleRate: number;
  /** Channel count of the source. */
  channels: number;
  durationS: number;
  format: AudioFormat;
}

export const DECODE_DEFAULTS = { maxSeconds: 600, maxBytes: 1 << 30, timeoutMs: 60_000 } as const;

/** Samples at or below this magnitude everywhere make a clip "silent". */
export const SILENCE_THRESHOLD = 1e-6;

const SUPPORTED = 'WAV, FLAC, MP3, Ogg Vorbis, Opus, M4A/MP4 (AAC), WebM';

/** Identify the container from the first bytes of a file. */
export function sniffFormat(head: Uint8Array): AudioFormat | undefined {
  const s = (off: number, len: number) => String.fromCharCode(...head.subarray(off, off + len));
  if (head.length >= 12 && (s(0, 4) === 'RIFF' || s(0, 4) === 'RF64' || s(0, 4) === 'BW64') && s(8, 4) === 'WAVE') return 'wav';
  let off = 0;
  // An ID3v2 tag may precede MP3 (and sometimes FLAC) data.
  if (head.length >= 10 && s(0, 3) === 'ID3') {
    const size = ((head[6]! & 0x7f) << 21) | ((head[7]! & 0x7f) << 14) | ((head[8]! & 0x7f) << 7) | (head[9]! & 0x7f);
    off = 10 + size + (head[5]! & 0x10 ? 10 : 0);
    if (off >= head.length) return 'mp3'; // tag longer than what we sniffed: nearly always MP3
  }
  if (head.length >= off + 4 && s(off, 4) === 'fLaC') return 'flac';
  if (head.length >= off + 2 && head[off] === 0xff && (head[off + 1]! & 0xe0) === 0xe0 && (head[off + 1]! & 0x06) !== 0) return 'mp3';
  if (off > 0) return undefined;
  if (head.length >= 4 && s(0, 4) === 'OggS') {
    const first = s(0, Math.min(head.length, 512));
    if (first.includes('OpusHead')) return 'opus';
    if (first.includes('\x01vorbis')) return 'ogg-vorbis';
    if (first.includes('\x7fFLAC')) return 'flac';
    return undefined;
  }
  if (head.length >= 8 && s(4, 4) === 'ftyp') return 'm4a';
  if (head.length >= 4 && head[0] === 0x1a && head[1] === 0x45 && head[2] === 0xdf && head[3] === 0xa3) return 'webm';
  return undefined;
}

function looksLikeText(head: Uint8Array): boolean {
  if (head.length === 0) return false;
  let printable = 0;
  // Bytes >= 0x80 count as text: they are UTF-8 sequences in text files (random data still falls well short).
  for (const b of head) if (b === 9 || b === 10 || b === 13 || (b >= 32 && b < 127) || b >= 0x80) printable++;
  return printable / head.length > 0.95;
}

function readHead(fd: number, size: number): Uint8Array {
  const head = new Uint8Array(Math.min(size, 4096));
  fs.readSync(fd, head, 0, head.length, 0);
  return head;
}

function unrecognised(head: Uint8Array, where: string): UserError {
  if (head.length >= 4 && String.fromCharCode(...head.subarray(0, 4)) === 'OggS') {
    return new UserError(`Ogg stream with an unsupported codec (supported: ${SUPPORTED})`, where);
  }
  const kind = looksLikeText(head) ? 'looks like text' : 'unrecognised content';
  return new UserError(`not an audio file (${kind}; supported: ${SUPPORTED})`, where);
}

/** Decode any supported audio file to a mono float32 signal at its own sample rate. */
export async function decodeAudioFile(file: string, opts: DecodeOptions = {}): Promise<DecodedAudio> {
  const maxSeconds = opts.maxSeconds ?? DECODE_DEFAULTS.maxSeconds;
  const maxBytes = opts.maxBytes ?? DECODE_DEFAULTS.maxBytes;
  const timeoutMs = opts.timeoutMs ?? DECODE_DEFAULTS.timeoutMs;
  if (!(maxSeconds > 0)) throw new UserError(`maxSeconds must be positive, got ${maxSeconds}`, file);
  let result: Omit<DecodedAudio, 'durationS'> | undefined;
  let bytes: Uint8Array | undefined;
  let format: AudioFormat | undefined;
  const fd = openRegularFile(file);
  try {
    const size = fs.fstatSync(fd).size;
    if (size === 0) throw new UserError('empty file (0 bytes)', file);
    if (size > maxBytes) throw new UserError(`file is ${size} bytes, over the ${maxBytes}-byte limit (maxBytes)`, file);
    if (size < 12) throw new UserError(`not an audio file (only ${size} bytes)`, file);
    const head = readHead(fd, size);
    format = sniffFormat(head);
    if (!format) throw unrecognised(head, file);
    if (format === 'wav') {
      const { header, mono } = decodeWavFd(fd, size, file, { maxSeconds, maxBytes });
      result = { samples: mono, sampleRate: header.sampleRate, channels: header.channels, format };
    } else {
      bytes = new Uint8Array(size);
      let got = 0;
      while (got < size) {
        const n = fs.readSync(fd, bytes, got, size - got, got);
        if (n === 0) break;
        got += n;
      }
      if (got < size) bytes = bytes.slice(0, got);
    }
  } finally {
    fs.closeSync(fd);
  }
  if (!result) result = { ...(await decodeInWorker(bytes!, format as Exclude<AudioFormat, 'wav'>, file, maxSeconds, timeoutMs)), format: format! };
  const { samples, sampleRate } = result;
  if (samples.length === 0) throw new UserError(`no audio decoded from the ${result.format} stream (corrupt or empty)`, file);
  const durationS = samples.length / sampleRate;
  if (durationS > maxSeconds) throw new UserError(`audio is ${durationS.toFixed(1)} s long, over the ${maxSeconds} s limit (maxSeconds)`, file);
  let loud = false;
  for (let i = 0; i < samples.length; i++) {
    const v = samples[i]!;
    if (!Number.isFinite(v)) throw new UserError(`sample ${i} is ${v} (NaN/Inf samples are not audio)`, file);
    if (!loud && Math.abs(v) > SILENCE_THRESHOLD) loud = true;
  }
  if (!loud) throw new UserError(`silent: every sample is below ${SILENCE_THRESHOLD} in magnitude`, file);
  return { ...result, durationS };
}

export interface Load16kOptions extends DecodeOptions {
  quality?: ResampleQuality;
}

/** Decode, mix to mono and resample to 16 kHz (skipped when the file already is 16 kHz). */
export async function loadAudio16k(file: string, opts: Load16kOptions = {}): Promise<Float32Array> {
  const a = await decodeAudioFile(file, opts);
  return resample(a.samples, a.sampleRate, 16000, { quality: opts.quality });
}

export interface AudioInfo {
  format: AudioFormat;
  sampleRate: number;
  channels: number;
  frames: number;
  durationS: number;
  /** 'header' when read from the WAV/FLAC header without decoding, 'decoded' otherwise. */
  source: 'header' | 'decoded';
}

/**
 * Duration and format of a file, from the header alone for WAV and FLAC (fast: a corpus summary must not
 * decode thousands of files); other formats are decoded.
 */
export async function probeAudio(file: string, opts: DecodeOptions = {}): Promise<AudioInfo> {
  const fd = openRegularFile(file);
  let format: AudioFormat | undefined;
  try {
    const size = fs.fstatSync(fd).size;
    if (size === 0) throw new UserError('empty file (0 bytes)', file);
    const head = readHead(fd, size);
    format = sniffFormat(head);
    if (!format) throw unrecognised(head, file);
    if (format === 'wav') {
      const h = readWavHeaderFd(fd, size, file);
      return { format, sampleRate: h.sampleRate, channels: h.channels, frames: h.frames, durationS: h.durationS, source: 'header' };
    }
    if (format === 'flac' && String.fromCharCode(...head.subarray(0, 4)) === 'fLaC' && head.length >= 42) {
      // STREAMINFO is always the first metadata block: 20-bit rate, 3-bit channels-1, 36-bit total samples.
      const b = head.subarray(8);
      const sampleRate = (b[10]! << 12) | (b[11]! << 4) | (b[12]! >> 4);
      const channels = ((b[12]! >> 1) & 7) + 1;
      const frames = (b[13]! & 0x0f) * 2 ** 32 + ((b[14]! << 24) >>> 0) + (b[15]! << 16) + (b[16]! << 8) + b[17]!;
      if (sampleRate > 0 && frames > 0) {
        return { format, sampleRate, channels, frames, durationS: frames / sampleRate, source: 'header' };
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  const a = await decodeAudioFile(file, opts);
  return { format: a.format, sampleRate: a.sampleRate, channels: a.channels, frames: a.samples.length, durationS: a.durationS, source: 'decoded' };
}

// ---------------------------------------------------------------------------------------------------------------
// Worker pool for the WASM decoders.

const WORKER_FORMAT: Record<Exclude<AudioFormat, 'wav'>, string> = {
  flac: 'flac',
  mp3: 'mp3',
  'ogg-vorbis': 'oga',
  opus: 'opus',
  m4a: 'm4a',
  webm: 'webm',
};

const MAX_BUSY = Math.max(1, Math.min(4, os.availableParallelism?.() ?? 2));
const MAX_IDLE = 2;
const idle: Worker[] = [];
let busy = 0;
const waiting: Array<() => void> = [];
let nextId = 1;

function spawnWorker(): Worker {
  // Cap the worker's JS heap; decoder output is bounded separately by maxSeconds.
  const w = new Worker(new URL('./decode-worker.mjs', import.meta.url), { resourceLimits: { maxOldGenerationSizeMb: 1024 } });
  // A crashed idle worker must not take the process down.
  w.on('error', () => undefined);
  return w;
}

async function acquire(): Promise<void> {
  if (busy < MAX_BUSY) {
    busy++;
    return;
  }
  await new Promise<void>((resolve) => waiting.push(resolve));
  busy++;
}

function release(): void {
  busy--;
  waiting.shift()?.();
}

interface WorkerReply {
  id: number;
  error?: string;
  tooLong?: boolean;
  samples?: Float32Array;
  sampleRate?: number;
  channels?: number;
  frames?: number;
}

async function decodeInWorker(
  bytes: Uint8Array,
  format: Exclude<AudioFormat, 'wav'>,
  where: string,
  maxSeconds: number,
  timeoutMs: number,
): Promise<{ samples: Float32Array; sampleRate: number; channels: number }> {
  await acquire();
  const w = idle.pop() ?? spawnWorker();
  w.ref();
  const id = nextId++;
  try {
    const reply = await new Promise<WorkerReply>((resolve, reject) => {
      let done = false;
      const finish = (fn: () => void) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        w.off('message', onMessage);
        w.off('error', onError);
        w.off('exit', onExit);
        fn();
      };
      const onMessage = (m: WorkerReply) => {
        if (m.id === id) finish(() => resolve(m));
      };
      const onError = (e: Error) => finish(() => reject(new UserError(`${format} decoder crashed: ${oneLine(e)}`, where)));
      const onExit = (code: number) => finish(() => reject(new UserError(`${format} decoder exited (code ${code})`, where)));
      const timer = setTimeout(() => {
        finish(() => reject(new UserError(`decoding timed out after ${(timeoutMs / 1000).toFixed(1)} s (corrupt or pathological ${format} file?)`, where)));
        void w.terminate();
      }, timeoutMs);
      w.on('message', onMessage);
      w.on('error', onError);
      w.on('exit', onExit);
      // `bytes` owns its whole buffer (allocated by the caller), so it can be transferred without a copy.
      w.postMessage({ id, bytes: bytes.buffer, format: WORKER_FORMAT[format], maxSeconds }, [bytes.buffer as ArrayBuffer]);
    });
    // Back to the idle pool (unref'd so it never keeps the process alive).
    w.unref();
    if (idle.length < MAX_IDLE) idle.push(w);
    else void w.terminate();
    if (reply.error !== undefined) throw new UserError(`cannot decode ${format}: ${oneLine(reply.error)}`, where);
    if (reply.tooLong) {
      throw new UserError(`audio is longer than the ${maxSeconds} s limit (maxSeconds)`, where);
    }
    return { samples: reply.samples!, sampleRate: reply.sampleRate!, channels: reply.channels! };
  } catch (e) {
    if (!(e instanceof UserError)) void w.terminate();
    throw e;
  } finally {
    release();
  }
}

/** Terminate idle decoder workers (tests; long-lived processes never need it). */
export async function shutdownDecoders(): Promise<void> {
  const ws = idle.splice(0);
  await Promise.all(ws.map((w) => w.terminate()));
}
