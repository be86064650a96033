import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SafetensorsFile, writeSafetensors, type NamedTensorInput } from '../io/safetensors.ts';
import { REPO_ROOT } from '../../test/fixtures-gen/paths.ts';

const FIXTURES = path.resolve(REPO_ROOT, '../shared/fixtures/hf-parity');

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
});
