/**
 * Malformed-input fuzzing: hundreds of broken files through the real decoders in one process. Each must either
 * be rejected with a one-line UserError naming the file, or (when it is in fact valid) decode to finite audio.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeAudioFile, shutdownDecoders } from './decode.ts';
import { encodeWav } from './wav.ts';
import { UserError } from '../util/errors.ts';
import { Rng } from '../util/rng.ts';
import { emodbDev, tempDir } from '../../test/fixtures-gen/paths.ts';
import { ffmpeg } from '../../test/fixtures-gen/tools.ts';

type Expect = 'reject' | 'ok' | 'either';
interface Case {
  name: string;
  expect: Expect;
  /** For rejections: the message must match. */
  match?: RegExp;
  bytes?: Uint8Array;
  /** Files made another way (sparse files, directories) are created by `make`. */
  make?: (file: string) => void;
  opts?: { maxSeconds?: number; maxBytes?: number; timeoutMs?: number };
}

const u32 = (v: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  return b;
};
const u16 = (v: number) => {
  const b = new Uint8Array(2);
  new DataView(b.buffer).setUint16(0, v & 0xffff, true);
  return b;
};
const ascii = (s: string) => new Uint8Array([...s].map((c) => c.charCodeAt(0)));
const cat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
};
/** A chunk with an explicit (possibly lying) declared size. */
const chunk = (id: string, body: Uint8Array, declared = body.length) => cat(ascii(id), u32(declared), body, body.length & 1 ? new Uint8Array(1) : new Uint8Array(0));
const riff = (chunks: Uint8Array[], riffSize?: number, magic = 'RIFF') => {
  const body = cat(ascii('WAVE'), ...chunks);
  return cat(ascii(magic), u32(riffSize ?? body.length), body);
};
interface Fmt {
  tag?: number;
  channels?: number;
  rate?: number;
  bits?: number;
  blockAlign?: number;
}
const fmtBody = (f: Fmt = {}) => {
  const channels = f.channels ?? 1;
  const bits = f.bits ?? 16;
  const rate = f.rate ?? 16000;
  const ba = f.blockAlign ?? channels * Math.ceil(bits / 8);
  return cat(u16(f.tag ?? 1), u16(channels), u32(rate), u32(rate * ba), u16(ba), u16(bits));
};

const emo = emodbDev();
const dir = tempDir('fuzz');
const rng = new Rng('fuzz');
let pcm16: Uint8Array; // 1 s of real speech, 16-bit mono samples
let validWav: Uint8Array;
const compressed: Record<string, Uint8Array> = {};

beforeAll(async () => {
  const a = await decodeAudioFile(path.join(emo.wavDir, '03a05Aa.wav'));
  const x = a.samples.subarray(8000, 24000);
  validWav = encodeWav(x, 16000, 'pcm16');
  pcm16 = validWav.subarray(44);
  const src = path.join(dir, 'src.wav');
  fs.writeFileSync(src, validWav);
  for (const [ext, args] of [
    ['mp3', ['-c:a', 'libmp3lame', '-b:a', '32k']],
    ['flac', []],
    ['ogg', ['-c:a', 'libvorbis']],
    ['opus', ['-c:a', 'libopus']],
  ] as const) {
    const out = path.join(dir, `src.${ext}`);
    ffmpeg('-i', src, ...args, out);
    compressed[ext] = new Uint8Array(fs.readFileSync(out));
  }
});

afterAll(async () => {
  await shutdownDecoders();
  fs.rmSync(dir, { recursive: true, force: true });
});

