/**
 * Self-contained HTML evaluation report: one file that opens offline (no scripts, fonts, images or CDNs),
 * inline CSS, charts as inline SVG generated here. Every piece of caller text is HTML-escaped.
 */
import { writeFileAtomic } from '../util/fs.ts';
import { UserError } from '../util/errors.ts';
import type { Metrics } from './metrics.ts';

export type CurveKind = 'train_loss' | 'valid_loss' | 'valid_ua';

export interface CurvePoint {
  step: number;
  value: number;
}

export interface Curve {
  /** Series name, e.g. the fold ("fold1"). Curves of the same kind are overlaid in one chart. */
  name: string;
  points: CurvePoint[];
  kind: CurveKind;
}

export interface ReportData {
  title: string;
  /** Run information shown as a key/value table, in insertion order (corpus, encoder, LLM, date, seeds, wall time...). */
  info: Record<string, string>;
  /** Overall metrics (all predictions). */
  metrics: Metrics;
  folds?: Array<{ name: string; metrics: Metrics }>;
  curves?: Curve[];
  /** Shows a banner saying the numbers come from synthetic data. */
  synthetic?: boolean;
}

/** Maximum points drawn per series; longer series are downsampled with LTTB. */
export const MAX_POINTS_PER_SERIES = 500;

/** Escape text for HTML text content and for quoted attribute values. */
export function escapeHtml(s: string): string {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}
const esc = escapeHtml;

function pct(x: number, digits = 2): string {
  return Number.isFinite(x) ? `${(x * 100).toFixed(digits)}%` : '—';
}

function pctPm(mean: number, std: number): string {
  return Number.isFinite(mean) && Number.isFinite(std) ? `${(mean * 100).toFixed(2)} ± ${(std * 100).toFixed(2)}%` : '—';
}

/** Round for SVG coordinates. */
function r(x: number): string {
  return (Math.round(x * 10) / 10).toString();
}

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

function truncate(s: string, max: number): string {
  const chars = [...s];
  return chars.length <= max ? s : `${chars.slice(0, max - 1).join('')}…`;
}

export interface DrawnSeries {
  /** The line to draw: the points themselves, or one point per bucket (mean step, mean value) when downsampled. */
  line: CurvePoint[];
  /** When downsampled: per bucket the mean step and the min / max value, drawn as a faint band so spikes survive. */
  band?: Array<{ step: number; lo: number; hi: number }>;
}

/**
 * Downsample a series (sorted by step) for drawing. Series of at most `maxPoints` points are drawn as they are;
 * longer ones are cut into `maxPoints` / 2 buckets of consecutive points, each drawn as its mean (the line) and its
 * min..max range (the band). Averaging per bucket makes noisy per-step losses readable; the band keeps outliers.
 */
export function downsample(points: readonly CurvePoint[], maxPoints: number = MAX_POINTS_PER_SERIES): DrawnSeries {
  const n = points.length;
  if (n <= maxPoints || maxPoints < 2) return { line: points.slice() };
  const buckets = Math.max(1, Math.floor(maxPoints / 2));
  const line: CurvePoint[] = [];
  const band: Array<{ step: number; lo: number; hi: number }> = [];
  for (let b = 0; b < buckets; b++) {
    const from = Math.floor((b * n) / buckets);
    const to = Math.floor(((b + 1) * n) / buckets);
    if (to <= from) continue;
    let sx = 0;
    let sy = 0;
    let lo = Infinity;
    let hi = -Infinity;
    for (let j = from; j < to; j++) {
      const p = points[j]!;
      sx += p.step;
      sy += p.value;
      if (p.value < lo) lo = p.value;
      if (p.value > hi) hi = p.value;
    }
    const step = sx / (to - from);
    line.push({ step, value: sy / (to - from) });
    band.push({ step, lo, hi });
  }
  return { line, band };
}

/** About `count` "nice" ticks (1, 2, 5 x 10^k) covering [lo, hi]. */
function niceTicks(lo: number, hi: number, count = 5): { ticks: number[]; lo: number; hi: number; step: number } {
  const span = hi - lo;
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = (norm < 1.5 ? 1 : norm < 3.5 ? 2 : norm < 7.5 ? 5 : 10) * mag;
  const nlo = Math.floor(lo / step + 1e-9) * step;
  const nhi = Math.ceil(hi / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let t = nlo; t <= nhi + step * 1e-6; t += step) ticks.push(Math.abs(t) < step * 1e-9 ? 0 : t);
  return { ticks, lo: nlo, hi: nhi, step };
}

