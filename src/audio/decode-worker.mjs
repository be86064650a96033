// Worker thread that runs the WASM decoders of `audio-decode` (MP3, FLAC, Ogg Vorbis, Opus, M4A/AAC, WebM).
// It lives in its own thread so the caller can terminate it when a pathological file makes a decoder spin:
// a timeout in the same thread could never interrupt synchronous WASM. Plain JS, so it loads without tsx.
import { parentPort } from 'node:worker_threads';
import decode from 'audio-decode';

const CHUNK = 64 * 1024;

parentPort.on('message', async (msg) => {
  const { id, bytes, format, maxSeconds } = msg;
  try {
    const data = new Uint8Array(bytes);
    async function* chunks() {
      for (let i = 0; i < data.length; i += CHUNK) yield data.subarray(i, i + CHUNK);
    }
    const pieces = [];
    let frames = 0;
    let sampleRate = 0;
    let channels = 0;
    let maxFrames = Infinity;
    for await (const r of decode(chunks(), format)) {
      const cd = r.channelData;
      if (!cd.length || !cd[0].length) continue;
      if (!sampleRate) {
        sampleRate = r.sampleRate;
        if (!(sampleRate >= 1000 && sampleRate <= 768000)) throw new Error(`decoder reports sample rate ${sampleRate} Hz`);
        maxFrames = Math.ceil(maxSeconds * sampleRate);
      } else if (r.sampleRate !== sampleRate) {
        throw new Error(`sample rate changes mid-stream (${sampleRate} -> ${r.sampleRate} Hz)`);
      }
      channels = Math.max(channels, cd.length);
      const n = cd[0].length;
      // Stop as soon as the limit is passed so a tiny file claiming hours of audio cannot exhaust memory.
      if (frames + n > maxFrames) {
        parentPort.postMessage({ id, tooLong: true, sampleRate, frames: frames + n });
        return;
      }
      const mono = new Float32Array(n);
      const C = cd.length;
      for (let c = 0; c < C; c++) {
        const ch = cd[c];
        for (let i = 0; i < n; i++) mono[i] += ch[i];
      }
      if (C > 1) for (let i = 0; i < n; i++) mono[i] /= C;
      pieces.push(mono);
      frames += n;
    }
    const out = new Float32Array(frames);
    let o = 0;
    for (const p of pieces) {
      out.set(p, o);
      o += p.length;
    }
    parentPort.postMessage({ id, samples: out, sampleRate, channels, frames }, [out.buffer]);
  } catch (err) {
    parentPort.postMessage({ id, error: String((err && err.message) || err) });
  }
});
