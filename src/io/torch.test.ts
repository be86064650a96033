import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../test/fixtures-gen/paths.ts';
import { openCheckpoint } from './checkpoint.ts';
import { convertFolder } from './convert.ts';
import { SafetensorsCheckpoint } from './safetensors.ts';
import { TorchCheckpoint } from './torch.ts';

const TORCH = path.resolve(REPO_ROOT, '../shared/fixtures/torch-checkpoints');
const HF = path.resolve(REPO_ROOT, '../shared/fixtures/hf-parity');

describe('torch .bin checkpoints', () => {
  it('reads every dtype, scalar and empty tensor of dtypes.bin equal to dtypes.safetensors', () => {
    const bin = TorchCheckpoint.open(path.join(TORCH, 'dtypes/dtypes.bin'));
    const ref = SafetensorsCheckpoint.open(path.join(TORCH, 'dtypes/dtypes.safetensors'));
    expect(bin.names()).toEqual(ref.names());
    const dtypes = Object.fromEntries(bin.infos().map((i) => [i.name, i.dtype]));
    expect(dtypes).toEqual({ f32: 'F32', f64: 'F64', f16: 'F16', bf16: 'BF16', i64: 'I64', i32: 'I32', i8: 'I8', u8: 'U8', bool: 'BOOL', scalar: 'F32', empty: 'F32' });
    for (const n of ref.names()) {
      expect(bin.info(n).shape, n).toEqual(ref.info(n).shape);
      if (ref.info(n).dtype === 'I64') expect(bin.readI64(n), n).toEqual(ref.readI64(n));
      else expect(bin.readF64(n), n).toEqual(ref.readF64(n));
    }
    expect(bin.info('scalar').shape).toEqual([]);
    expect(bin.readF32('empty').length).toBe(0);
  });

  // zip and legacy formats, shards, a tied lm_head sharing the embedding's storage, k/v at offsets in one
  // storage, transposed and non-contiguous views: every tensor must equal the safetensors original bit for bit.
  for (const folder of ['llama', 'llama_untied', 'llama_lora', 'wav2vec2', 'hubert', 'wavlm']) {
    it(`${folder}: every tensor equals the hf-parity safetensors original`, () => {
      const bin = openCheckpoint(path.join(TORCH, 'models', folder));
      const ref = openCheckpoint(path.join(HF, folder));
      expect(bin.source).toMatch(/\.bin(\.index\.json)?$/);
      // torch.save keeps a tied lm_head as its own key on the embedding's storage; safetensors drops it
      expect(bin.names().filter((n) => !ref.has(n))).toEqual(folder === 'llama' ? ['lm_head.weight'] : []);
      if (folder === 'llama') expect(bin.info('lm_head.weight').offset).toBe(bin.info('model.embed_tokens.weight').offset);
      for (const n of ref.names()) {
        expect(bin.info(n).dtype, n).toBe(ref.info(n).dtype);
        expect(bin.info(n).shape, n).toEqual(ref.info(n).shape);
        expect(Buffer.from(bin.read(n).buffer).equals(Buffer.from(ref.read(n).buffer)), n).toBe(true);
      }
    });
  }

  it('gathers only strided views into memory; row-major tensors are read in place by offset', () => {
    const ck = openCheckpoint(path.join(TORCH, 'models/llama_untied'));
    const gathered = ck.infos().filter((i) => i.offset === undefined).map((i) => i.name);
    expect(gathered).toEqual(['model.layers.0.self_attn.q_proj.weight']);
    const k = ck.info('model.layers.0.self_attn.k_proj.weight');
    const v = ck.info('model.layers.0.self_attn.v_proj.weight');
    expect(k.file).toBe(v.file);
    expect(Math.abs(v.offset! - k.offset!)).toBe(k.byteLength);
  });

  it('refuses a pickle that calls os.system, naming the global, and runs nothing', () => {
    const marker = '/tmp/emosllm-pwned';
    fs.rmSync(marker, { force: true });
    const file = path.join(TORCH, 'refuse/global-os-system.bin');
    expect(() => openCheckpoint(file)).toThrow(/refusing global posix\.system.*nothing was executed/);
    expect(fs.existsSync(marker)).toBe(false);
  });

  it('says a truncated checkpoint is truncated and a Git LFS pointer is one, each in one line', () => {
    for (const [f, msg] of [
      ['truncated.bin', /truncated checkpoint/],
      ['not-a-pickle.bin', /Git LFS pointer/],
    ] as const) {
      let err: Error | undefined;
      try {
        openCheckpoint(path.join(TORCH, 'refuse', f));
      } catch (e) {
        err = e as Error;
      }
      expect(err?.name, f).toBe('UserError');
      expect(err!.message).toMatch(msg);
      expect(err!.message).not.toContain('\n');
    }
  });
});

describe('convertFolder', () => {
  it('writes sharded safetensors with an index, every tensor as stored, other files copied', () => {
    const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-convert-')), 'llama');
    const src = path.join(TORCH, 'models/llama');
    const r = convertFolder(src, out, 64 * 1024);
    expect(r.shards.length).toBeGreaterThan(1);
    const files = fs.readdirSync(out).sort();
    expect(files).toContain('model.safetensors.index.json');
    expect(files).toContain('config.json');
    expect(files.some((f) => f.endsWith('.bin'))).toBe(false);
    const conv = openCheckpoint(out);
    const orig = openCheckpoint(src);
    expect(conv.names()).toEqual(orig.names());
    for (const n of orig.names()) {
      expect(conv.info(n).dtype).toBe(orig.info(n).dtype);
      expect(Buffer.from(conv.read(n).buffer).equals(Buffer.from(orig.read(n).buffer)), n).toBe(true);
    }
    expect(() => convertFolder(src, out)).toThrow(/already exists/);
    expect(() => convertFolder(out, `${out}-again`)).toThrow(/already holds safetensors/);
  });
});
