import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { computeMetrics, type Metrics } from './metrics.ts';
import { MAX_POINTS_PER_SERIES, downsample, escapeHtml, renderReport, writeReport, type Curve, type ReportData } from './report.ts';
import { UserError } from '../util/errors.ts';

const EVIL = `<img src=x onerror="alert('1')">&co`;
const labels = ['neu', 'hap', EVIL];
// Same shape as the hand-computed 3-class case in metrics.test.ts: WA 4/6, UA 13/18, macro-F1 59/90.
const fold1 = computeMetrics(labels, ['neu', 'neu', 'neu', 'hap', 'hap', EVIL], ['neu', 'neu', 'hap', 'hap', EVIL, EVIL]);
const fold2 = computeMetrics(labels, ['neu', 'hap', EVIL], ['neu', 'hap', EVIL]);
const overall = computeMetrics(
  labels,
  ['neu', 'neu', 'neu', 'hap', 'hap', EVIL, 'neu', 'hap', EVIL],
  ['neu', 'neu', 'hap', 'hap', EVIL, EVIL, 'neu', 'hap', EVIL],
);

function curve(name: string, kind: Curve['kind'], n: number, f: (i: number) => number, every = 1): Curve {
  return { name, kind, points: Array.from({ length: n }, (_, i) => ({ step: (i + 1) * every, value: f(i) })) };
}

const data: ReportData = {
  title: 'Run <script>alert("t")</script>',
  info: { corpus: 'IEMOCAP & friends', encoder: 'wavlm "base+"', 'seed <s>': "1, 2 'x'", checkpoint: '/tmp/a<b>.safetensors' },
  metrics: overall,
  folds: [
    { name: 'fold <1>', metrics: fold1 },
    { name: 'fold 2', metrics: fold2 },
  ],
  curves: [
    curve('fold <1>', 'train_loss', 3000, (i) => 2 * Math.exp(-i / 500) + 0.1 * Math.sin(i)),
    curve('fold 2', 'train_loss', 3000, (i) => 2 * Math.exp(-i / 400)),
    curve('fold <1>', 'valid_loss', 12, (i) => 1.5 - i * 0.05, 250),
    curve('fold <1>', 'valid_ua', 12, (i) => 0.4 + i * 0.02, 250),
    curve('fold 2', 'valid_ua', 12, (i) => 0.45 + i * 0.02, 250),
  ],
  synthetic: true,
};

const html = renderReport(data);