function buildCases(): Case[] {
  const cases: Case[] = [];
  const fmt = chunk('fmt ', fmtBody());
  const data = chunk('data', pcm16);

  // Sanity: the untouched file decodes.
  cases.push({ name: 'valid 16-bit WAV', expect: 'ok', bytes: validWav });

  // 1. Truncation at many lengths: header, fmt, data.
  const lengths = new Set<number>([1, 2, 3, 4, 7, 8, 11, 12, 13, 15, 16, 19, 20, 24, 28, 32, 35, 36, 39, 40, 43, 44, 45, 46, 60, 100, 1000]);
  for (let i = 0; i < 25; i++) lengths.add(44 + rng.int(pcm16.length));
  lengths.add(validWav.length - 1);
  for (const n of lengths) {
    cases.push({ name: `truncated to ${n} bytes`, expect: 'reject', bytes: validWav.slice(0, n), match: n < 12 ? /not a WAV|not an audio file|only \d+ bytes/ : undefined });
  }

  // 2. Lying RIFF size: ignored (writers often get it wrong), the file is otherwise valid.
  for (const rs of [0, 4, 36, 0xffffffff, 0x7fffffff, validWav.length + 1000]) {
    cases.push({ name: `RIFF size ${rs}`, expect: 'ok', bytes: riff([fmt, data], rs) });
  }

  // 3. Lying data sizes.
  for (const ds of [pcm16.length + 2, pcm16.length + 1000, 0x10000000, 0x7ffeffff]) {
    cases.push({ name: `data size ${ds} > file`, expect: 'reject', match: /truncated/, bytes: riff([fmt, chunk('data', pcm16, ds)]) });
  }
  for (const ds of [0xffffffff, 0x7fffffff, 0x7ffff000]) {
    // Streaming placeholders: the data runs to end of file, as written by pipes; valid.
    cases.push({ name: `streaming placeholder data size 0x${ds.toString(16)}`, expect: 'ok', bytes: riff([fmt, chunk('data', pcm16, ds)], 0xffffffff) });
  }
  cases.push({ name: 'data size 0', expect: 'reject', match: /no audio samples/, bytes: riff([fmt, chunk('data', new Uint8Array(0))]) });
  cases.push({ name: 'data size 1 (less than a frame)', expect: 'reject', match: /no audio samples/, bytes: riff([fmt, chunk('data', new Uint8Array(1))]) });
  cases.push({ name: 'odd data size (partial last frame)', expect: 'ok', bytes: riff([fmt, chunk('data', pcm16.slice(0, 1001))]) });

  // 4. Absurd / unsupported fmt fields.
  const badFmts: Array<[string, Fmt, RegExp]> = [
    ['zero channels', { channels: 0, blockAlign: 0 }, /0 channels/],
    ['65535 channels', { channels: 65535, blockAlign: 65535 * 2 }, /65535 channels/],
    ['33 channels', { channels: 33 }, /33 channels/],
    ['sample rate 0', { rate: 0 }, /sample rate 0/],
    ['sample rate 1', { rate: 1 }, /sample rate 1 /],
    ['sample rate 999', { rate: 999 }, /sample rate 999/],
    ['sample rate 0xFFFFFFFF', { rate: 0xffffffff }, /sample rate 4294967295/],
    ['sample rate 10 MHz', { rate: 10_000_000 }, /sample rate 10000000/],
    ['bits 0', { bits: 0, blockAlign: 2 }, /0-bit/],
    ['bits 7', { bits: 7 }, /7-bit/],
    ['bits 12', { bits: 12 }, /12-bit/],
    ['bits 48', { bits: 48 }, /48-bit/],
    ['PCM 64-bit', { bits: 64 }, /64-bit pcm/],
    ['float 16-bit', { tag: 3, bits: 16 }, /16-bit float/],
    ['float 24-bit', { tag: 3, bits: 24 }, /24-bit float/],
    ['A-law 16-bit', { tag: 6, bits: 16 }, /16-bit alaw/],
    ['ADPCM (tag 2)', { tag: 2, bits: 4, blockAlign: 256 }, /format tag 0x2/],
    ['MP3-in-WAV (tag 0x55)', { tag: 0x55 }, /format tag 0x55/],
    ['tag 0', { tag: 0 }, /format tag 0x0/],
    ['block align 0', { blockAlign: 0 }, /block align 0/],
    ['block align 3', { blockAlign: 3 }, /block align 3/],
    ['block align 65535', { blockAlign: 65535 }, /block align 65535/],
  ];
  for (const [name, f, match] of badFmts) cases.push({ name: `fmt: ${name}`, expect: 'reject', match, bytes: riff([chunk('fmt ', fmtBody(f)), data]) });
  for (const size of [0, 8, 15]) {
    cases.push({ name: `fmt chunk of ${size} bytes`, expect: 'reject', match: /fmt chunk is \d+ bytes/, bytes: riff([chunk('fmt ', fmtBody().slice(0, size)), data]) });
  }
  cases.push({ name: 'fmt size 0xFFFFFFFF', expect: 'reject', match: /fmt chunk declares/, bytes: riff([chunk('fmt ', fmtBody(), 0xffffffff), data]) });
  const ext = (guidTail: number[], cb = 22, sub = 1) =>
    cat(fmtBody({ tag: 0xfffe }), u16(cb), u16(16), u32(4), u16(sub), new Uint8Array(guidTail));
  const goodTail = [0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71];
  cases.push({ name: 'extensible PCM (hand-built)', expect: 'ok', bytes: riff([chunk('fmt ', ext(goodTail)), data]) });
  cases.push({ name: 'extensible with unknown GUID', expect: 'reject', match: /unknown sub-format GUID/, bytes: riff([chunk('fmt ', ext(goodTail.map((b) => b ^ 0x5a))), data]) });
  cases.push({ name: 'extensible with cbSize 0', expect: 'reject', match: /too short/, bytes: riff([chunk('fmt ', ext(goodTail, 0)), data]) });
  cases.push({ name: 'extensible truncated fmt', expect: 'reject', match: /too short/, bytes: riff([chunk('fmt ', fmtBody({ tag: 0xfffe })), data]) });
  cases.push({ name: 'extensible sub-format 0x55', expect: 'reject', match: /format tag 0x55/, bytes: riff([chunk('fmt ', ext(goodTail, 22, 0x55)), data]) });

  // 5. Chunk structure.
  cases.push({ name: 'data before fmt', expect: 'reject', match: /before the fmt/, bytes: riff([data, fmt]) });
  cases.push({ name: 'no data chunk', expect: 'reject', match: /no data chunk/, bytes: riff([fmt]) });
  cases.push({ name: 'no fmt chunk', expect: 'reject', match: /data chunk comes before the fmt chunk/, bytes: riff([data]) });
  cases.push({ name: 'only RIFF/WAVE', expect: 'reject', match: /no fmt chunk/, bytes: riff([]) });
  cases.push({ name: 'LIST chunk claiming 0xFFFFFFF0 bytes', expect: 'reject', match: /declares 4294967280 bytes/, bytes: riff([fmt, chunk('LIST', ascii('INFOjunk'), 0xfffffff0), data]) });
  cases.push({ name: 'unknown chunks then data', expect: 'ok', bytes: riff([chunk('junk', new Uint8Array(33)), fmt, chunk('fact', u32(8000)), chunk('bext', new Uint8Array(602)), data]) });
  cases.push({ name: '5000 empty chunks', expect: 'reject', match: /more than 4096 chunks/, bytes: riff([fmt, ...Array.from({ length: 5000 }, () => chunk('pad ', new Uint8Array(0))), data]) });
  cases.push({ name: 'control bytes in chunk id', expect: 'reject', match: /chunk "\?\?\?\?"/, bytes: riff([fmt, chunk('\x00\x01\x02\x03', new Uint8Array(4), 0x7fffffff), data]) });
  cases.push({ name: 'RF64 magic', expect: 'reject', match: /RF64/, bytes: riff([fmt, data], 0xffffffff, 'RF64') });
  cases.push({ name: 'RIFF but not WAVE', expect: 'reject', match: /not an audio file/, bytes: cat(ascii('RIFF'), u32(100), ascii('AVI '), new Uint8Array(100)) });

  // 6. NaN / Inf / silence / absurd magnitudes.
  const floatData = (vals: number[], bits: 32 | 64 = 32) => {
    const n = 4000;
    const b = new Uint8Array(n * (bits / 8));
    const dv = new DataView(b.buffer);
    for (let i = 0; i < n; i++) {
      const v = vals[i % vals.length]!;
      if (bits === 32) dv.setFloat32(4 * i, v, true);
      else dv.setFloat64(8 * i, v, true);
    }
    return b;
  };
  const fmtF32 = chunk('fmt ', fmtBody({ tag: 3, bits: 32 }));
  const fmtF64 = chunk('fmt ', fmtBody({ tag: 3, bits: 64 }));
  cases.push({ name: 'float32 with NaN', expect: 'reject', match: /NaN/, bytes: riff([fmtF32, chunk('data', floatData([0.1, -0.2, NaN, 0.3]))]) });
  cases.push({ name: 'float32 with +Inf', expect: 'reject', match: /Infinity/, bytes: riff([fmtF32, chunk('data', floatData([0.1, Infinity]))]) });
  cases.push({ name: 'float32 with -Inf', expect: 'reject', match: /Infinity/, bytes: riff([fmtF32, chunk('data', floatData([-Infinity, 0.1]))]) });
  cases.push({ name: 'float64 with NaN', expect: 'reject', match: /NaN/, bytes: riff([fmtF64, chunk('data', floatData([0.5, NaN], 64))]) });
  cases.push({ name: 'float32 all NaN', expect: 'reject', match: /NaN/, bytes: riff([fmtF32, chunk('data', floatData([NaN]))]) });
  cases.push({ name: 'all-zero 16-bit', expect: 'reject', match: /silent/, bytes: riff([fmt, chunk('data', new Uint8Array(32000))]) });
  cases.push({ name: 'all-zero float', expect: 'reject', match: /silent/, bytes: riff([fmtF32, chunk('data', floatData([0]))]) });
  cases.push({ name: 'float below 1e-6', expect: 'reject', match: /silent/, bytes: riff([fmtF32, chunk('data', floatData([5e-7, -9e-7]))]) });
  cases.push({ name: 'all-128 8-bit (digital zero)', expect: 'reject', match: /silent/, bytes: riff([chunk('fmt ', fmtBody({ bits: 8 })), chunk('data', new Uint8Array(8000).fill(128))]) });
  cases.push({ name: 'float beyond full scale (valid, loud)', expect: 'ok', bytes: riff([fmtF32, chunk('data', floatData([3, -2.5, 1e3]))]) });

  // 7. Random bytes, with and without plausible magic numbers.
  const random = (n: number) => {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = rng.int(256);
    return b;
  };
  for (let i = 0; i < 20; i++) cases.push({ name: `random bytes #${i}`, expect: 'either', bytes: random(1 + rng.int(20000)) });
  for (let i = 0; i < 8; i++) cases.push({ name: `RIFF/WAVE + random #${i}`, expect: 'reject', bytes: cat(ascii('RIFF'), u32(rng.int(2 ** 32)), ascii('WAVE'), random(rng.int(5000))) });
  for (let i = 0; i < 6; i++) cases.push({ name: `valid fmt + random chunk soup #${i}`, expect: 'either', bytes: riff([fmt, random(50 + rng.int(3000))]) });
  for (const magic of ['fLaC', 'OggS', 'ID3\x03\x00\x00\x00\x00\x01\x00', '\xff\xfb\x90\x64', '\x00\x00\x00\x20ftypM4A ', '\x1a\x45\xdf\xa3']) {
    for (let i = 0; i < 4; i++) {
      cases.push({ name: `${JSON.stringify(magic.slice(0, 4))} + random #${i}`, expect: 'either', bytes: cat(new Uint8Array([...magic].map((c) => c.charCodeAt(0))), random(1 + rng.int(8000))) });
    }
  }

  // 8. Text and empty files.
  const texts = ['', 'hello world\n', 'path,speaker,emotion\nwav/a.wav,03,anger\n', '{"do_normalize": true}', '<html><body>404</body></html>', 'RIFF', 'RIFFxxxxWAVE', 'ID3', 'OggS'];
  texts.forEach((t, i) => cases.push({ name: `text #${i} ${JSON.stringify(t.slice(0, 20))}`, expect: 'reject', match: t === '' ? /empty file/ : undefined, bytes: ascii(t) }));
  cases.push({ name: 'UTF-8 text', expect: 'reject', match: /looks like text/, bytes: new TextEncoder().encode('Größe – emotion → 😀 '.repeat(40)) });

  // 9. Length limits: declared 2 hours (sparse file, nothing is read), maxSeconds, maxBytes.
  const twoHoursBytes = 2 * 3600 * 16000 * 2;
  cases.push({
    name: '2-hour WAV (sparse file) vs maxSeconds 600',
    expect: 'reject',
    match: /7200\.0 s long, over the 600 s limit/,
    make: (file) => {
      fs.writeFileSync(file, riff([fmt, chunk('data', pcm16.slice(0, 1000), twoHoursBytes)]).subarray(0, 44 + 1000));
      fs.truncateSync(file, 44 + twoHoursBytes);
    },
    opts: { maxBytes: 2 ** 31 },
  });
  cases.push({
    name: 'streamed 2-hour WAV (placeholder size, sparse) vs maxSeconds 600',
    expect: 'reject',
    match: /over the 600 s limit/,
    make: (file) => {
      fs.writeFileSync(file, riff([fmt, chunk('data', pcm16.slice(0, 1000), 0xffffffff)], 0xffffffff));
      fs.truncateSync(file, 44 + twoHoursBytes);
    },
    opts: { maxBytes: 2 ** 31 },
  });
  cases.push({ name: '1 s clip vs maxSeconds 0.5', expect: 'reject', match: /over the 0.5 s limit/, bytes: validWav, opts: { maxSeconds: 0.5 } });
  cases.push({ name: 'file over maxBytes', expect: 'reject', match: /maxBytes/, bytes: validWav, opts: { maxBytes: 1000 } });
  cases.push({ name: 'compressed file over maxSeconds', expect: 'reject', match: /longer than the 0.5 s limit/, bytes: compressed.flac!, opts: { maxSeconds: 0.5 } });

  // 10. Corrupted compressed files: truncations, overwritten spans, flipped bytes.
  for (const [ext, buf] of Object.entries(compressed)) {
    cases.push({ name: `${ext}: intact`, expect: 'ok', bytes: buf });
    for (const n of [4, 10, 40, 100, 300, Math.floor(buf.length / 3), Math.floor(buf.length / 2), buf.length - 7]) {
      cases.push({ name: `${ext}: truncated to ${n}`, expect: 'either', bytes: buf.slice(0, n) });
    }
    for (let i = 0; i < 6; i++) {
      const b = buf.slice();
      const at = rng.int(b.length);
      const len = 1 + rng.int(400);
      for (let k = at; k < Math.min(b.length, at + len); k++) b[k] = rng.int(256);
      cases.push({ name: `${ext}: ${len} random bytes at ${at}`, expect: 'either', bytes: b });
    }
    for (let i = 0; i < 3; i++) {
      const b = buf.slice();
      for (let k = 0; k < 64; k++) b[rng.int(b.length)] ^= 1 << rng.int(8);
      cases.push({ name: `${ext}: 64 bit flips #${i}`, expect: 'either', bytes: b });
    }
    const z = buf.slice();
    z.fill(0, Math.floor(z.length * 0.1), Math.floor(z.length * 0.9));
    cases.push({ name: `${ext}: middle zeroed`, expect: 'either', bytes: z });
    cases.push({ name: `${ext}: header only, audio zeroed`, expect: 'either', bytes: cat(buf.slice(0, 200), new Uint8Array(buf.length - 200)) });
  }

  // 11. Not files.
  cases.push({ name: 'a directory', expect: 'reject', match: /directory|not a regular file/, make: (file) => fs.mkdirSync(file) });
  cases.push({ name: 'a missing file', expect: 'reject', match: /file not found/, make: () => undefined });
  return cases;
}

