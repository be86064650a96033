import type { Command } from 'commander';
import { convertFolder } from '../io/convert.ts';
import { hubFiles } from '../io/hub.ts';
import { modelFolder } from './hub.ts';

export function defineConvert(cmd: Command): void {
  cmd
    .argument('<dir|id>', 'a checkpoint folder with torch .bin weights, or a Hub id org/name[@rev]')
    .requiredOption('--out <dir>', 'new folder for the safetensors copy (must not exist)')
    .action(async (dir: string, opts: { out: string }) => {
      const src = await modelFolder(dir, hubFiles.all());
      const r = convertFolder(src, opts.out);
      console.log(`${r.tensors} tensors -> ${r.shards.length === 1 ? r.shards[0] : `${r.shards.length} shards`} in ${r.out}`);
    });
}