function tickLabel(v: number, step: number): string {
  const abs = Math.abs(v);
  if (abs >= 1e6 && step >= 1e5) return `${+(v / 1e6).toFixed(2)}M`;
  if (abs >= 1e4 && step >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  const digits = Math.max(0, Math.min(8, -Math.floor(Math.log10(step) + 1e-9)));
  return v.toFixed(digits);
}

function rangeOf(values: number[]): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo === hi) {
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    return [lo - pad, hi + pad];
  }
  return [lo, hi];
}

// Okabe-Ito palette (colour-blind safe) without its yellow, which is unreadable on white; series 8+ are dashed.
const SERIES_COLOURS = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000'];
const SERIES_DASHES = ['', '7 4', '2 3', '10 3 2 3'];

const KIND_TITLES: Record<string, { title: string; y: string; x: string }> = {
  train_loss: { title: 'Training loss', y: 'loss', x: 'step' },
  valid_loss: { title: 'Validation loss', y: 'loss', x: 'step' },
  valid_ua: { title: 'Validation UA', y: 'UA', x: 'step' },
};

function lineChart(title: string, xTitle: string, yTitle: string, series: Curve[], percentIfUnit = false): string {
  const W = 900;
  const m = { left: 64, right: 20, top: 14, bottom: 46 };
  const plotW = W - m.left - m.right;

  const prepared = series.map((s) => {
    const finite = s.points.filter((p) => Number.isFinite(p.step) && Number.isFinite(p.value));
    const sorted = [...finite].sort((a, b) => a.step - b.step);
    const drawn = downsample(sorted);
    return { name: s.name, total: s.points.length, dropped: s.points.length - finite.length, pts: drawn.line, band: drawn.band };
  });
  // The axes cover the raw points (the band's extremes), not just the drawn means.
  const all = prepared.flatMap((s) => (s.band ? s.band.flatMap((b) => [{ step: b.step, value: b.lo }, { step: b.step, value: b.hi }]) : s.pts));
  const plotH = all.length === 0 ? 60 : 280;

  // Legend layout (inside the SVG, below the plot).
  const legendTop = m.top + plotH + m.bottom;
  const items = prepared.map((s, i) => {
    const label = truncate(s.name, 40) + (s.pts.length === 0 ? ' (no data)' : '');
    return { label, full: s.name, width: 34 + [...label].length * 7 + 18, i };
  });
  let lx = m.left;
  let row = 0;
  const placed = items.map((it) => {
    if (lx + it.width > W - m.right && lx > m.left) {
      row++;
      lx = m.left;
    }
    const pos = { ...it, x: lx, y: legendTop + row * 20 };
    lx += it.width;
    return pos;
  });
  const H = legendTop + (row + 1) * 20 + 6;

  const parts: string[] = [];
  parts.push(`<svg class="chart" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(title)}">`);
  parts.push(`<title>${esc(title)}</title>`);
  if (all.length === 0) {
    parts.push(`<rect x="${m.left}" y="${m.top}" width="${plotW}" height="${plotH}" class="frame"/>`);
    parts.push(`<text x="${m.left + plotW / 2}" y="${m.top + plotH / 2}" dy="0.32em" text-anchor="middle" class="muted">no finite data points</text>`);
  } else {
    const [x0, x1] = rangeOf(all.map((p) => p.step));
    const [y0, y1] = rangeOf(all.map((p) => p.value));
    const xt = niceTicks(x0, x1, 8);
    const yt = niceTicks(y0, y1, 5);
    // Fractions in [0, 1] (UA) are labelled as percentages, like the rest of the report.
    const asPct = percentIfUnit && all.every((p) => p.value >= 0 && p.value <= 1);
    const yLabel = (t: number) => (asPct ? `${tickLabel(t * 100, yt.step * 100)}%` : tickLabel(t, yt.step));
    const sx = (x: number) => m.left + ((x - xt.lo) / (xt.hi - xt.lo)) * plotW;
    const sy = (y: number) => m.top + plotH - ((y - yt.lo) / (yt.hi - yt.lo)) * plotH;
    parts.push(`<rect x="${m.left}" y="${m.top}" width="${plotW}" height="${plotH}" class="plot-bg"/>`);
    for (const t of yt.ticks) {
      const y = r(sy(t));
      parts.push(`<line x1="${m.left}" x2="${m.left + plotW}" y1="${y}" y2="${y}" class="grid"/>`);
      parts.push(`<text x="${m.left - 6}" y="${y}" dy="0.32em" text-anchor="end" class="tick">${esc(yLabel(t))}</text>`);
    }
    for (const t of xt.ticks) {
      const x = r(sx(t));
      parts.push(`<line x1="${x}" x2="${x}" y1="${m.top}" y2="${m.top + plotH}" class="grid"/>`);
      parts.push(`<text x="${x}" y="${m.top + plotH + 16}" text-anchor="middle" class="tick">${esc(tickLabel(t, xt.step))}</text>`);
    }
    parts.push(`<rect x="${m.left}" y="${m.top}" width="${plotW}" height="${plotH}" class="frame"/>`);
    parts.push(`<text x="${m.left + plotW / 2}" y="${m.top + plotH + 36}" text-anchor="middle" class="axis-title">${esc(xTitle)}</text>`);
    parts.push(
      `<text transform="translate(16 ${m.top + plotH / 2}) rotate(-90)" text-anchor="middle" class="axis-title">${esc(yTitle)}</text>`,
    );
    prepared.forEach((s, i) => {
      if (s.pts.length === 0) return;
      const colour = SERIES_COLOURS[i % SERIES_COLOURS.length]!;
      const dash = SERIES_DASHES[Math.floor(i / SERIES_COLOURS.length) % SERIES_DASHES.length]!;
      const d = s.pts.map((p, j) => `${j === 0 ? 'M' : 'L'}${r(sx(p.step))} ${r(sy(p.value))}`).join('');
      const tip =
        `${s.name}: ${s.total} points` +
        (s.dropped ? ` (${s.dropped} non-finite skipped)` : '') +
        (s.band ? `, drawn as ${s.pts.length} bucket means with their min..max range` : '');
      parts.push(`<g class="series"><title>${esc(tip)}</title>`);
      if (s.band) {
        const upper = s.band.map((b, j) => `${j === 0 ? 'M' : 'L'}${r(sx(b.step))} ${r(sy(b.hi))}`).join('');
        const lower = [...s.band].reverse().map((b) => `L${r(sx(b.step))} ${r(sy(b.lo))}`).join('');
        parts.push(`<path d="${upper}${lower}Z" fill="${colour}" fill-opacity="0.16" stroke="none"/>`);
      }
      parts.push(`<path d="${d}" fill="none" stroke="${colour}" stroke-width="1.8" stroke-linejoin="round"${dash ? ` stroke-dasharray="${dash}"` : ''}/>`);
      if (s.pts.length <= 60) {
        for (const p of s.pts) parts.push(`<circle cx="${r(sx(p.step))}" cy="${r(sy(p.value))}" r="2.8" fill="${colour}"/>`);
      }
      parts.push('</g>');
    });
  }
  for (const it of placed) {
    const colour = SERIES_COLOURS[it.i % SERIES_COLOURS.length]!;
    const dash = SERIES_DASHES[Math.floor(it.i / SERIES_COLOURS.length) % SERIES_DASHES.length]!;
    parts.push(`<g class="legend-item"><title>${esc(it.full)}</title>`);
    parts.push(
      `<line x1="${it.x}" x2="${it.x + 28}" y1="${it.y}" y2="${it.y}" stroke="${colour}" stroke-width="2.5"${dash ? ` stroke-dasharray="${dash}"` : ''}/>`,
    );
    parts.push(`<text x="${it.x + 34}" y="${it.y}" dy="0.32em" class="legend">${esc(it.label)}</text></g>`);
  }
  parts.push('</svg>');
  return parts.join('');
}