describe('decodeAudioFile on malformed input', () => {
  it('rejects (one line, naming the file) or decodes every one of >= 200 broken files, in one healthy process', async () => {
    const cases = buildCases();
    expect(cases.length).toBeGreaterThanOrEqual(200);
    global.gc?.();
    const rss0 = process.memoryUsage().rss;
    let maxRss = rss0;
    const failures: string[] = [];
    let rejected = 0;
    for (let i = 0; i < cases.length; i++) {
      const c = cases[i]!;
      const file = path.join(dir, `case-${String(i).padStart(3, '0')}.bin`);
      if (c.bytes) fs.writeFileSync(file, c.bytes);
      else c.make!(file);
      let outcome: string;
      try {
        const a = await decodeAudioFile(file, { timeoutMs: 20_000, ...c.opts });
        outcome = 'ok';
        if (!(a.samples.length > 0) || !a.samples.every(Number.isFinite) || !(a.durationS > 0)) failures.push(`${c.name}: decoded to invalid audio`);
        if (c.expect === 'reject') failures.push(`${c.name}: expected a rejection, decoded ${a.durationS.toFixed(3)} s`);
      } catch (e) {
        const msg = (e as Error).message;
        outcome = `rejected: ${msg.replace(file, '<file>')}`;
        rejected++;
        if (!(e instanceof UserError)) failures.push(`${c.name}: not a UserError: ${(e as Error).name}: ${msg}`);
        else if (msg.includes('\n')) failures.push(`${c.name}: multi-line message: ${JSON.stringify(msg)}`);
        else if (!msg.startsWith(`${file}: `)) failures.push(`${c.name}: message does not name the file: ${msg}`);
        else if (c.match && !c.match.test(msg)) failures.push(`${c.name}: message ${JSON.stringify(msg)} does not match ${c.match}`);
        if (c.expect === 'ok') failures.push(`${c.name}: expected to decode, got: ${msg}`);
      }
      // FUZZ_LOG=1 prints every outcome (to review the messages by eye).
      if (process.env.FUZZ_LOG) console.log(`${c.name} => ${outcome}`);
      if (c.make) fs.rmSync(file, { recursive: true, force: true });
      maxRss = Math.max(maxRss, process.memoryUsage().rss);
    }
    expect(failures).toEqual([]);
    expect(rejected).toBeGreaterThan(150);
    // Nothing ballooned: the 2-hour and 0xFFFFFFFF headers were refused before allocating.
    expect(maxRss - rss0).toBeLessThan(500 * 2 ** 20);
    // And the process is still healthy: a valid file of every kind decodes after all that.
    const ok = path.join(dir, 'after.wav');
    fs.writeFileSync(ok, validWav);
    expect((await decodeAudioFile(ok)).durationS).toBeCloseTo(1, 6);
    for (const [ext, buf] of Object.entries(compressed)) {
      const f = path.join(dir, `after.${ext}`);
      fs.writeFileSync(f, buf);
      expect((await decodeAudioFile(f)).durationS).toBeGreaterThan(0.9);
    }
  });

  it('a 700 s MP3 is stopped at maxSeconds while decoding; the timeout guard kills a slow decode; the next decode works', async () => {
    const f = path.join(dir, 'long.mp3');
    ffmpeg('-f', 'lavfi', '-i', 'sine=frequency=300:sample_rate=8000:duration=700', '-c:a', 'libmp3lame', '-b:a', '8k', f);
    await expect(decodeAudioFile(f)).rejects.toThrow(/long\.mp3: audio is longer than the 600 s limit/);
    // Without the length limit, decoding 700 s takes far longer than 100 ms: the worker is terminated.
    await expect(decodeAudioFile(f, { maxSeconds: 1e5, timeoutMs: 100 })).rejects.toThrow(/long\.mp3: decoding timed out after 0\.1 s/);
    const ok = path.join(dir, 'after-timeout.mp3');
    fs.writeFileSync(ok, compressed.mp3!);
    expect((await decodeAudioFile(ok)).durationS).toBeGreaterThan(0.9);
  });
});
