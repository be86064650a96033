import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAudio16k } from '../audio/decode.ts';
import { writeWav } from '../audio/wav.ts';
import { REPO_ROOT, emodbDev, tempDir } from '../../test/fixtures-gen/paths.ts';
import { trainSmallModel } from '../../test/fixtures-gen/model.ts';

const tmp = tempDir('predict');
let model = '';
const env = { ...process.env, EMOSLLM_CACHE_DIR: path.join(tmp, 'cache') };
const CLI = path.join(REPO_ROOT, 'bin/emosllm.mjs');
const cli = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env });
const wav = (name: string) => path.join(emodbDev().wavDir, name);
const sum = (o: Record<string, number>) => Object.values(o).reduce((a, b) => a + b, 0);

beforeAll(async () => {
  model = await trainSmallModel(tmp, { cacheDir: env.EMOSLLM_CACHE_DIR });
}, 300_000);
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('emosllm predict', () => {
  it('JSON lines {file, label, probabilities, seconds, segments} for files', () => {
    const files = [wav('03a01Fa.wav'), wav('08a01Wa.wav')];
    const r = cli('predict', '--model', model, ...files);
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => l.file)).toEqual(files);
    const labels = JSON.parse(fs.readFileSync(path.join(model, 'emosllm.json'), 'utf8')).labels;
    for (const l of lines) {
      expect(labels).toContain(l.label);
      expect(Object.keys(l.probabilities)).toEqual(labels);
      expect(Math.abs(sum(l.probabilities) - 1)).toBeLessThan(1e-5);
      expect(l.label).toBe(Object.entries(l.probabilities as Record<string, number>).sort((a, b) => b[1] - a[1])[0][0]);
      expect(l.segments).toHaveLength(1); // clips up to 10 s are scored whole
    }
    expect(lines[0].seconds).toBeCloseTo(1.898, 3);
  });

  it('a 60 s file gives a timeline of 3 s windows with a 1.5 s hop covering 0-60 s, and their mean as the label', async () => {
    const clips = await Promise.all(['03a01Fa.wav', '03a01Nc.wav', '08a01Wa.wav', '09a01Ea.wav'].map((f) => loadAudio16k(wav(f))));
    const long = new Float32Array(60 * 16000);
    for (let i = 0, k = 0; i < long.length; k++) {
      const c = clips[k % clips.length];
      long.set(c.subarray(0, Math.min(c.length, long.length - i)), i);
      i += c.length;
    }
    const file = path.join(tmp, 'long.wav');
    writeWav(file, long, 16000);
    const r = cli('predict', '--model', model, file);
    expect(r.status, r.stderr).toBe(0);
    const p = JSON.parse(r.stdout);
    expect(p.seconds).toBeCloseTo(60, 6);
    const segs = p.segments as Array<{ start: number; end: number; label: string; probabilities: Record<string, number> }>;
    expect(segs).toHaveLength(39); // starts 0, 1.5, ..., 57
    segs.forEach((s, i) => {
      expect(s.start).toBeCloseTo(1.5 * i, 9);
      expect(s.end - s.start).toBeCloseTo(3, 9);
      expect(Math.abs(sum(s.probabilities) - 1)).toBeLessThan(1e-5);
    });
    expect(segs[segs.length - 1].end).toBeCloseTo(60, 9);
    for (const l of Object.keys(p.probabilities)) expect(p.probabilities[l]).toBeCloseTo(segs.reduce((a, s) => a + s.probabilities[l], 0) / segs.length, 6);
    // --segment vad: speech segments inside 0..60 s, in order
    const v = JSON.parse(cli('predict', '--model', model, '--segment', 'vad', file).stdout);
    expect(v.segments.length).toBeGreaterThan(0);
    for (const s of v.segments) expect(s.start >= 0 && s.end <= 60 && s.end > s.start).toBe(true);
  });

  it('a folder run into --out resumes where it was interrupted, without redoing or losing files; bad files get one error line', async () => {
    const dir = path.join(tmp, 'batch');
    fs.mkdirSync(dir);
    const names = fs.readdirSync(emodbDev().wavDir).filter((f) => f.startsWith('10')).slice(0, 12);
    for (const n of names) fs.copyFileSync(wav(n), path.join(dir, n));
    fs.writeFileSync(path.join(dir, 'broken.wav'), 'this is not audio');
    const out = path.join(tmp, 'results.jsonl');

    const child: ChildProcess = spawn(process.execPath, [CLI, 'predict', '--model', model, dir, '--out', out], { env, stdio: 'ignore' });
    const exited = new Promise<void>((res) => child.on('exit', () => res()));
    const t0 = Date.now();
    while (!(fs.existsSync(out) && fs.readFileSync(out, 'utf8').split('\n').length > 4)) {
      if (Date.now() - t0 > 120_000) throw new Error('no results after 120 s');
      if (child.exitCode !== null) throw new Error('predict ended before it could be interrupted');
      await new Promise((r) => setTimeout(r, 10));
    }
    child.kill('SIGKILL');
    await exited;
    const before = fs.readFileSync(out, 'utf8');
    const kept = before.split('\n').filter(Boolean).length;
    expect(kept).toBeLessThan(names.length + 1);
    fs.appendFileSync(out, '{"file": "half a line, as a crash leaves it'); // no newline: must be dropped and redone

    const r = cli('predict', '--model', model, dir, '--out', out);
    expect(r.status).toBe(1); // broken.wav failed
    expect(r.stderr).toMatch(new RegExp(`already in`));
    expect(r.stderr).toMatch(/broken\.wav: .*/);
    const rows = fs.readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(fs.readFileSync(out, 'utf8').startsWith(before.slice(0, before.lastIndexOf('\n') + 1))).toBe(true); // earlier lines untouched
    const files = rows.map((x) => path.basename(x.file)).sort();
    expect(files).toEqual([...names, 'broken.wav'].sort()); // every file exactly once
    const broken = rows.find((x) => x.file.endsWith('broken.wav'));
    expect(broken.error).toMatch(/broken\.wav/);
    expect(broken.error.includes('\n')).toBe(false);
    // a third run has nothing left to do
    const again = cli('predict', '--model', model, dir, '--out', out);
    expect(again.stderr).toMatch(/0 file\(s\) done/);
  });

  it('bad input: a missing file or model is one line, exit 1', () => {
    const r = cli('predict', '--model', model, path.join(tmp, 'nope.wav'));
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/nope\.wav: no such file/);
    const m = cli('predict', '--model', tmp, wav('03a01Fa.wav'));
    expect(m.status).toBe(1);
    expect(m.stderr).toMatch(/not an emosllm model folder/);
  });
});
