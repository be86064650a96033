/** Comparing our tensors with reference tensors, one row per tensor, for `emosllm parity`. */

export type ParityStatus = 'pass' | 'FAIL' | 'not covered';

export interface ParityRow {
  folder: string;
  tensor: string;
  maxAbs: number;
  maxRel: number;
  status: ParityStatus;
  note?: string;
}

export interface Tolerance {
  atol: number;
  rtol: number;
}

export const DEFAULT_TOL: Tolerance = { atol: 1e-4, rtol: 1e-4 };

/**
 * Element-wise |ours - ref| <= atol + rtol * |ref| on the positions where `valid` (if given) is true; a mask
 * that leaves nothing to compare fails (it would pass anything). maxRel is max |ours - ref| / max(|ref|, tiny).
 */
export function compareArrays(
  folder: string,
  tensor: string,
  ours: ArrayLike<number>,
  ref: ArrayLike<number>,
  tol: Tolerance = DEFAULT_TOL,
  valid?: (i: number) => boolean,
): ParityRow {
  if (ours.length !== ref.length)
    return { folder, tensor, maxAbs: Infinity, maxRel: Infinity, status: 'FAIL', note: `size ${ours.length} vs reference ${ref.length}` };
  let maxAbs = 0;
  let maxRel = 0;
  let ok = true;
  let compared = 0;
  for (let i = 0; i < ref.length; i++) {
    if (valid && !valid(i)) continue;
    compared++;
    const a = ours[i];
    const b = ref[i];
    const d = Math.abs(a - b);
    if (!(d <= tol.atol + tol.rtol * Math.abs(b))) ok = false; // NaN fails too
    if (d > maxAbs || Number.isNaN(d)) maxAbs = Number.isNaN(d) ? NaN : d;
    const r = d / Math.max(Math.abs(b), 1e-12);
    if (r > maxRel) maxRel = r;
  }
  if (valid && compared === 0 && ref.length > 0) return { folder, tensor, maxAbs: NaN, maxRel: NaN, status: 'FAIL', note: 'the validity mask excludes every element' };
  return { folder, tensor, maxAbs, maxRel, status: ok ? 'pass' : 'FAIL' };
}

/** Gradient rows: max|g - ref| <= rel * max|ref| (+ a small absolute floor for analytically-zero tensors). */
export function compareGradient(folder: string, tensor: string, ours: ArrayLike<number>, ref: ArrayLike<number>, rel = 1e-4, absFloor = 1e-6): ParityRow {
  let refMax = 0;
  for (let i = 0; i < ref.length; i++) refMax = Math.max(refMax, Math.abs(ref[i]));
  return compareArrays(folder, tensor, ours, ref, { atol: Math.max(rel * refMax, absFloor), rtol: 0 });
}

export const notCovered = (folder: string, note: string): ParityRow => ({
  folder,
  tensor: '*',
  maxAbs: NaN,
  maxRel: NaN,
  status: 'not covered',
  note,
});

export function formatTable(rows: ParityRow[]): string {
  const head = ['folder', 'tensor', 'max abs', 'max rel', 'result'];
  const fmt = (x: number) => (Number.isNaN(x) ? '-' : x === Infinity ? 'inf' : x.toExponential(2));
  const body = rows.map((r) => [r.folder, r.tensor, fmt(r.maxAbs), fmt(r.maxRel), r.status + (r.note ? ` (${r.note})` : '')]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}
