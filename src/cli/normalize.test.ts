import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, emodbDev, tempDir } from '../../test/fixtures-gen/paths.ts';
import { emodbSubset } from '../../test/fixtures-gen/subset.ts';

const tmp = tempDir('normalize-cli');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const env = { ...process.env, EMOSLLM_CACHE_DIR: path.join(tmp, 'cache') };
const CLI = path.join(REPO_ROOT, 'bin/emosllm.mjs');
const run = (args: string[]) => {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env });
  return { ...r, ok: r.status === 0 };
};
const predictions = (dir: string) =>
  fs.readFileSync(path.join(dir, 'predictions.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { id: string; probabilities: Record<string, number> });

describe('--normalize speaker', () => {
  const data = emodbSubset(path.join(tmp, 'train'), ['03', '08', '09'], 8);
  const test = emodbSubset(path.join(tmp, 'test'), ['10', '11'], 6);
  const model = path.join(tmp, 'model');

  it('train stores it; eval uses the stored setting unless --normalize overrides it; predict takes it too', () => {
    const t = run(['train', '--data', data, '--out', model, '--steps', '3', '--batch-size', '8', '--valid-fraction', '0', '--normalize', 'speaker']);
    expect(t.ok, t.stderr).toBe(true);
    expect(JSON.parse(fs.readFileSync(path.join(model, 'emosllm.json'), 'utf8')).normalize).toBe('speaker');
    expect(JSON.parse(fs.readFileSync(path.join(model, 'train_config.json'), 'utf8')).normalize).toBe('speaker');

    const byModel = path.join(tmp, 'eval-stored');
    const flagged = path.join(tmp, 'eval-flag');
    const none = path.join(tmp, 'eval-none');
    expect(run(['eval', '--model', model, '--data', test, '--out', byModel]).ok).toBe(true);
    expect(run(['eval', '--model', model, '--data', test, '--out', flagged, '--normalize', 'speaker']).ok).toBe(true);
    expect(run(['eval', '--model', model, '--data', test, '--out', none, '--normalize', 'none']).ok).toBe(true);
    const read = (d: string) => JSON.parse(fs.readFileSync(path.join(d, 'metrics.json'), 'utf8')).normalize;
    expect([read(byModel), read(flagged), read(none)]).toEqual(['speaker', 'speaker', 'none']);
    expect(predictions(byModel)).toEqual(predictions(flagged));
    // the statistics change what the mapper sees: other probabilities without them
    const a = predictions(byModel)[0].probabilities;
    const b = predictions(none)[0].probabilities;
    expect(Math.max(...Object.keys(a).map((k) => Math.abs(a[k] - b[k])))).toBeGreaterThan(1e-4);

    // predict: the files of one call are one speaker's clips, so a clip's answer depends on the others given with it
    const wav = (n: string) => path.join(emodbDev().wavDir, n);
    const alone = run(['predict', '--model', model, wav('10a01Wa.wav')]);
    const withOthers = run(['predict', '--model', model, wav('10a01Wa.wav'), wav('10a02Na.wav'), wav('10b01Lb.wav')]);
    expect(alone.ok, alone.stderr).toBe(true);
    expect(withOthers.ok, withOthers.stderr).toBe(true);
    const first = (out: string) => JSON.parse(out.trim().split('\n')[0]).probabilities as Record<string, number>;
    expect(first(alone.stdout)).not.toEqual(first(withOthers.stdout));
    const rec = run(['predict', '--model', model, '--normalize', 'recording', wav('10a01Wa.wav')]);
    expect(rec.ok, rec.stderr).toBe(true);
    expect(first(rec.stdout)).toEqual(first(alone.stdout)); // one file: its own statistics either way

    const bad = run(['eval', '--model', model, '--data', test, '--out', none, '--normalize', 'gender']);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain('--normalize must be none, speaker, recording, got "gender"');
  }, 600_000);

  it('serve refuses --normalize speaker with one line (one request holds no speaker)', () => {
    const r = run(['serve', '--model', model, '--normalize', 'speaker', '--port', '0']);
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('--normalize speaker');
  }, 120_000);
});
