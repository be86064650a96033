import type { Command } from 'commander';
import { formatTable } from '../models/parity/compare.ts';
import { runParity } from '../models/parity/index.ts';
import { AdamW } from '../train/adamw.ts';
import { hubFiles } from '../io/hub.ts';
import { modelFolder } from './hub.ts';

/** The options and action of `emosllm parity` (its name and description are in commands.ts). */
export function defineParity(cmd: Command): void {
  cmd
    .argument('<dir|id>', 'fixtures root, e.g. ../shared/fixtures/hf-parity, or a Hub id org/name[@rev] of a repository laid out like it')
    .option('--only <folders>', 'comma-separated folder names to check (each must exist)')
    .option('--json', 'print rows as JSON lines instead of a table')
    .action(async (dir: string, opts: { only?: string; json?: boolean }) => {
      const only = opts.only?.split(',').map((s) => s.trim());
      const root = await modelFolder(dir, hubFiles.all(only));
      const rows = await runParity(root, { only, optimizer: (hp) => new AdamW(hp) });
      if (opts.json) for (const r of rows) console.log(JSON.stringify(r));
      else console.log(formatTable(rows));
      const failed = rows.filter((r) => r.status === 'FAIL');
      const uncovered = rows.filter((r) => r.status === 'not covered');
      console.log(`\n${rows.length - failed.length - uncovered.length} passed, ${failed.length} failed, ${uncovered.length} not covered`);
      // a row nobody checked is not a pass: the fixtures hold something our checks do not reproduce
      if (failed.length || uncovered.length) process.exitCode = 1;
    });
}