// ColorBrewer "Blues" (sequential, colour-blind safe, monotonic in lightness).
const BLUES = ['#f7fbff', '#deebf7', '#c6dbef', '#9ecae1', '#6baed6', '#4292c6', '#2171b5', '#08519c', '#08306b'];

function hexToRgb(h: string): [number, number, number] {
  const v = parseInt(h.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

function heatColour(t: number): string {
  const x = Math.max(0, Math.min(1, t)) * (BLUES.length - 1);
  const i = Math.min(BLUES.length - 2, Math.floor(x));
  const f = x - i;
  const a = hexToRgb(BLUES[i]!);
  const b = hexToRgb(BLUES[i + 1]!);
  const c = a.map((v, k) => Math.round(v + (b[k]! - v) * f));
  return `#${c.map((v) => v.toString(16).padStart(2, '0')).join('')}`;
}

function luminance(hex: string): number {
  const [R, G, B] = hexToRgb(hex).map((v) => {
    const s = v / 255;
    return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  }) as [number, number, number];
  return 0.2126 * R + 0.7152 * G + 0.0722 * B;
}

/** Black or white, whichever contrasts more with the fill (WCAG contrast ratio). */
function textOn(fill: string): string {
  const L = luminance(fill);
  return (1.05) / (L + 0.05) > (L + 0.05) / 0.05 ? '#ffffff' : '#111111';
}

function confusionHeatmap(metrics: Metrics, caption: string): string {
  const labels = metrics.labels;
  const k = labels.length;
  const cm = metrics.confusion;
  const cell = Math.max(46, Math.min(84, Math.floor(520 / k)));
  const maxLabel = Math.min(18, Math.max(...labels.map((l) => [...l].length), 4));
  const shown = labels.map((l) => truncate(l, 18));
  const rotate = labels.some((l) => Math.min(18, [...l].length) * 7.2 > cell - 6);
  const left = 30 + maxLabel * 7.2 + 12;
  const top = 34;
  const gridW = k * cell;
  // Rotated by 40 degrees, a label of L pixels drops L * sin(40deg) ~ 0.64 L below the grid.
  const bottom = (rotate ? maxLabel * 7.2 * 0.66 + 22 : 24) + 8;
  const legendW = 70;
  const W = Math.ceil(left + gridW + 24 + legendW);
  const H = Math.ceil(top + gridW + bottom);

  const parts: string[] = [];
  parts.push(
    `<svg class="heatmap" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(caption)}">`,
    `<title>${esc(caption)}</title>`,
  );
  parts.push(`<text x="${r(left + gridW / 2)}" y="16" text-anchor="middle" class="axis-title">predicted</text>`);
  parts.push(`<text transform="translate(14 ${r(top + gridW / 2)}) rotate(-90)" text-anchor="middle" class="axis-title">true</text>`);
  for (let i = 0; i < k; i++) {
    const rowSum = cm[i]!.reduce((a, b) => a + b, 0);
    const y = top + i * cell;
    parts.push(
      `<text x="${r(left - 8)}" y="${r(y + cell / 2)}" dy="0.32em" text-anchor="end" class="label"><title>${esc(labels[i]!)}</title>${esc(shown[i]!)}</text>`,
    );
    for (let j = 0; j < k; j++) {
      const c = cm[i]![j]!;
      const x = left + j * cell;
      const frac = rowSum > 0 ? c / rowSum : NaN;
      const fill = rowSum > 0 ? heatColour(frac) : '#eeeeee';
      const ink = textOn(fill);
      const pctText = rowSum > 0 ? `${(frac * 100).toFixed(1)}%` : '—';
      const tip = `true ${labels[i]!}, predicted ${labels[j]!}: ${c} of ${rowSum}${rowSum > 0 ? ` (${pctText})` : ''}`;
      parts.push(`<g><title>${esc(tip)}</title>`);
      parts.push(`<rect x="${r(x)}" y="${r(y)}" width="${cell}" height="${cell}" fill="${fill}" class="cell${i === j ? ' diag' : ''}"/>`);
      parts.push(`<text x="${r(x + cell / 2)}" y="${r(y + cell / 2 - 6)}" text-anchor="middle" style="fill:${ink}" class="count">${c}</text>`);
      parts.push(`<text x="${r(x + cell / 2)}" y="${r(y + cell / 2 + 11)}" text-anchor="middle" style="fill:${ink}" class="frac">${esc(pctText)}</text>`);
      parts.push('</g>');
    }
  }
  // Outline the diagonal on top of the grid.
  for (let i = 0; i < k; i++) {
    parts.push(`<rect x="${r(left + i * cell + 1)}" y="${r(top + i * cell + 1)}" width="${cell - 2}" height="${cell - 2}" class="diag-outline"/>`);
  }
  const labelY = top + gridW + 14;
  for (let j = 0; j < k; j++) {
    const cx = left + j * cell + cell / 2;
    if (rotate) {
      parts.push(
        `<text transform="translate(${r(cx + 4)} ${r(labelY - 4)}) rotate(-40)" text-anchor="end" class="label"><title>${esc(labels[j]!)}</title>${esc(shown[j]!)}</text>`,
      );
    } else {
      parts.push(`<text x="${r(cx)}" y="${r(labelY)}" text-anchor="middle" class="label"><title>${esc(labels[j]!)}</title>${esc(shown[j]!)}</text>`);
    }
  }
  // Colour scale: 0% .. 100% of the row.
  const lx = left + gridW + 24;
  const steps = 20;
  const sh = gridW / steps;
  for (let s = 0; s < steps; s++) {
    const t = 1 - (s + 0.5) / steps;
    parts.push(`<rect x="${r(lx)}" y="${r(top + s * sh)}" width="14" height="${r(sh + 0.6)}" fill="${heatColour(t)}"/>`);
  }
  parts.push(`<rect x="${r(lx)}" y="${top}" width="14" height="${gridW}" class="frame"/>`);
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    const y = top + (1 - t) * gridW;
    parts.push(`<text x="${r(lx + 20)}" y="${r(y)}" dy="0.32em" class="tick">${t * 100}%</text>`);
  }
  parts.push(`<text x="${r(lx)}" y="${r(top + gridW + 14)}" class="tick">of row</text>`);
  parts.push('</svg>');
  return parts.join('');
}

function checkMetrics(m: Metrics, where: string): void {
  const k = m?.labels?.length ?? 0;
  if (!m || k === 0 || !Array.isArray(m.confusion) || m.confusion.length !== k || m.confusion.some((row) => row.length !== k)) {
    throw new UserError('metrics must have a non-empty label list and a matching square confusion matrix', where);
  }
}

function metricCard(name: string, hint: string, value: number, fold?: { mean: number; std: number; count: number }): string {
  if (fold) {
    return (
      `<div class="card"><div class="card-name" title="${esc(hint)}">${esc(name)}</div>` +
      `<div class="card-value">${esc(pctPm(fold.mean, fold.std))}</div>` +
      `<div class="card-sub">mean ± std over ${fold.count} folds · all predictions: ${esc(pct(value))}</div></div>`
    );
  }
  return (
    `<div class="card"><div class="card-name" title="${esc(hint)}">${esc(name)}</div>` +
    `<div class="card-value">${esc(pct(value))}</div><div class="card-sub">${esc(hint)}</div></div>`
  );
}

function meanStd(xs: number[]): { mean: number; std: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  return { mean, std: Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / xs.length) };
}

