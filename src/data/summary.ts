/** Corpus statistics for `emosllm data summary`: counts per label / speaker and clip durations. */
import { probeAudio } from '../audio/decode.ts';
import type { Dataset } from './types.ts';

export interface DurationStats {
  min: number;
  mean: number;
  max: number;
  total: number;
  /** Where the numbers come from: the manifest's duration_s, audio headers, or decoding (or a mix). */
  source: 'manifest' | 'header' | 'decoded' | 'mixed';
}

export interface DatasetSummary {
  corpus: string;
  root: string;
  clips: number;
  /** Label -> clips. */
  labels: Record<string, number>;
  /** Speaker -> clips. */
  speakers: Record<string, number>;
  /** Speaker -> label -> clips. */
  speakerLabels: Record<string, Record<string, number>>;
  speakerGender: Record<string, string>;
  durations: DurationStats | null;
  warnings: string[];
  notes: string[];
}

const byName = (a: string, b: string) => a.localeCompare(b, 'en', { numeric: true });

/**
 * Summarise a dataset. Durations come from each item's durationS (manifest) when present, else from the file
 * header (WAV, FLAC: no decoding), else by decoding. `durations: false` skips them.
 */
export async function summarizeDataset(ds: Dataset, opts: { durations?: boolean } = {}): Promise<DatasetSummary> {
  const labels = new Map<string, number>();
  const speakers = new Map<string, number>();
  const speakerLabels: Record<string, Record<string, number>> = {};
  const speakerGender: Record<string, string> = {};
  for (const it of ds.items) {
    labels.set(it.label, (labels.get(it.label) ?? 0) + 1);
    speakers.set(it.speaker, (speakers.get(it.speaker) ?? 0) + 1);
    const row = (speakerLabels[it.speaker] ??= {});
    row[it.label] = (row[it.label] ?? 0) + 1;
    if (it.gender) speakerGender[it.speaker] = it.gender;
  }
  let durations: DurationStats | null = null;
  if (opts.durations ?? true) {
    const sources = new Set<'manifest' | 'header' | 'decoded'>();
    let min = Infinity;
    let max = -Infinity;
    let total = 0;
    for (const it of ds.items) {
      let d = it.durationS;
      if (d === undefined) {
        const info = await probeAudio(it.path);
        d = info.durationS;
        sources.add(info.source);
      } else sources.add('manifest');
      min = Math.min(min, d);
      max = Math.max(max, d);
      total += d;
    }
    durations = { min, max, total, mean: total / ds.items.length, source: sources.size === 1 ? [...sources][0]! : 'mixed' };
  }
  const sortedLabels = [...labels.entries()].sort((a, b) => b[1] - a[1] || byName(a[0], b[0]));
  const sortedSpeakers = [...speakers.entries()].sort((a, b) => byName(a[0], b[0]));
  return {
    corpus: ds.corpus,
    root: ds.root,
    clips: ds.items.length,
    labels: Object.fromEntries(sortedLabels),
    speakers: Object.fromEntries(sortedSpeakers),
    speakerLabels,
    speakerGender,
    durations,
    warnings: ds.warnings,
    notes: ds.notes,
  };
}

function fmtS(s: number): string {
  return s >= 600 ? `${(s / 60).toFixed(1)} min` : `${s.toFixed(2)} s`;
}

/** Plain-text report: totals, durations, a label table and a speaker x label table. */
export function formatSummary(s: DatasetSummary): string {
  const lines: string[] = [];
  // Sort here: object key order is unreliable (integer-like keys such as speaker "10" jump ahead of "03").
  const labelNames = Object.keys(s.labels).sort((a, b) => s.labels[b]! - s.labels[a]! || byName(a, b));
  lines.push(`corpus: ${s.corpus}  (${s.root})`);
  lines.push(`clips: ${s.clips}   speakers: ${Object.keys(s.speakers).length}   labels: ${labelNames.length}`);
  if (s.durations) {
    const d = s.durations;
    const src = { manifest: 'from the manifest', header: 'from audio headers', decoded: 'decoded', mixed: 'manifest / headers / decoded' }[d.source];
    lines.push(`duration: min ${fmtS(d.min)}, mean ${fmtS(d.mean)}, max ${fmtS(d.max)}, total ${fmtS(d.total)} (${src})`);
  }
  lines.push('');
  const w = Math.max(5, ...labelNames.map((l) => l.length));
  lines.push(`${'label'.padEnd(w)}  clips  share`);
  for (const l of labelNames) lines.push(`${l.padEnd(w)}  ${String(s.labels[l]).padStart(5)}  ${((100 * s.labels[l]!) / s.clips).toFixed(1).padStart(4)}%`);
  lines.push(`${'total'.padEnd(w)}  ${String(s.clips).padStart(5)}`);
  lines.push('');
  const spk = Object.keys(s.speakers).sort(byName);
  const hasGender = Object.keys(s.speakerGender).length > 0;
  const sw = Math.max(7, ...spk.map((x) => x.length));
  const cols = labelNames.map((l) => Math.max(l.length, 3));
  const head = [`${'speaker'.padEnd(sw)}`, ...(hasGender ? ['gender'] : []), ...labelNames.map((l, i) => l.padStart(cols[i]!)), 'total'];
  lines.push(head.join('  '));
  for (const x of spk) {
    const row = s.speakerLabels[x] ?? {};
    lines.push(
      [
        x.padEnd(sw),
        ...(hasGender ? [(s.speakerGender[x] ?? '').padEnd(6)] : []),
        ...labelNames.map((l, i) => String(row[l] ?? 0).padStart(cols[i]!)),
        String(s.speakers[x]).padStart(5),
      ].join('  '),
    );
  }
  for (const n of s.notes) lines.push(`note: ${n}`);
  for (const wline of s.warnings) lines.push(`warning: ${wline}`);
  return lines.join('\n');
}
