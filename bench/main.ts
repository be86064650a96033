/**
 * `npm run bench -- <suite>`: engine | models | emosllm | export | serve | soak | cli | scale | peer | queue | accuracy.
 * Progress goes to stderr; the last line of stdout is one JSON object with the suite's figures.
 */
import { benchEngine } from './engine.ts';
import { benchModels } from './models.ts';
import { peakRssMb } from './util.ts';

const suites: Record<string, () => Promise<Record<string, number>>> = {
  engine: benchEngine,
  models: benchModels,
  emosllm: async () => (await import('./emosllm.ts')).benchEmoSLLM(),
  export: async () => (await import('./export.ts')).benchExport(),
  serve: async () => (await import('./serve.ts')).benchServe(),
  soak: async () => (await import('./soak.ts')).benchSoak(),
  cli: async () => (await import('./cli.ts')).benchCli(),
  scale: async () => (await import('./scale.ts')).benchScale(),
  peer: async () => (await import('./peer.ts')).benchPeer(),
  queue: async () => (await import('./queue.ts')).benchQueue(),
  accuracy: async () => (await import('./accuracy.ts')).benchAccuracy(),
};

const name = process.argv[2] ?? 'engine';
const suite = suites[name];
if (!suite) {
  console.error(`unknown bench suite "${name}"; available: ${Object.keys(suites).join(', ')}`);
  process.exit(2);
}
const result = await suite();
// a suite that runs its work in child processes reports their peak as peak_rss_mb
// a smoke run on shrunken shapes says so, so its figures are never taken for the real ones
const small = process.env.EMOSLLM_BENCH_SMALL === '1' ? { small: true } : {};
console.log(JSON.stringify({ suite: name, ...small, ...result, peak_rss_mb: Math.round(Math.max(peakRssMb(), result.peak_rss_mb ?? 0)) }));
