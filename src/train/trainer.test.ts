import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EmoSLLM } from '../models/emosllm.ts';
import { loadAudio16k } from '../audio/decode.ts';
import { REPO_ROOT, emodbDev, tempDir } from '../../test/fixtures-gen/paths.ts';
import { emodbSubset } from '../../test/fixtures-gen/subset.ts';
import { defaultTrainConfig } from './config.ts';
import { train } from './trainer.ts';

const tmp = tempDir('trainer');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const cacheDir = path.join(tmp, 'cache');
const cliEnv = { ...process.env, EMOSLLM_CACHE_DIR: cacheDir };
const CLI = path.join(REPO_ROOT, 'bin/emosllm.mjs');
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

describe('training fbank + tiny LLM', () => {
  it('on ../shared/data/emodb-dev: the loss falls, and the run folder is a model that loads and predicts', async () => {
    const out = path.join(tmp, 'run');
    const logs: string[] = [];
    const r = await train(defaultTrainConfig({ data: emodbDev().dir, maxSteps: 16, cacheDir }), out, { hooks: { log: (l) => logs.push(l) } });
    const losses = r.history.filter((h) => h.loss !== undefined).map((h) => h.loss);
    expect(losses.length).toBe(16);
    expect(losses.every(Number.isFinite)).toBe(true);
    // measured: 10.8 over the first four steps, 5.8 over the last four
    expect(mean(losses.slice(-4))).toBeLessThan(0.7 * mean(losses.slice(0, 4)));
    expect(logs.some((l) => /validation: speaker\(s\) \S+ held out/.test(l))).toBe(true);
    for (const f of ['emosllm.json', 'mapper.safetensors', 'llm_weights.safetensors', 'llm/config.json', 'llm/tokenizer.json', 'history.json', 'report.html', 'train_config.json'])
      expect(fs.existsSync(path.join(out, f)), f).toBe(true);
    const ckpts = fs.readdirSync(path.join(out, 'checkpoints'));
    expect(ckpts.length).toBeGreaterThan(0);
    // a checkpoint is a model folder too
    const ck = EmoSLLM.load(path.join(out, 'checkpoints', ckpts[ckpts.length - 1]));
    try {
      const [st0] = await ck.encode([await loadAudio16k(path.join(emodbDev().wavDir, '08a01Wa.wav'))]);
      expect((await ck.scoreStates(st0)).probabilities).toHaveLength(7);
    } finally {
      await ck.release();
    }

    const m = EmoSLLM.load(out);
    try {
      expect(m.labels).toEqual(['anger', 'boredom', 'disgust', 'fear', 'happiness', 'neutral', 'sadness']);
      const [st] = await m.encode([await loadAudio16k(path.join(emodbDev().wavDir, '03a01Fa.wav'))]);
      const s = await m.scoreStates(st);
      expect(s.probabilities).toHaveLength(7);
      expect(Math.abs(s.probabilities.reduce((a, b) => a + b, 0) - 1)).toBeLessThan(1e-5);
      // the trained parameters are the saved ones: reloading gives the same scores
      const m2 = EmoSLLM.load(out);
      try {
        expect((await m2.scoreStates(st)).scores).toEqual(s.scores);
      } finally {
        await m2.release();
      }
    } finally {
      await m.release();
    }
  });

  it('refuses to overwrite a run without --resume: one line, exit 1, nothing lost', () => {
    const out = path.join(tmp, 'run');
    const before = fs.readFileSync(path.join(out, 'mapper.safetensors'));
    const r = spawnSync(process.execPath, [CLI, 'train', '--data', emodbDev().dir, '--out', out, '--steps', '2'], { encoding: 'utf8', env: cliEnv });
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/already holds a training run: pass --resume/);
    expect(fs.readFileSync(path.join(out, 'mapper.safetensors')).equals(before)).toBe(true);
  });
});

describe('a run that fails to start', () => {
  it('leaves nothing to resume: the corrected command runs in the same --out without --resume', () => {
    const out = path.join(tmp, 'failed-start');
    const data = emodbSubset(path.join(tmp, 'subset-fs'), ['03', '08', '09'], 6);
    const bad = spawnSync(process.execPath, [CLI, 'train', '--data', data, '--out', out, '--encoder', tmp], { encoding: 'utf8', env: cliEnv });
    expect(bad.status).toBe(1);
    expect(bad.stderr.trim().split('\n').filter((l) => l.startsWith('emosllm:'))).toEqual([`emosllm: error: ${tmp}: not a speech encoder folder (no config.json)`]);
    expect(fs.existsSync(path.join(out, 'train_config.json'))).toBe(false);
    const good = spawnSync(process.execPath, [CLI, 'train', '--data', data, '--out', out, '--steps', '1', '--valid-fraction', '0'], { encoding: 'utf8', env: cliEnv });
    expect(good.status, good.stderr).toBe(0);
    expect(fs.existsSync(path.join(out, 'emosllm.json'))).toBe(true);
  });
});

