/**
 * Audio in the browser: decode any file the browser can decode (Web Audio decodeAudioData), mix to mono,
 * resample to the model's rate (OfflineAudioContext), and record from the microphone (getUserMedia +
 * MediaRecorder). Nothing leaves the page.
 */

export interface DecodedClip {
  /** Mono samples at `sampleRate`, in [-1, 1]. */
  samples: Float32Array;
  sampleRate: number;
  channels: number;
  durationSeconds: number;
}

/** Mean over channels, accumulated in float64 (as src/audio/wav.ts does for WAV files in Node). */
export function mixToMono(channels: Float32Array[]): Float32Array {
  if (channels.length === 1) return channels[0]!.slice();
  const n = channels[0]!.length;
  const out = new Float32Array(n);
  const inv = 1 / channels.length;
  for (let i = 0; i < n; i++) {
    let acc = 0;
    for (const ch of channels) acc += ch[i]!;
    out[i] = acc * inv;
  }
  return out;
}

/** Resamples a mono signal with the browser's own resampler (an OfflineAudioContext render). */
export async function resampleOffline(samples: Float32Array, fromRate: number, toRate: number): Promise<Float32Array> {
  if (fromRate === toRate) return samples;
  const length = Math.max(1, Math.round((samples.length * toRate) / fromRate));
  const ctx = new OfflineAudioContext(1, length, toRate);
  const buf = ctx.createBuffer(1, samples.length, fromRate);
  buf.copyToChannel(samples as Float32Array<ArrayBuffer>, 0);
  const src = ctx.createBufferSource();
  src.buffer = buf;
  src.connect(ctx.destination);
  src.start();
  const out = await ctx.startRendering();
  return out.getChannelData(0).slice();
}

/**
 * Decodes an audio file to mono at `sampleRate`. decodeAudioData runs in an OfflineAudioContext at the
 * target rate, so the browser resamples while decoding (a file already at that rate is not resampled: a
 * 16 kHz 16-bit WAV decodes to exactly int16 / 32768).
 */
export async function decodeAudio(bytes: ArrayBuffer, sampleRate: number): Promise<DecodedClip> {
  const ctx = new OfflineAudioContext(1, 1, sampleRate);
  let buffer: AudioBuffer;
  try {
    buffer = await ctx.decodeAudioData(bytes);
  } catch (e) {
    throw new Error(`this browser cannot decode the file (${e instanceof Error ? e.message : String(e)})`);
  }
  const channels = Array.from({ length: buffer.numberOfChannels }, (_, c) => buffer.getChannelData(c));
  let samples = mixToMono(channels);
  if (buffer.sampleRate !== sampleRate) samples = await resampleOffline(samples, buffer.sampleRate, sampleRate);
  if (samples.length === 0) throw new Error('the file holds no audio');
  for (let i = 0; i < samples.length; i++) {
    if (!Number.isFinite(samples[i]!)) throw new Error(`sample ${i} is not a number`);
  }
  return { samples, sampleRate, channels: buffer.numberOfChannels, durationSeconds: samples.length / sampleRate };
}

const RECORDER_TYPES = ['audio/webm;codecs=opus', 'audio/ogg;codecs=opus', 'audio/webm', 'audio/mp4'];

/** Microphone recording; `stop()` gives the recorded file (decoded like any upload). */
export class MicRecorder {
  private recorder?: MediaRecorder;
  private stream?: MediaStream;
  private chunks: Blob[] = [];
  private done?: Promise<Blob>;
  startedAt = 0;

  get recording(): boolean {
    return this.recorder?.state === 'recording';
  }

  async start(): Promise<void> {
    if (!navigator.mediaDevices?.getUserMedia) throw new Error('this browser has no microphone access here (a page needs https or localhost)');
    if (typeof MediaRecorder === 'undefined') throw new Error('this browser cannot record (no MediaRecorder)');
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    const mimeType = RECORDER_TYPES.find((t) => MediaRecorder.isTypeSupported(t));
    const rec = new MediaRecorder(this.stream, mimeType ? { mimeType } : undefined);
    this.chunks = [];
    this.done = new Promise<Blob>((resolve, reject) => {
      rec.ondataavailable = (e) => {
        if (e.data.size > 0) this.chunks.push(e.data);
      };
      rec.onstop = () => resolve(new Blob(this.chunks, { type: rec.mimeType || mimeType || 'audio/webm' }));
      rec.onerror = (e) => reject(new Error(`recording failed: ${String((e as ErrorEvent).error ?? e.type)}`));
    });
    rec.start(250);
    this.recorder = rec;
    this.startedAt = performance.now();
  }

  async stop(): Promise<Blob> {
    if (!this.recorder || !this.done) throw new Error('not recording');
    if (this.recorder.state !== 'inactive') this.recorder.stop();
    try {
      return await this.done;
    } finally {
      for (const t of this.stream?.getTracks() ?? []) t.stop();
      this.recorder = undefined;
      this.stream = undefined;
    }
  }
}
