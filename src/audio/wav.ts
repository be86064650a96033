/**
 * WAV (RIFF/WAVE) reading and writing, done by hand so that every header field is validated before a single
 * sample buffer is allocated: a lying header must produce a one-line UserError, never a huge allocation.
 *
 * Supported: PCM 8 (unsigned) / 16 / 24 / 32-bit, IEEE float 32 / 64-bit, A-law, mu-law, each either plain or
 * wrapped in WAVE_FORMAT_EXTENSIBLE.
 */
import fs from 'node:fs';
import { UserError } from '../util/errors.ts';
import { openRegularFile, writeFileAtomic } from '../util/fs.ts';

export type WavEncoding = 'pcm' | 'float' | 'alaw' | 'mulaw';

export interface WavHeader {
  encoding: WavEncoding;
  /** 1 PCM, 3 float, 6 A-law, 7 mu-law, 0xFFFE extensible (then `encoding` is the sub-format). */
  formatTag: number;
  extensible: boolean;
  channels: number;
  sampleRate: number;
  /** Container bits per sample (8, 16, 24, 32, 64). */
  bitsPerSample: number;
  blockAlign: number;
  /** Byte offset of the first sample in the file. */
  dataOffset: number;
  /** Bytes of sample data that will be read (whole frames only). */
  dataBytes: number;
  frames: number;
  durationS: number;
  /** True when the data size was a streaming placeholder and the data was taken to run to end of file. */
  streamed: boolean;
}

/** Limits that keep a hostile header from driving allocation. */
export const WAV_LIMITS = {
  maxChannels: 32,
  minSampleRate: 1000,
  maxSampleRate: 768_000,
  /** Chunks scanned before giving up (a real file has a handful). */
  maxChunks: 4096,
} as const;

const KSDATAFORMAT_TAIL = [0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71];

function fourcc(b: Uint8Array, off: number): string {
  return String.fromCharCode(b[off]!, b[off + 1]!, b[off + 2]!, b[off + 3]!);
}

/** Printable form of a chunk id for error messages (hostile ids may hold control bytes). */
function printable(id: string): string {
  return JSON.stringify(id.replace(/[^\x20-\x7e]/g, '?'));
}