describe('resume', () => {
  const data = emodbSubset(path.join(tmp, 'subset'), ['03', '08', '09', '10'], 12);
  const args = (out: string) => ['train', '--data', data, '--out', out, '--steps', '10', '--batch-size', '8', '--checkpoint-every', '2', '--eval-every', '5', '--seed', '3'];
  const files = ['mapper.safetensors', 'llm_weights.safetensors'];

  /** Runs `emosllm train`; its last stdout line is the JSON summary. */
  function run(out: string, extra: string[] = []): { summary: Record<string, unknown>; stderr: string } {
    const r = spawnSync(process.execPath, [CLI, ...args(out), ...extra], { encoding: 'utf8', env: cliEnv });
    if (r.status !== 0) throw new Error(`train failed: ${r.stderr}`);
    return { summary: JSON.parse(r.stdout.trim().split('\n').pop()!), stderr: r.stderr };
  }

  it('a run killed after a checkpoint resumes from that step and ends with bit-identical weights to an uninterrupted run', async () => {
    const full = path.join(tmp, 'full');
    expect(run(full).summary).toMatchObject({ steps: 10, steps_run: 10 });

    const cut = path.join(tmp, 'cut');
    const child: ChildProcess = spawn(process.execPath, [CLI, ...args(cut)], { env: cliEnv, stdio: 'ignore' });
    const exited = new Promise<void>((res) => child.on('exit', () => res()));
    // kill -9 as soon as the checkpoint of step 4 is complete (state.json is the last file written into it)
    const ck = path.join(cut, 'checkpoints', 'step-00000004', 'state.json');
    const t0 = Date.now();
    while (!fs.existsSync(ck)) {
      if (Date.now() - t0 > 120_000) throw new Error('no checkpoint after 120 s');
      if (child.exitCode !== null) throw new Error('training ended before it could be killed');
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGKILL');
    await exited;
    expect(fs.existsSync(path.join(cut, 'emosllm.json'))).toBe(false); // really interrupted: no model saved yet

    // the newest complete checkpoint (step 4, or a later one if the kill landed after it)
    const ckpts = fs.readdirSync(path.join(cut, 'checkpoints')).filter((d) => fs.existsSync(path.join(cut, 'checkpoints', d, 'state.json'))).sort();
    const from = Number(ckpts[ckpts.length - 1]!.slice('step-'.length));
    expect(from).toBeGreaterThanOrEqual(4);
    expect(from).toBeLessThan(10);
    const resumed = run(cut, ['--resume']);
    // a silent restart would give the same weights: the step counter must continue from the checkpoint
    expect(resumed.summary).toMatchObject({ steps: 10, resumed_from: from, steps_run: 10 - from });
    expect(resumed.stderr).toContain(`resume: from step ${from} `);
    for (const f of files) expect(fs.readFileSync(path.join(cut, f)).equals(fs.readFileSync(path.join(full, f))), f).toBe(true);
    const h1 = JSON.parse(fs.readFileSync(path.join(full, 'history.json'), 'utf8'));
    const h2 = JSON.parse(fs.readFileSync(path.join(cut, 'history.json'), 'utf8'));
    expect(h2).toEqual(h1);
  }, 400_000); // three training processes: minutes on a busy machine

  it('--resume without a checkpoint is a one-line error, not a fresh start', () => {
    const out = path.join(tmp, 'no-checkpoint');
    fs.mkdirSync(out);
    // a run that stopped before its first checkpoint: its configuration, nothing else
    fs.writeFileSync(path.join(out, 'train_config.json'), JSON.stringify(defaultTrainConfig({ data, maxSteps: 10, cacheDir })));
    const r = spawnSync(process.execPath, [CLI, ...args(out), '--resume'], { encoding: 'utf8', env: cliEnv });
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toEqual([`emosllm: error: ${out}: no checkpoint to resume from: run the same command without --resume to start over`]);
    expect(fs.readdirSync(out)).toEqual(['train_config.json']);
  });
});
