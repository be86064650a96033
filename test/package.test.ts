/**
 * The package as a user gets it: `npm pack` (whose prepack script builds dist/), the tarball installed into a
 * fresh project, the README's programmatic example type-checked against the installed declarations and run on
 * emodb-dev clips, and the installed CLI started.
 */
import { type SpawnSyncReturns, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, emodbDev, tempDir } from './fixtures-gen/paths.ts';
import { emodbSubset } from './fixtures-gen/subset.ts';

const tmp = tempDir('package');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Top-level entries of the checkout that are not part of what `npm pack` builds from. */
const NOT_COPIED = new Set(['node_modules', 'dist', 'runs', '.git', '.cache', 'scratch', 'tmp']);
const TSC = path.join(REPO_ROOT, 'node_modules/typescript/bin/tsc');

function run(cmd: string, args: string[], cwd: string, env: Record<string, string> = {}): SpawnSyncReturns<string> {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, ...env } });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} (in ${cwd}) exited with ${r.status}:\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** The README's programmatic example: the ts block under the comment that names this test. */
function readmeExample(): string {
  const readme = fs.readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
  const m = /<!-- test\/package\.test\.ts runs this block[^>]*-->\n```ts\n([\s\S]*?)```/.exec(readme);
  if (!m) throw new Error('README.md has no programmatic example block (the ```ts block under the test/package.test.ts comment)');
  return m[1]!;
}

// Each step spawns npm, tsc or node and waits for it; on a loaded 2-core machine a step can take minutes.
const STEP_TIMEOUT_MS = 600_000;
const project = path.join(tmp, 'project');

describe('the npm package, packed and installed into a fresh project', () => {
  it('npm pack builds dist/ and ships it with the launcher, README and LICENSE (no sources, no tests); the tarball installs', () => {
    // Pack a copy of the checkout: the build `npm pack` runs replaces dist/, which other tests' CLI processes read.
    const stage = path.join(tmp, 'stage');
    fs.cpSync(REPO_ROOT, stage, { recursive: true, filter: (src) => !NOT_COPIED.has(path.relative(REPO_ROOT, src)) && !src.endsWith('.tgz') });
    fs.symlinkSync(path.join(REPO_ROOT, 'node_modules'), path.join(stage, 'node_modules'));
    const [packed] = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', tmp], stage).stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
    const files = packed!.files.map((f) => f.path);
    for (const f of ['package.json', 'README.md', 'LICENSE', 'bin/emosllm.mjs', 'dist/index.js', 'dist/index.d.ts', 'dist/cli/main.js', 'dist/audio/decode-worker.mjs', 'scripts/system-deps.mjs'])
      expect(files, f).toContain(f);
    expect(files.filter((f) => /^(src|test|bench|web)\//.test(f) || /\.test\.(js|d\.ts)$/.test(f))).toEqual([]);

    fs.mkdirSync(project);
    fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
    fs.copyFileSync(path.join(REPO_ROOT, '.npmrc'), path.join(project, '.npmrc')); // onnxruntime-node: no download
    // dependencies come from the npm cache when it has them (it does after `npm ci` here), else the registry
    run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', path.join(tmp, packed!.filename)], project);
    expect(fs.existsSync(path.join(project, 'node_modules/emosllm/dist/index.js'))).toBe(true);
  }, STEP_TIMEOUT_MS);

  it("the README's programmatic example and a wrong use of the API type-check against the installed declarations", () => {
    // The example, unchanged, plus a check that the installed types are real ones (a wrong use must not compile).
    fs.writeFileSync(path.join(project, 'example.ts'), readmeExample());
    fs.writeFileSync(
      path.join(project, 'types.ts'),
      [
        "import { EmoSLLM, type ClipPrediction, defaultTrainConfig } from 'emosllm';",
        "export const labelOf = (p: ClipPrediction): string => p.label;",
        "export const labelsOf = (m: EmoSLLM): string[] => m.labels;",
        '// @ts-expect-error the label set is string[], not a number',
        'export const wrong: number = (null as unknown as EmoSLLM).labels;',
        "// @ts-expect-error a training config needs its data",
        'defaultTrainConfig({});',
        '',
      ].join('\n'),
    );
    fs.writeFileSync(
      path.join(project, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, types: ['node'], typeRoots: [path.join(REPO_ROOT, 'node_modules/@types')] },
        files: ['example.ts', 'types.ts'],
      }),
    );
    // No skipLibCheck, so a broken declaration of ours is an error; other packages' own declaration problems
    // (extensionless imports in @huggingface/tokenizers, protobuf's Long in onnx-proto) are theirs, not checked.
    const tsc = spawnSync(process.execPath, [TSC, '-p', project, '--pretty', 'false'], { cwd: project, encoding: 'utf8' });
    const errors = tsc.stdout.split('\n').filter((l) => /error TS\d+/.test(l) && !/^node_modules\/(?!emosllm\/)/.test(l));
    expect(errors).toEqual([]);
    expect(fs.existsSync(path.join(project, 'example.js'))).toBe(true);
  }, STEP_TIMEOUT_MS);

  it('the example trains, evaluates and predicts on emodb-dev clips: a label of the model, probabilities summing to 1', () => {

    emodbSubset(path.join(project, 'corpus'), ['03', '08', '09'], 4);
    fs.copyFileSync(path.join(emodbDev().wavDir, '03a01Wa.wav'), path.join(project, 'clip.wav'));
    const ex = run(process.execPath, ['example.js'], project, { EMOSLLM_CACHE_DIR: path.join(tmp, 'cache') });
    const p = JSON.parse(ex.stdout.trim().split('\n').at(-1)!) as { label: string; probabilities: Record<string, number>; seconds: number; segments: unknown[] };
    const labels = JSON.parse(fs.readFileSync(path.join(project, 'runs/api/emosllm.json'), 'utf8')).labels as string[];
    expect(labels.length).toBeGreaterThanOrEqual(2);
    expect(labels).toContain(p.label);
    expect(Object.keys(p.probabilities).sort()).toEqual([...labels].sort());
    expect(Math.abs(Object.values(p.probabilities).reduce((a, b) => a + b, 0) - 1)).toBeLessThan(1e-5);
    expect(p.probabilities[p.label]).toBe(Math.max(...Object.values(p.probabilities)));
    expect(p.seconds).toBeGreaterThan(1);
    expect(p.segments).toHaveLength(1); // a short clip is scored whole
    const metrics = JSON.parse(fs.readFileSync(path.join(project, 'runs/api-eval/metrics.json'), 'utf8'));
    expect(metrics.n).toBeGreaterThan(0);
    expect(ex.stderr).toMatch(/UA \d+\.\d% on \d+ clips/);
  }, STEP_TIMEOUT_MS);

  it('the installed CLI starts and reports the package version', () => {

    const version = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')).version;
    expect(run(path.join(project, 'node_modules/.bin/emosllm'), ['--version'], project).stdout.trim()).toBe(version);
  });
});
