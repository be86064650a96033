import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SafetensorsFile, writeSafetensors, type NamedTensorInput } from '../io/safetensors.ts';
import { compareArrays } from '../models/parity/compare.ts';
import { REPO_ROOT } from '../../test/fixtures-gen/paths.ts';

const FIXTURES = path.resolve(REPO_ROOT, '../shared/fixtures/hf-parity');

/** A temp fixtures root holding copies of the named hf-parity folders. */
function copyFixtures(...names: string[]): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-parity-'));
  for (const n of names) {
    fs.cpSync(path.join(FIXTURES, n), path.join(root, n), { recursive: true });
    for (const f of fs.readdirSync(path.join(root, n))) fs.chmodSync(path.join(root, n, f), 0o644);
  }
  return root;
}

/** The real CLI entry point, as a user runs it. */
function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [path.join(REPO_ROOT, 'bin/emosllm.mjs'), ...args], { cwd: REPO_ROOT, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('emosllm parity (CLI)', () => {
  it('passes every folder of ../shared/fixtures/hf-parity, qpmapper_ref included, with nothing left uncovered', () => {
    if (!fs.existsSync(FIXTURES)) throw new Error(`${FIXTURES} is missing: ../shared must be beside the checkout`);
    const r = cli('parity', FIXTURES);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const summary = /^(\d+) passed, (\d+) failed, (\d+) not covered$/m.exec(r.stdout);
    expect(summary).not.toBeNull();
    expect(Number(summary![1])).toBeGreaterThan(300);
    expect(summary![2]).toBe('0');
    expect(summary![3]).toBe('0');
    const folders = fs.readdirSync(FIXTURES).filter((f) => fs.statSync(path.join(FIXTURES, f)).isDirectory());
    expect(folders).toContain('qpmapper_ref');
    for (const f of folders) expect(r.stdout).toMatch(new RegExp(`^${f}\\s+\\S.*\\spass$`, 'm'));
  });

  it('gives the same checks on the torch .bin copies (zip, legacy, shards, views, adapter_model.bin), 0 not covered', () => {
    const torch = path.resolve(REPO_ROOT, '../shared/fixtures/torch-checkpoints/models');
    const r = cli('parity', torch);
    expect(r.code).toBe(0);
    const summary = /^(\d+) passed, (\d+) failed, (\d+) not covered$/m.exec(r.stdout);
    expect(summary).not.toBeNull();
    expect(summary!.slice(2)).toEqual(['0', '0']);
    expect(summary![1]).toBe(/^(\d+) passed/m.exec(cli('parity', FIXTURES).stdout)![1]);
    // the hint to convert is said once per run, not once per folder
    expect(r.stderr.match(/emosllm convert/g)?.length).toBe(1);
  });

  it('emosllm convert writes a safetensors folder that passes the same checks', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-convert-'));
    const torch = path.resolve(REPO_ROOT, '../shared/fixtures/torch-checkpoints/models');
    for (const f of ['llama', 'llama_lora', 'wav2vec2']) {
      const r = cli('convert', path.join(torch, f), '--out', path.join(root, f));
      expect(r.code, r.stderr).toBe(0);
    }
    const r = cli('parity', root);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^\d+ passed, 0 failed, 0 not covered$/m);
  });

  it('exits 1 with a FAIL row when a stored output is off', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-parity-'));
    try {
      const dst = path.join(root, 'llama');
      fs.mkdirSync(dst);
      for (const f of fs.readdirSync(path.join(FIXTURES, 'llama'))) fs.copyFileSync(path.join(FIXTURES, 'llama', f), path.join(dst, f));
      fs.chmodSync(path.join(dst, 'expected.safetensors'), 0o644);
      // Perturb one logit of the reference by 1e-2 (far above the 1e-4 tolerance).
      const exp = SafetensorsFile.open(path.join(dst, 'expected.safetensors'));
      const tensors: NamedTensorInput[] = exp.infos().map((i) => ({ name: i.name, dtype: i.dtype, shape: i.shape, data: exp.read(i.name) }));
      exp.close();
      const logits = tensors.find((t) => t.name === 'logits');
      expect(logits).toBeDefined();
      (logits!.data as Float32Array)[0] += 1e-2;
      writeSafetensors(path.join(dst, 'expected.safetensors'), tensors);
      const r = cli('parity', root);
      expect(r.code).toBe(1);
      expect(r.stdout).toMatch(/^llama\s+logits\s.*FAIL/m);
      expect(r.stdout).toMatch(/^\d+ passed, [1-9]\d* failed/m);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it('exits 1 when a folder is unrecognised', () => {
    const root = copyFixtures('llama');
    try {
      fs.mkdirSync(path.join(root, 'notes'));
      fs.writeFileSync(path.join(root, 'notes', 'expected.safetensors'), '');
      const r = cli('parity', root);
      expect(r.code).toBe(1);
      expect(r.stdout).toMatch(/^notes\s+\*\s.*not covered \(unrecognised folder\)$/m);
      expect(r.stdout).toMatch(/^\d+ passed, 0 failed, 1 not covered$/m);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it('--only naming no folder is a one-line error, exit 1', () => {
    const r = cli('parity', FIXTURES, '--only', 'lama');
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/no fixture folder "lama" \(folders: hubert, /);
    expect(cli('parity', FIXTURES, '--only', 'wavlm,lama').code).toBe(1);
  });

  it('an encoder fixture tensor that no check compares is a not-covered row, exit 1', () => {
    const root = copyFixtures('wav2vec2');
    try {
      const file = path.join(root, 'wav2vec2', 'expected.safetensors');
      const exp = SafetensorsFile.open(file);
      const tensors: NamedTensorInput[] = exp.infos().map((i) => ({ name: i.name, dtype: i.dtype, shape: i.shape, data: exp.read(i.name) }));
      exp.close();
      tensors.push({ name: 'pooled_output', dtype: 'F32', shape: [2, 32], data: new Float32Array(64) });
      writeSafetensors(file, tensors);
      const r = cli('parity', root);
      expect(r.code).toBe(1);
      expect(r.stdout).toMatch(/^wav2vec2\s+pooled_output\s.*not covered \(stored output without a check\)$/m);
      expect(r.stdout).toMatch(/^\d+ passed, 0 failed, 1 not covered$/m);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('compareArrays', () => {
  it('fails a row whose validity mask excludes every element', () => {
    const r = compareArrays('f', 't', [1, 2, 3], [9, 9, 9], undefined, () => false);
    expect(r.status).toBe('FAIL');
    expect(r.note).toMatch(/excludes every element/);
    expect(compareArrays('f', 't', [1, 2, 3], [1, 9, 3], undefined, (i) => i !== 1).status).toBe('pass');
    expect(compareArrays('f', 't', [1, 2, 3], [1, 9, 3], undefined, (i) => i === 1).status).toBe('FAIL');
  });
});