function readAt(fd: number, len: number, pos: number): Uint8Array {
  const buf = new Uint8Array(len);
  let got = 0;
  while (got < len) {
    const n = fs.readSync(fd, buf, got, len - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  return got === len ? buf : buf.subarray(0, got);
}

/**
 * Parse and validate a WAV header from an open file descriptor. Reads chunk headers only, never the samples.
 * The RIFF size field is ignored (many writers leave it wrong); chunks are walked up to the real file size.
 */
export function readWavHeaderFd(fd: number, fileSize: number, where: string): WavHeader {
  if (fileSize < 12) throw new UserError(`not a WAV file: only ${fileSize} bytes`, where);
  const head = readAt(fd, 12, 0);
  const magic = fourcc(head, 0);
  if (magic === 'RF64' || magic === 'BW64') throw new UserError(`${magic} WAV files are not supported (convert to plain WAV or FLAC)`, where);
  if (magic !== 'RIFF' || fourcc(head, 8) !== 'WAVE') throw new UserError('not a WAV file (no RIFF/WAVE header)', where);

  let pos = 12;
  let fmt: Omit<WavHeader, 'dataOffset' | 'dataBytes' | 'frames' | 'durationS' | 'streamed'> | undefined;
  for (let chunks = 0; ; chunks++) {
    if (chunks >= WAV_LIMITS.maxChunks) throw new UserError(`more than ${WAV_LIMITS.maxChunks} chunks before the data chunk`, where);
    if (pos + 8 > fileSize) {
      throw new UserError(fmt ? 'no data chunk (file ends before any audio)' : 'no fmt chunk (file ends before the format header)', where);
    }
    const ch = readAt(fd, 8, pos);
    const id = fourcc(ch, 0);
    const size = new DataView(ch.buffer).getUint32(4, true);
    const bodyStart = pos + 8;
    const available = fileSize - bodyStart;
    if (id === 'fmt ') {
      if (size < 16) throw new UserError(`fmt chunk is ${size} bytes, need at least 16`, where);
      if (size > available) throw new UserError(`fmt chunk declares ${size} bytes but the file ends after ${available}`, where);
      fmt = parseFmt(readAt(fd, Math.min(size, 64), bodyStart), where);
    } else if (id === 'data') {
      if (!fmt) throw new UserError('data chunk comes before the fmt chunk', where);
      let dataBytes = size;
      let streamed = false;
      if (size > available) {
        // Writers that cannot seek (pipes, live recorders) leave a huge placeholder; the data then runs to EOF.
        if (size >= 0x7fff0000) {
          dataBytes = available;
          streamed = true;
        } else {
          throw new UserError(`truncated: data chunk declares ${size} bytes of audio but only ${available} follow`, where);
        }
      }
      const frames = Math.floor(dataBytes / fmt.blockAlign);
      if (frames === 0) throw new UserError('no audio samples (empty data chunk)', where);
      return { ...fmt, dataOffset: bodyStart, dataBytes: frames * fmt.blockAlign, frames, durationS: frames / fmt.sampleRate, streamed };
    } else if (size > available) {
      throw new UserError(`chunk ${printable(id)} at byte ${pos} declares ${size} bytes but the file ends after ${available}`, where);
    }
    pos = bodyStart + size + (size & 1);
  }
}

function parseFmt(b: Uint8Array, where: string): Omit<WavHeader, 'dataOffset' | 'dataBytes' | 'frames' | 'durationS' | 'streamed'> {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const formatTag = dv.getUint16(0, true);
  const channels = dv.getUint16(2, true);
  const sampleRate = dv.getUint32(4, true);
  const blockAlign = dv.getUint16(12, true);
  const bitsPerSample = dv.getUint16(14, true);
  let code = formatTag;
  let extensible = false;
  if (formatTag === 0xfffe) {
    extensible = true;
    if (b.byteLength < 40 || dv.getUint16(16, true) < 22) throw new UserError('WAVE_FORMAT_EXTENSIBLE fmt chunk is too short', where);
    code = dv.getUint16(24, true);
    for (let i = 0; i < KSDATAFORMAT_TAIL.length; i++) {
      if (b[26 + i] !== KSDATAFORMAT_TAIL[i]) throw new UserError('WAVE_FORMAT_EXTENSIBLE with an unknown sub-format GUID', where);
    }
  }
  const encoding: WavEncoding | undefined = code === 1 ? 'pcm' : code === 3 ? 'float' : code === 6 ? 'alaw' : code === 7 ? 'mulaw' : undefined;
  if (!encoding) throw new UserError(`unsupported WAV encoding (format tag 0x${code.toString(16)}; supported: PCM, float, A-law, mu-law)`, where);
  if (channels === 0) throw new UserError('WAV header declares 0 channels', where);
  if (channels > WAV_LIMITS.maxChannels) throw new UserError(`WAV header declares ${channels} channels (max ${WAV_LIMITS.maxChannels})`, where);
  if (sampleRate < WAV_LIMITS.minSampleRate || sampleRate > WAV_LIMITS.maxSampleRate) {
    throw new UserError(`WAV header declares sample rate ${sampleRate} Hz (allowed ${WAV_LIMITS.minSampleRate}-${WAV_LIMITS.maxSampleRate})`, where);
  }
  const okBits =
    encoding === 'pcm' ? [8, 16, 24, 32] : encoding === 'float' ? [32, 64] : [8];
  if (!okBits.includes(bitsPerSample)) throw new UserError(`unsupported ${bitsPerSample}-bit ${encoding} WAV (supported: ${okBits.join('/')}-bit)`, where);
  if (blockAlign !== channels * (bitsPerSample / 8)) {
    throw new UserError(`WAV block align ${blockAlign} does not match ${channels} channel(s) x ${bitsPerSample} bits`, where);
  }
  return { encoding, formatTag, extensible, channels, sampleRate, bitsPerSample, blockAlign };
}

export interface WavReadLimits {
  maxSeconds: number;
  maxBytes: number;
}

/** Read a WAV header from a path (opens and closes the file). */
export function readWavHeader(file: string): WavHeader {
  const fd = openRegularFile(file);
  try {
    return readWavHeaderFd(fd, fs.fstatSync(fd).size, file);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Decode a WAV file to a mono mix (mean of channels), checking limits before reading the samples.
 * Returns the header too (for the channel count and duration).
 */
export function decodeWavFd(fd: number, fileSize: number, where: string, limits: WavReadLimits): { header: WavHeader; mono: Float32Array } {
  const h = readWavHeaderFd(fd, fileSize, where);
  if (h.durationS > limits.maxSeconds) {
    throw new UserError(`audio is ${h.durationS.toFixed(1)} s long, over the ${limits.maxSeconds} s limit (maxSeconds)`, where);
  }
  if (h.dataBytes > limits.maxBytes) {
    throw new UserError(`audio data is ${h.dataBytes} bytes, over the ${limits.maxBytes}-byte limit (maxBytes)`, where);
  }
  const raw = readAt(fd, h.dataBytes, h.dataOffset);
  if (raw.byteLength !== h.dataBytes) throw new UserError('file shrank while being read', where);
  const mono = pcmToMono(raw, h, where);
  return { header: h, mono };
}

/** Convert interleaved sample bytes to a mono Float32Array in [-1, 1] (float data is passed through). */
function pcmToMono(raw: Uint8Array, h: WavHeader, where: string): Float32Array {
  const { channels: C, frames: N } = h;
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const out = new Float32Array(N);
  const inv = 1 / C;
  const total = N * C;
  // Accumulate in float64 so the channel mean is rounded once.
  let acc = 0;
  let c = 0;
  let f = 0;
  const push = (v: number): void => {
    acc += v;
    if (++c === C) {
      out[f++] = C === 1 ? acc : acc * inv;
      acc = 0;
      c = 0;
    }
  };
  switch (h.encoding) {
    case 'pcm':
      if (h.bitsPerSample === 8) for (let i = 0; i < total; i++) push((raw[i]! - 128) / 128);
      else if (h.bitsPerSample === 16) for (let i = 0; i < total; i++) push(dv.getInt16(2 * i, true) / 32768);
      else if (h.bitsPerSample === 24) {
        for (let i = 0, o = 0; i < total; i++, o += 3) {
          const v = (raw[o]! | (raw[o + 1]! << 8) | (raw[o + 2]! << 16)) << 8 >> 8; // sign-extend 24 -> 32
          push(v / 8388608);
        }
      } else for (let i = 0; i < total; i++) push(dv.getInt32(4 * i, true) / 2147483648);
      break;
    case 'float': {
      const get = h.bitsPerSample === 32 ? (i: number) => dv.getFloat32(4 * i, true) : (i: number) => dv.getFloat64(8 * i, true);
      for (let i = 0; i < total; i++) {
        const v = get(i);
        if (!Number.isFinite(v)) {
          throw new UserError(`sample ${Math.floor(i / C)} (channel ${i % C}) is ${v} (NaN/Inf samples are not audio)`, where);
        }
        push(v);
      }
      break;
    }
    case 'alaw':
      for (let i = 0; i < total; i++) push(alawToLinear(raw[i]!) / 32768);
      break;
    case 'mulaw':
      for (let i = 0; i < total; i++) push(mulawToLinear(raw[i]!) / 32768);
      break;
  }
  return out;
}

/** G.711 A-law byte -> 16-bit linear. */
export function alawToLinear(a: number): number {
  a ^= 0x55;
  const seg = (a & 0x70) >> 4;
  let t = (a & 0x0f) << 4;
  t += seg === 0 ? 8 : 0x108;
  if (seg > 1) t <<= seg - 1;
  return a & 0x80 ? t : -t;
}

/** G.711 mu-law byte -> 16-bit linear. */
export function mulawToLinear(u: number): number {
  u = ~u & 0xff;
  let t = ((u & 0x0f) << 3) + 0x84;
  t <<= (u & 0x70) >> 4;
  return u & 0x80 ? 0x84 - t : t - 0x84;
}

export type WavSampleFormat = 'pcm16' | 'pcm24' | 'pcm32' | 'float32';

/**
 * Encode channel data as a WAV file (interleaved). Integer formats round and clip to the representable range.
 * `channels` is a list of equally long Float32Arrays.
 */
export function encodeWav(channels: Float32Array | readonly Float32Array[], sampleRate: number, format: WavSampleFormat = 'pcm16'): Uint8Array {
  const chans = channels instanceof Float32Array ? [channels] : channels;
  const C = chans.length;
  if (C === 0) throw new Error('encodeWav: no channels');
  const N = chans[0]!.length;
  for (const ch of chans) if (ch.length !== N) throw new Error('encodeWav: channels differ in length');
  const bytes = format === 'pcm16' ? 2 : format === 'pcm24' ? 3 : 4;
  const dataBytes = N * C * bytes;
  const buf = new Uint8Array(44 + dataBytes + (dataBytes & 1));
  const dv = new DataView(buf.buffer);
  const ascii = (off: number, s: string) => { for (let i = 0; i < 4; i++) buf[off + i] = s.charCodeAt(i); };
  ascii(0, 'RIFF');
  dv.setUint32(4, buf.byteLength - 8, true);
  ascii(8, 'WAVE');
  ascii(12, 'fmt ');
  dv.setUint32(16, 16, true);
  dv.setUint16(20, format === 'float32' ? 3 : 1, true);
  dv.setUint16(22, C, true);
  dv.setUint32(24, sampleRate, true);
  dv.setUint32(28, sampleRate * C * bytes, true);
  dv.setUint16(32, C * bytes, true);
  dv.setUint16(34, bytes * 8, true);
  ascii(36, 'data');
  dv.setUint32(40, dataBytes, true);
  let o = 44;
  for (let i = 0; i < N; i++) {
    for (let c = 0; c < C; c++) {
      const x = chans[c]![i]!;
      if (format === 'float32') {
        dv.setFloat32(o, x, true);
        o += 4;
        continue;
      }
      const full = format === 'pcm16' ? 32768 : format === 'pcm24' ? 8388608 : 2147483648;
      const v = Math.max(-full, Math.min(full - 1, Math.round(x * full)));
      if (format === 'pcm16') dv.setInt16(o, v, true);
      else if (format === 'pcm32') dv.setInt32(o, v, true);
      else {
        buf[o] = v & 0xff;
        buf[o + 1] = (v >> 8) & 0xff;
        buf[o + 2] = (v >> 16) & 0xff;
      }
      o += bytes;
    }
  }
  return buf;
}

/** Write a WAV file atomically. */
export function writeWav(file: string, channels: Float32Array | readonly Float32Array[], sampleRate: number, format: WavSampleFormat = 'pcm16'): void {
  writeFileAtomic(file, encodeWav(channels, sampleRate, format));
}
