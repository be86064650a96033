/** Small manifests over ../shared/data/emodb-dev (absolute paths), for tests that train. */
import fs from 'node:fs';
import path from 'node:path';
import { parseCsvTable, toCsv } from '../../src/data/csv.ts';
import { emodbDev } from './paths.ts';

/**
 * Writes `<dir>/manifest.csv` with `perSpeaker` clips of each of the given speakers (every emotion as far as
 * the count allows: clips are taken round-robin over the labels). Returns the manifest path.
 */
export function emodbSubset(dir: string, speakers: string[], perSpeaker: number): string {
  const emo = emodbDev();
  const table = parseCsvTable(fs.readFileSync(emo.manifest, 'utf8'), emo.manifest);
  const rows = table.records.map((r) => r.values);
  const out: string[][] = [table.header];
  for (const spk of speakers) {
    const byLabel = new Map<string, Array<Record<string, string>>>();
    for (const r of rows.filter((x) => x.speaker === spk)) {
      const l = r.emotion!;
      if (!byLabel.has(l)) byLabel.set(l, []);
      byLabel.get(l)!.push(r as Record<string, string>);
    }
    const lists = [...byLabel.keys()].sort().map((k) => byLabel.get(k)!);
    let taken = 0;
    for (let i = 0; taken < perSpeaker && lists.some((l) => l.length > i); i++)
      for (const l of lists)
        if (l[i] && taken < perSpeaker) {
          const r: Record<string, string> = { ...l[i], path: path.join(emo.dir, l[i].path) };
          out.push(table.header.map((h) => r[h] ?? ''));
          taken++;
        }
  }
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'manifest.csv');
  fs.writeFileSync(file, toCsv(out));
  return file;
}