const CSS = `
:root { color-scheme: light; --ink: #1b1f24; --muted: #57606a; --line: #d0d7de; --bg: #ffffff; --soft: #f6f8fa; --accent: #0b5cad; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink); font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 1.7rem; margin: 0 0 12px; overflow-wrap: anywhere; }
h2 { font-size: 1.2rem; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 1rem; margin: 18px 0 6px; }
.banner { background: #fff4ce; border: 2px solid #9a6700; color: #4d3800; padding: 10px 14px; border-radius: 6px; margin: 0 0 18px; font-weight: 600; }
table { border-collapse: collapse; margin: 6px 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 5px 10px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.num, th.num { text-align: right; white-space: nowrap; }
table.info th { width: 12em; }
table.info td { overflow-wrap: anywhere; }
tr.summary td { background: var(--soft); font-weight: 600; }
.cards { display: flex; flex-wrap: wrap; gap: 14px; }
.card { flex: 1 1 220px; border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; background: var(--soft); }
.card-name { font-size: .85rem; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); font-weight: 600; }
.card-value { font-size: 1.9rem; font-weight: 700; font-variant-numeric: tabular-nums; }
.card-sub { font-size: .85rem; color: var(--muted); }
.note { color: var(--muted); font-size: .9rem; margin: 4px 0; }
.figure { overflow-x: auto; }
svg { max-width: 100%; height: auto; font-family: inherit; }
svg text { font-size: 12px; fill: var(--ink); }
svg .tick { font-size: 11px; fill: var(--muted); }
svg .axis-title { font-size: 12px; font-weight: 600; fill: var(--muted); }
svg .legend { font-size: 12px; }
svg .muted { fill: var(--muted); }
svg .label { font-size: 12px; }
svg .count { font-size: 13px; font-weight: 700; }
svg .frac { font-size: 10.5px; }
svg .plot-bg { fill: #ffffff; }
svg .grid { stroke: #e6e8eb; stroke-width: 1; }
svg .frame { fill: none; stroke: #8c959f; stroke-width: 1; }
svg .cell { stroke: #ffffff; stroke-width: 1; }
svg .diag-outline { fill: none; stroke: #1b1f24; stroke-width: 1.2; stroke-dasharray: 3 2; }
details { margin: 8px 0; }
summary { cursor: pointer; font-weight: 600; }
footer { margin-top: 40px; color: var(--muted); font-size: .85rem; }
@media print { .banner { -webkit-print-color-adjust: exact; print-color-adjust: exact; } }
`;

