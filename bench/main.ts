/**
 * `npm run bench -- <suite>`: engine | models | emosllm | serve. Progress goes to stderr; the last line of
 * stdout is one JSON object with the suite's figures.
 */
import { benchEngine } from './engine.ts';
import { peakRssMb } from './util.ts';

const suites: Record<string, () => Promise<Record<string, number>>> = {
  engine: benchEngine,
};

const name = process.argv[2] ?? 'engine';
const suite = suites[name];
if (!suite) {
  console.error(`unknown bench suite "${name}"; available: ${Object.keys(suites).join(', ')}`);
  process.exit(2);
}
const result = await suite();
console.log(JSON.stringify({ suite: name, ...result, peak_rss_mb: Math.round(peakRssMb()) }));
