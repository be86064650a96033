/**
 * CLI start-up benchmark (`npm run bench -- cli`): wall time of `node bin/emosllm.mjs --version` and `--help`,
 * each a fresh process (1 warm-up, then 5 timed runs; medians). It first runs `npm run build`, so the figures
 * are for the compiled CLI (dist/) of the current sources, the path `npm ci` and an installed package take;
 * node_ms_median is a bare `node -e ""` on the same machine, the floor any Node CLI starts from.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { log, median, round } from './util.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const RUNS = 5;

/** Milliseconds of wall time per run of `node args` (after one untimed warm-up run). */
function wallMs(args: string[]): number[] {
  const run = () => {
    const t0 = performance.now();
    const r = spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8' });
    const ms = performance.now() - t0;
    if (r.status !== 0) throw new Error(`node ${args.join(' ')} exited with ${r.status}: ${r.stderr}`);
    return ms;
  };
  run();
  return Array.from({ length: RUNS }, run);
}

export async function benchCli(): Promise<Record<string, number>> {
  log('npm run build');
  const build = spawnSync('npm', ['run', 'build'], { cwd: ROOT, encoding: 'utf8' });
  if (build.status !== 0) throw new Error(`npm run build failed: ${build.stdout}${build.stderr}`);
  const cli = path.join(ROOT, 'bin', 'emosllm.mjs');
  const version = wallMs([cli, '--version']);
  const help = wallMs([cli, '--help']);
  const node = wallMs(['-e', '']);
  log(`--version ms: ${version.map((x) => round(x)).join(', ')}`);
  return { version_ms_median: round(median(version)), help_ms_median: round(median(help)), node_ms_median: round(median(node)), runs: RUNS };
}