/** Render the whole report as one self-contained HTML document. */
export function renderReport(data: ReportData): string {
  checkMetrics(data.metrics, 'report metrics');
  const folds = data.folds ?? [];
  folds.forEach((f) => checkMetrics(f.metrics, `report fold ${f.name}`));
  const m = data.metrics;
  const out: string[] = [];
  out.push('<!DOCTYPE html>', '<html lang="en">', '<head>', '<meta charset="utf-8">');
  out.push('<meta name="viewport" content="width=device-width, initial-scale=1">');
  out.push(`<title>${esc(data.title)}</title>`);
  out.push(`<style>${CSS}</style>`, '</head>', '<body>', '<main>');
  if (data.synthetic) {
    out.push(
      '<div class="banner" role="note">Synthetic data — these results come from generated audio, not a real emotion corpus, ' +
        'and say nothing about real-world emotion recognition quality.</div>',
    );
  }
  out.push(`<h1>${esc(data.title)}</h1>`);

  // Run information.
  out.push('<h2>Run</h2>');
  const info = Object.entries(data.info ?? {});
  if (info.length === 0) out.push('<p class="note">No run information.</p>');
  else {
    out.push('<table class="info"><tbody>');
    for (const [k, v] of info) out.push(`<tr><th scope="row">${esc(k)}</th><td>${esc(String(v))}</td></tr>`);
    out.push('</tbody></table>');
  }

  // Headline metrics.
  out.push('<h2>Results</h2>');
  const fs = folds.length > 0 ? { wa: meanStd(folds.map((f) => f.metrics.wa)), ua: meanStd(folds.map((f) => f.metrics.ua)), f1: meanStd(folds.map((f) => f.metrics.macro_f1)) } : undefined;
  out.push('<div class="cards">');
  out.push(metricCard('WA', 'weighted accuracy (accuracy)', m.wa, fs && { ...fs.wa, count: folds.length }));
  out.push(metricCard('UA', 'unweighted accuracy (mean recall over classes present in truth)', m.ua, fs && { ...fs.ua, count: folds.length }));
  out.push(metricCard('Macro-F1', 'mean F1 over classes present in truth or predictions', m.macro_f1, fs && { ...fs.f1, count: folds.length }));
  out.push('</div>');
  out.push(
    `<p class="note">${m.n} test utterances, ${m.labels.length} classes. UA = mean per-class recall over classes present in the truth; ` +
      'macro-F1 = mean F1 over classes present in truth or predictions (zero_division = 0)' +
      (fs ? '; ± is the population standard deviation over folds.' : '.') +
      '</p>',
  );

  // Per-fold table.
  if (folds.length > 0) {
    out.push('<h2>Folds</h2>');
    out.push('<table class="folds"><thead><tr><th>Fold</th><th class="num">n</th><th class="num">WA</th><th class="num">UA</th><th class="num">Macro-F1</th></tr></thead><tbody>');
    for (const f of folds) {
      const fm = f.metrics;
      out.push(`<tr><td>${esc(f.name)}</td><td class="num">${fm.n}</td><td class="num">${pct(fm.wa)}</td><td class="num">${pct(fm.ua)}</td><td class="num">${pct(fm.macro_f1)}</td></tr>`);
    }
    out.push(
      `<tr class="summary"><td>mean ± std</td><td class="num"></td><td class="num">${esc(pctPm(fs!.wa.mean, fs!.wa.std))}</td>` +
        `<td class="num">${esc(pctPm(fs!.ua.mean, fs!.ua.std))}</td><td class="num">${esc(pctPm(fs!.f1.mean, fs!.f1.std))}</td></tr>`,
    );
    out.push(`<tr class="summary"><td>all predictions</td><td class="num">${m.n}</td><td class="num">${pct(m.wa)}</td><td class="num">${pct(m.ua)}</td><td class="num">${pct(m.macro_f1)}</td></tr>`);
    out.push('</tbody></table>');
  }

  // Per-class table.
  out.push('<h2>Per class</h2>');
  out.push('<table class="per-class"><thead><tr><th>Class</th><th class="num">Precision</th><th class="num">Recall</th><th class="num">F1</th><th class="num">Support</th></tr></thead><tbody>');
  for (const l of m.labels) {
    const c = m.per_class[l];
    if (!c) continue;
    out.push(`<tr><td>${esc(l)}</td><td class="num">${pct(c.precision)}</td><td class="num">${pct(c.recall)}</td><td class="num">${pct(c.f1)}</td><td class="num">${c.support}</td></tr>`);
  }
  out.push('</tbody></table>');

  // Confusion matrices.
  out.push('<h2>Confusion matrix</h2>');
  out.push('<p class="note">Rows: true class; columns: predicted class. Each cell shows the count and the percentage of its row (the recall on the diagonal, outlined).</p>');
  out.push(`<div class="figure">${confusionHeatmap(m, folds.length > 0 ? 'Confusion matrix, all predictions' : 'Confusion matrix')}</div>`);
  for (const f of folds) {
    out.push(`<details><summary>${esc(f.name)}: confusion matrix</summary><div class="figure">${confusionHeatmap(f.metrics, `Confusion matrix, ${f.name}`)}</div></details>`);
  }

  // Training curves.
  const curves = data.curves ?? [];
  if (curves.length > 0) {
    out.push('<h2>Training curves</h2>');
    const kinds: string[] = [];
    for (const c of curves) if (!kinds.includes(c.kind)) kinds.push(c.kind);
    const order = ['train_loss', 'valid_loss', 'valid_ua'];
    kinds.sort((a, b) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99));
    for (const kind of kinds) {
      const meta = KIND_TITLES[kind] ?? { title: kind, y: 'value', x: 'step' };
      const series = curves.filter((c) => c.kind === kind);
      const total = series.reduce((a, s) => a + s.points.length, 0);
      out.push(`<h3>${esc(meta.title)}</h3>`);
      out.push(`<div class="figure">${lineChart(meta.title, meta.x, meta.y, series, kind === 'valid_ua')}</div>`);
      const long = series.some((s) => s.points.length > MAX_POINTS_PER_SERIES);
      const nonFinite = series.reduce((a, s) => a + s.points.filter((p) => !Number.isFinite(p.step) || !Number.isFinite(p.value)).length, 0);
      out.push(
        `<p class="note">${plural(series.length, 'series', 'series')}, ${plural(total, 'point', 'points')}` +
          (nonFinite ? `; ${plural(nonFinite, 'non-finite value', 'non-finite values')} (NaN / ±Infinity) not drawn` : '') +
          (long ? `; series longer than ${MAX_POINTS_PER_SERIES} points are drawn as ${Math.floor(MAX_POINTS_PER_SERIES / 2)} bucket means (line) with each bucket's min..max range (shaded)` : '') +
          '.</p>',
      );
    }
  }

  out.push('<footer>Generated by emosllm. This file is self-contained and works offline.</footer>');
  out.push('</main>', '</body>', '</html>', '');
  return out.join('\n');
}

/** Render the report and write it atomically to `file`. */
export function writeReport(file: string, data: ReportData): void {
  writeFileAtomic(file, renderReport(data));
}

/** Report curves from a run's history. */
export function historyCurves(history: Array<Record<string, number>>, name: string): Curve[] {
  const pts = (k: string) => history.filter((h) => h[k] !== undefined).map((h) => ({ step: h.step, value: h[k] }));
  const curves: Curve[] = [{ name, kind: 'train_loss', points: pts('loss') }];
  const vu = pts('valid_ua');
  if (vu.length) curves.push({ name, kind: 'valid_ua', points: vu }, { name, kind: 'valid_loss', points: pts('valid_loss') });
  return curves;
}