describe('renderReport', () => {
  it('is a complete HTML document', () => {
    expect(html.startsWith('<!DOCTYPE html>')).toBe(true);
    expect(html).toContain('<meta charset="utf-8">');
    expect(html.trimEnd().endsWith('</html>')).toBe(true);
    expect(html.match(/<svg/g)!.length).toBe(html.match(/<\/svg>/g)!.length);
  });

  it('references nothing outside the file', () => {
    expect(html).not.toMatch(/\b(?:src|href|xlink:href|action|poster|data)\s*=\s*["']?\s*(?:[a-z]+:)?\/\//i);
    expect(html).not.toMatch(/https?:\/\//i);
    expect(html).not.toMatch(/url\s*\(/i);
    expect(html).not.toMatch(/@import|@font-face/i);
    expect(html).not.toMatch(/<(?:script|link|img|iframe|object|embed)\b/i);
  });

  it('escapes every piece of caller text', () => {
    expect(html).not.toContain('<script>alert');
    expect(html).not.toContain('<img');
    expect(html).not.toContain('onerror="');
    expect(html).toContain(escapeHtml(EVIL));
    expect(escapeHtml(EVIL)).toBe('&lt;img src=x onerror=&quot;alert(&#39;1&#39;)&quot;&gt;&amp;co');
    expect(html).toContain('<title>Run &lt;script&gt;alert(&quot;t&quot;)&lt;/script&gt;</title>');
    expect(html).toContain('fold &lt;1&gt;');
    expect(html).toContain('IEMOCAP &amp; friends');
    expect(html).toContain('seed &lt;s&gt;');
    expect(html).toContain('1, 2 &#39;x&#39;');
    expect(html).toContain('wavlm &quot;base+&quot;');
    expect(html).not.toContain('fold <1>');
    expect(html).not.toContain('a<b>');
  });

  it('has one <svg> per chart: overall + per-fold confusion matrices and one per curve kind', () => {
    expect(html.match(/<svg class="heatmap"/g)!.length).toBe(3);
    expect(html.match(/<svg class="chart"/g)!.length).toBe(3);
    expect(html.match(/<svg/g)!.length).toBe(6);
    for (const t of ['Training loss', 'Validation loss', 'Validation UA']) expect(html).toContain(`<h3>${t}</h3>`);
  });

  it('shows the numbers', () => {
    // overall: confusion [[3,1,0],[0,2,1],[0,0,2]] -> WA 7/9 = 77.78%
    expect(html).toContain('77.78%');
    // fold 1: WA 66.67%, UA 72.22%, macro-F1 65.56%; fold 2: all 100.00%
    expect(html).toContain('66.67%');
    expect(html).toContain('72.22%');
    expect(html).toContain('65.56%');
    expect(html).toContain('100.00%');
    // mean ± population std of WA over the two folds: 83.33 ± 16.67
    expect(html).toContain('83.33 ± 16.67%');
    // per-class and confusion cells: precision of neu in overall = 3/3; cell counts with row percentages
    expect(html).toContain('75.0%'); // neu row: 3 of 4
    expect(html).toContain('66.7%'); // hap row: 2 of 3
    expect(html).toMatch(/>3<\/text>/);
    // run info
    expect(html).toContain('<th scope="row">corpus</th>');
  });

  it('shows the synthetic banner only for synthetic data', () => {
    expect(html).toContain('class="banner"');
    expect(html).toMatch(/Synthetic data/);
    const real = renderReport({ ...data, synthetic: false });
    expect(real).not.toContain('class="banner"');
    expect(real).not.toMatch(/Synthetic data/);
  });

  it('works without folds and curves', () => {
    const plain = renderReport({ title: 't', info: {}, metrics: fold1 });
    expect(plain.match(/<svg/g)!.length).toBe(1);
    expect(plain).not.toContain('±');
    expect(plain).not.toContain('Training curves');
    expect(plain).toContain('66.67%');
  });

  it('draws thousands of points for ten series within a bounded size', () => {
    const many: Curve[] = Array.from({ length: 10 }, (_, s) => curve(`s${s}`, 'train_loss', 20_000, (i) => 1 / (1 + i / 1000) + s * 0.01));
    const out = renderReport({ title: 't', info: {}, metrics: fold1, curves: many });
    expect(out.match(/<svg class="chart"/g)!.length).toBe(1);
    for (let s = 0; s < 10; s++) expect(out).toContain(`>s${s}</text>`);
    expect(out.length).toBeLessThan(400_000);
    expect(out).toContain('stroke-dasharray'); // series 8+ are told apart by dashes
  });

  it('copes with NaN, empty and single-point series', () => {
    const out = renderReport({
      title: 't',
      info: {},
      metrics: fold1,
      curves: [
        { name: 'nan', kind: 'train_loss', points: [{ step: 1, value: 1 }, { step: 2, value: NaN }, { step: 3, value: Infinity }, { step: 4, value: 0.5 }] },
        { name: 'empty', kind: 'valid_loss', points: [] },
        { name: 'one', kind: 'valid_ua', points: [{ step: 10, value: 0.5 }] },
      ],
    });
    expect(out).not.toMatch(/="[^"]*(?:NaN|Infinity)/);
    expect(out).toContain('2 non-finite values');
    expect(out).toContain('no finite data points');
    expect(out).toContain('<circle');
  });

  it('rejects malformed metrics', () => {
    const bad = { ...fold1, confusion: [[1]] } as Metrics;
    expect(() => renderReport({ title: 't', info: {}, metrics: bad })).toThrow(UserError);
  });
});

describe('downsample', () => {
  it('leaves short series alone', () => {
    const pts = Array.from({ length: 100 }, (_, i) => ({ step: i, value: i }));
    expect(downsample(pts)).toEqual({ line: pts });
  });
  it('reduces long series to bucket means with a min..max band that keeps spikes', () => {
    const pts = Array.from({ length: 10_000 }, (_, i) => ({ step: i, value: i === 4321 ? 100 : i % 2 }));
    const d = downsample(pts);
    expect(d.line.length).toBe(MAX_POINTS_PER_SERIES / 2);
    expect(d.band!.length).toBe(d.line.length);
    expect(Math.max(...d.band!.map((b) => b.hi))).toBe(100);
    expect(Math.min(...d.band!.map((b) => b.lo))).toBe(0);
    // means of alternating 0/1 are ~0.5, except the bucket with the spike
    expect(d.line.filter((p) => Math.abs(p.value - 0.5) < 1e-9).length).toBe(d.line.length - 1);
    expect(d.line[0]!.step).toBeCloseTo(19.5, 9); // first bucket holds steps 0..39
    expect(d.line.at(-1)!.step).toBeCloseTo(9979.5, 9);
  });
});

describe('writeReport', () => {
  it('writes the rendered report atomically', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-report-'));
    try {
      const file = path.join(dir, 'sub', 'report.html');
      writeReport(file, data);
      expect(fs.readFileSync(file, 'utf8')).toBe(html);
      expect(fs.readdirSync(path.dirname(file))).toEqual(['report.html']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
