import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseCsvTable } from './csv.ts';
import type { DatasetSummary } from './summary.ts';
import { emodbDev, REPO_ROOT } from '../../test/fixtures-gen/paths.ts';

/** Run the real CLI entry point, as a user would. */
function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [path.join(REPO_ROOT, 'bin/emosllm.mjs'), ...args], { cwd: REPO_ROOT, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const count = (xs: string[]) => xs.reduce<Record<string, number>>((m, x) => ((m[x] = (m[x] ?? 0) + 1), m), {});

describe('emosllm data summary', () => {
  const emo = emodbDev();
  const rows = parseCsvTable(fs.readFileSync(emo.manifest, 'utf8'), emo.manifest).records.map((r) => r.values);

  it('EmoDB layout (wav/ only, no manifest): 373 clips, 7 speakers, 7 emotions, same counts as manifest.csv', () => {
    const r = cli('data', 'summary', path.relative(REPO_ROOT, emo.wavDir), '--json');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout) as DatasetSummary;
    expect(s.corpus).toBe('emodb');
    expect(s.clips).toBe(373);
    expect(Object.keys(s.speakers).length).toBe(7);
    expect(Object.keys(s.labels).length).toBe(7);
    expect(s.labels).toEqual(count(rows.map((x) => x.emotion!)));
    expect(s.speakers).toEqual(count(rows.map((x) => x.speaker!)));
    for (const spk of Object.keys(s.speakers)) {
      expect(s.speakerLabels[spk]).toEqual(count(rows.filter((x) => x.speaker === spk).map((x) => x.emotion!)));
    }
    // Durations from the WAV headers equal the manifest's to within its 1 ms rounding.
    const durs = rows.map((x) => Number(x.duration_s));
    expect(s.durations!.source).toBe('header');
    expect(s.durations!.min).toBeCloseTo(Math.min(...durs), 2);
    expect(s.durations!.max).toBeCloseTo(Math.max(...durs), 2);
    expect(Math.abs(s.durations!.total - durs.reduce((a, b) => a + b, 0))).toBeLessThan(373 * 0.0005);
  });

  it('prints a table; reads durations from the manifest when it has duration_s', () => {
    const r = cli('data', 'summary', emo.dir);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/clips: 373 {3}speakers: 7 {3}labels: 7/);
    expect(r.stdout).toMatch(/duration: min 1\.37 s, mean 2\.76 s, max 8\.98 s, total 17\.2 min \(from the manifest\)/);
    expect(r.stdout).toMatch(/^anger\s+88\s+23\.6%$/m);
    expect(r.stdout).toMatch(/^03\s+male\s+14\s+11\s+5\s+7\s+4\s+7\s+1\s+49$/m);
  });

  it('bad input: exit 1 and one line naming the problem, no stack trace', () => {
    for (const args of [['/definitely/not/here'], [emo.manifest, '--corpus', 'nope'], [path.join(REPO_ROOT, 'package.json')]]) {
      const r = cli('data', 'summary', ...args);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      const lines = r.stderr.trim().split('\n');
      expect(lines.length).toBe(1);
      expect(lines[0]).toMatch(/^emosllm: error: /);
    }
  });
});
