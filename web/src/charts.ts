/** Plain SVG charts: the aggregate probabilities as bars, the windows as a timeline. */
import type { Timeline } from '../../src/audio/segments.ts';

const SVG = 'http://www.w3.org/2000/svg';

const KNOWN: Record<string, string> = {
  anger: '#d64545',
  angry: '#d64545',
  happiness: '#e8a317',
  happy: '#e8a317',
  joy: '#e8a317',
  neutral: '#8a8f98',
  sadness: '#3b74c4',
  sad: '#3b74c4',
  fear: '#7d4cbf',
  disgust: '#4c9a52',
  boredom: '#a0785a',
  surprise: '#1aa3a3',
  calm: '#5aa0a0',
  contempt: '#9a6d2f',
};
const PALETTE = ['#d64545', '#e8a317', '#3b74c4', '#4c9a52', '#7d4cbf', '#1aa3a3', '#a0785a', '#c2508f', '#8a8f98', '#5f6bd1'];

/** A stable colour per label (well-known emotion names get their usual colours). */
export function labelColor(label: string, index: number): string {
  return KNOWN[label.toLowerCase()] ?? PALETTE[index % PALETTE.length]!;
}

function el<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>, text?: string): SVGElementTagNameMap[K] {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

export const pct = (p: number): string => `${(100 * p).toFixed(1)}%`;

/** Horizontal bars, one per label, longest = most probable. */
export function barChart(labels: string[], values: number[], width = 560): SVGSVGElement {
  const row = 30;
  const labelW = 120;
  const valueW = 64;
  const barMax = width - labelW - valueW - 8;
  const best = values.indexOf(Math.max(...values));
  const svg = el('svg', { width, height: labels.length * row + 8, viewBox: `0 0 ${width} ${labels.length * row + 8}`, role: 'img', class: 'bars' });
  svg.appendChild(el('title', {}, 'Mean probability over all windows'));
  labels.forEach((label, i) => {
    const y = 4 + i * row;
    const v = values[i]!;
    const g = el('g', { 'data-label': label, 'data-p': v });
    g.appendChild(el('text', { x: labelW - 10, y: y + row / 2 + 5, 'text-anchor': 'end', class: i === best ? 'best' : '' }, label));
    g.appendChild(el('rect', { x: labelW, y: y + 5, width: barMax, height: row - 10, rx: 4, class: 'track' }));
    g.appendChild(el('rect', { x: labelW, y: y + 5, width: Math.max(1, v * barMax), height: row - 10, rx: 4, fill: labelColor(label, i) }));
    g.appendChild(el('text', { x: labelW + barMax + 8, y: y + row / 2 + 5, class: 'value' }, pct(v)));
    svg.appendChild(g);
  });
  return svg;
}

/** Time axis with one lane per segment (windows overlap when hop < window), coloured by the segment's label. */
export function timelineChart(r: Timeline, width = 760): SVGSVGElement {
  const left = 40;
  const right = 12;
  const lane = 22;
  const top = 8;
  const axisH = 26;
  const n = r.segments.length;
  const height = top + n * lane + axisH;
  const span = Math.max(r.seconds, 1e-6);
  const x = (t: number) => left + ((width - left - right) * t) / span;
  const svg = el('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', class: 'timeline' });
  svg.appendChild(el('title', {}, 'Segments over time, coloured by their most probable label'));
  // axis
  const axisY = top + n * lane + 4;
  svg.appendChild(el('line', { x1: left, x2: width - right, y1: axisY, y2: axisY, class: 'axis' }));
  const step = span <= 10 ? 1 : span <= 30 ? 5 : span <= 120 ? 10 : 30;
  for (let t = 0; t <= span + 1e-9; t += step) {
    svg.appendChild(el('line', { x1: x(t), x2: x(t), y1: axisY, y2: axisY + 5, class: 'axis' }));
    svg.appendChild(el('text', { x: x(t), y: axisY + 18, 'text-anchor': 'middle', class: 'tick' }, `${t}s`));
  }
  for (const [index, s] of r.segments.entries()) {
    const li = r.labels.indexOf(s.label);
    const p = s.probabilities[li]!;
    const y = top + index * lane;
    const g = el('g', { class: 'segment', 'data-index': index });
    g.appendChild(el('title', {}, `${s.start.toFixed(2)}–${s.end.toFixed(2)} s: ${s.label} ${pct(p)}`));
    g.appendChild(el('text', { x: left - 6, y: y + lane / 2 + 4, 'text-anchor': 'end', class: 'tick' }, `#${index + 1}`));
    g.appendChild(
      el('rect', {
        x: x(s.start),
        y: y + 2,
        width: Math.max(2, x(s.end) - x(s.start)),
        height: lane - 4,
        rx: 3,
        fill: labelColor(s.label, li),
        'fill-opacity': (0.55 + 0.45 * p).toFixed(2),
      }),
    );
    g.appendChild(el('text', { x: x(s.start) + 6, y: y + lane / 2 + 4, class: 'seglabel' }, `${s.label} ${pct(p)}`));
    svg.appendChild(g);
  }
  return svg;
}
