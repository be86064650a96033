/**
 * The CLI with Hub ids, against the loopback mock Hub (HF_ENDPOINT): train from `org/name` encoder and LLM ids,
 * predict from a model repository, parity from a fixtures repository; a second run makes no request, offline
 * mode runs from the cache, a gated repository fails in one line.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openCheckpoint } from '../io/checkpoint.ts';
import { writeTinyLlama } from '../models/tiny.ts';
import { type MockHub, startMockHub } from '../../test/fixtures-gen/mock-hub.ts';
import { trainSmallModel } from '../../test/fixtures-gen/model.ts';
import { HF_PARITY_DIR, REPO_ROOT, emodbDev, hfParity, tempDir } from '../../test/fixtures-gen/paths.ts';
import { emodbSubset } from '../../test/fixtures-gen/subset.ts';

const tmp = tempDir('hub-cli');
// a speech encoder that ships only pytorch_model.bin, as microsoft/wavlm-large does
const TORCH_WAVLM = path.resolve(HF_PARITY_DIR, '../torch-checkpoints/models/wavlm');
const CLI = path.join(REPO_ROOT, 'bin/emosllm.mjs');
const HF_HOME = path.join(tmp, 'hf-home');
let hub: MockHub;
let env: NodeJS.ProcessEnv;

/** The real CLI as a child process (asynchronous: the mock Hub answers from this process). */
function cli(args: string[], extraEnv: NodeJS.ProcessEnv = {}) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { cwd: REPO_ROOT, env: { ...env, ...extraEnv } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

beforeAll(async () => {
  const model = await trainSmallModel(path.join(tmp, 'trained'), { steps: 2 });
  hub = await startMockHub({
    'microsoft/wavlm-tiny': { revisions: { main: hfParity('wavlm') } },
    'org/tiny-llama': { revisions: { main: writeTinyLlama(path.join(tmp, 'tiny-llama'), { seed: 3 }) } },
    'org/emodb-model': { revisions: { main: model } },
    'org/gated-model': { revisions: { main: model }, gatedToken: 'hf_valid' },
    'emosllm/hf-parity': { revisions: { main: HF_PARITY_DIR } },
    'microsoft/wavlm-bin': { revisions: { main: TORCH_WAVLM } },
  });
  env = { ...process.env, HF_HOME, HF_ENDPOINT: hub.url, EMOSLLM_CACHE_DIR: path.join(tmp, 'cache') };
  for (const k of ['HF_TOKEN', 'HF_HUB_OFFLINE', 'HF_HUB_CACHE', 'HUGGING_FACE_HUB_TOKEN', 'HUGGINGFACE_HUB_CACHE', 'HF_TOKEN_PATH']) delete env[k];
}, 300_000);
afterAll(async () => {
  await hub?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});
beforeEach(() => {
  hub.requests.length = 0;
});

describe('the CLI with Hub ids (mock Hub via HF_ENDPOINT)', () => {
  it('train --encoder org/name --llm org/name fetches both into the HF cache; a second run makes no request', async () => {
    const data = emodbSubset(path.join(tmp, 'data'), ['03', '08'], 4);
    const args = (out: string) => ['train', '--data', data, '--encoder', 'microsoft/wavlm-tiny', '--llm', 'org/tiny-llama', '--steps', '1', '--batch-size', '4', '--valid-fraction', '0', '--out', out];
    const r = await cli(args(path.join(tmp, 'run-a')));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/hub: microsoft\/wavlm-tiny@main is commit [0-9a-f]{7}; fetching 3 of 3 files/);
    expect(r.stderr).toMatch(/hub: org\/tiny-llama@main is commit [0-9a-f]{7}; fetching 4 of 4 files/);
    const spec = JSON.parse(fs.readFileSync(path.join(tmp, 'run-a/emosllm.json'), 'utf8'));
    const snapshots = (repo: string) => path.join(HF_HOME, 'hub', `models--${repo.replace('/', '--')}`, 'snapshots', hub.commit(repo));
    expect(path.resolve(tmp, 'run-a', spec.encoder.path)).toBe(snapshots('microsoft/wavlm-tiny'));
    expect(path.resolve(tmp, 'run-a', spec.llm.path)).toBe(snapshots('org/tiny-llama'));
    expect(fs.existsSync(path.join(tmp, 'run-a/adapter/adapter_model.safetensors'))).toBe(true);
    // the run's configuration keeps the ids, so --resume resolves them again (from the cache)
    const config = JSON.parse(fs.readFileSync(path.join(tmp, 'run-a/train_config.json'), 'utf8'));
    expect([config.encoder, config.llm]).toEqual(['microsoft/wavlm-tiny', 'org/tiny-llama']);
    expect(hub.requests.length).toBeGreaterThan(0);

    hub.requests.length = 0;
    const again = await cli(args(path.join(tmp, 'run-b')));
    expect(again.code, again.stderr).toBe(0);
    expect(hub.requests).toEqual([]);
  });

  it('a model trained from Hub ids and uploaded predicts on another machine: its encoder and LLM come by their pinned ids', async () => {
    const run = path.join(tmp, 'run-a'); // trained by the test above
    const spec = JSON.parse(fs.readFileSync(path.join(run, 'emosllm.json'), 'utf8'));
    expect(spec.encoder.hub).toBe(`microsoft/wavlm-tiny@${hub.commit('microsoft/wavlm-tiny')}`);
    expect(spec.llm.hub).toBe(`org/tiny-llama@${hub.commit('org/tiny-llama')}`);
    expect(JSON.parse(fs.readFileSync(path.join(run, 'adapter/adapter_config.json'), 'utf8')).base_model_name_or_path).toBe('org/tiny-llama');
    const elsewhere = await startMockHub({
      'org/trained-on-hub': { revisions: { main: run } },
      'microsoft/wavlm-tiny': { revisions: { main: hfParity('wavlm') } },
      'org/tiny-llama': { revisions: { main: path.join(tmp, 'tiny-llama') } },
    });
    try {
      const wav = path.join(emodbDev().wavDir, '03a01Fa.wav');
      const fresh = { HF_HOME: path.join(tmp, 'hf-home-elsewhere'), HF_ENDPOINT: elsewhere.url };
      const r = await cli(['predict', '--model', 'org/trained-on-hub', wav], fresh);
      expect(r.code, r.stderr).toBe(0);
      const fetched = new Set(elsewhere.requests.filter((q) => q.url.includes('/resolve/')).map((q) => q.url.split('/resolve/')[0]));
      expect(fetched).toEqual(new Set(['/org/trained-on-hub', '/microsoft/wavlm-tiny', '/org/tiny-llama']));
      // the same prediction as from the run folder itself
      const local = await cli(['predict', '--model', run, wav]);
      expect(local.code, local.stderr).toBe(0);
      expect(JSON.parse(r.stdout.trim()).probabilities).toEqual(JSON.parse(local.stdout.trim()).probabilities);
    } finally {
      await elsewhere.close();
    }
  });

  it('predict --model org/name fetches the model (not its checkpoints); a second run and an offline run make no request', async () => {
    const wav = path.join(emodbDev().wavDir, '03a01Fa.wav');
    const r = await cli(['predict', '--model', 'org/emodb-model', wav]);
    expect(r.code, r.stderr).toBe(0);
    const line = JSON.parse(r.stdout.trim());
    expect(line.file).toBe(wav);
    expect(Object.keys(line.probabilities)).toContain(line.label);
    expect(hub.requests.filter((q) => q.url.includes('/resolve/')).length).toBeGreaterThan(0);
    expect(hub.requests.some((q) => q.url.includes('checkpoints/') && q.url.includes('/resolve/'))).toBe(false);

    hub.requests.length = 0;
    const again = await cli(['predict', '--model', 'org/emodb-model', wav]);
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout.trim()).probabilities).toEqual(line.probabilities);
    const offline = await cli(['predict', '--model', 'org/emodb-model', wav], { HF_HUB_OFFLINE: '1', HF_ENDPOINT: 'http://127.0.0.1:9' });
    expect(offline.code, offline.stderr).toBe(0);
    expect(JSON.parse(offline.stdout.trim()).probabilities).toEqual(line.probabilities);
    expect(hub.requests).toEqual([]);
  });

  it('parity org/name --only runs the fixtures of a Hub repository, fetching only those folders', async () => {
    const r = await cli(['parity', 'emosllm/hf-parity', '--only', 'wavlm,llama']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^wavlm\s+\S.*\spass$/m);
    expect(r.stdout).toMatch(/^llama\s+\S.*\spass$/m);
    expect(r.stdout).toMatch(/^\d+ passed, 0 failed, 0 not covered$/m);
    const fetched = hub.requests.filter((q) => q.url.includes('/resolve/')).map((q) => q.url.split('/resolve/')[1].split('/').slice(1)[0]);
    expect(new Set(fetched)).toEqual(new Set(['wavlm', 'llama']));
  });

  it('a gated model without a token: exit 1 and one line naming the licence page', async () => {
    const r = await cli(['predict', '--model', 'org/gated-model', path.join(emodbDev().wavDir, '03a01Fa.wav')]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(
      `emosllm: error: org/gated-model@main: access denied (HTTP 401): a gated or private model; accept its licence at ${hub.url}/org/gated-model, then set HF_TOKEN (or run: hf auth login)\n`,
    );
    const ok = await cli(['predict', '--model', 'org/gated-model', path.join(emodbDev().wavDir, '03a01Fa.wav')], { HF_TOKEN: 'hf_valid' });
    expect(ok.code, ok.stderr).toBe(0);
  });

  it('convert org/name fetches the .bin checkpoint and writes safetensors with the same tensors; a second run makes no request', async () => {
    const out = path.join(tmp, 'converted');
    const r = await cli(['convert', 'microsoft/wavlm-bin', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(hub.requests.some((q) => q.url.includes('pytorch_model.bin'))).toBe(true);
    const bin = openCheckpoint(path.join(TORCH_WAVLM, 'pytorch_model.bin'));
    const st = openCheckpoint(path.join(out, 'model.safetensors'));
    try {
      expect(st.names().sort()).toEqual(bin.names().sort());
      for (const n of bin.names()) expect(Array.from(st.readF32(n)), n).toEqual(Array.from(bin.readF32(n)));
    } finally {
      bin.close();
      st.close();
    }
    hub.requests.length = 0;
    const again = await cli(['convert', 'microsoft/wavlm-bin', '--out', path.join(tmp, 'converted-2')]);
    expect(again.code, again.stderr).toBe(0);
    expect(hub.requests).toEqual([]);
  });
});
