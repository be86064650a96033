/**
 * Progress on stderr: a cli-progress bar on a terminal, and plain lines (at most ~20 per task) otherwise, so
 * logs of CI runs and redirected output stay readable.
 */
import cliProgress from 'cli-progress';
import type { DownloadProgress } from '../io/hub.ts';

export interface Progress {
  update(done: number, total: number, fields?: Record<string, string>): void;
  stop(): void;
}

export function progress(label: string, opts: { format?: string } = {}): Progress {
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        stream: process.stderr,
        format: opts.format ?? `${label} |{bar}| {value}/{total} {info} | ETA {eta_formatted}`,
        hideCursor: true,
        clearOnComplete: false,
        etaBuffer: 20,
      },
      cliProgress.Presets.shades_classic,
    );
    let started = false;
    return {
      update(done, total, fields = {}) {
        const info = Object.entries(fields).map(([k, v]) => `${k} ${v}`).join(' | ');
        if (!started) {
          bar.start(total, done, { info });
          started = true;
        } else bar.update(done, { info });
        if (bar.getTotal() !== total) bar.setTotal(total);
      },
      stop() {
        if (started) bar.stop();
      },
    };
  }
  let lastShown = -1;
  const t0 = performance.now();
  return {
    update(done, total, fields = {}) {
      const every = Math.max(1, Math.ceil(total / 20));
      if (done !== total && done - lastShown < every) return;
      lastShown = done;
      const s = (performance.now() - t0) / 1000;
      const eta = done > 0 ? ((total - done) * s) / done : NaN;
      const info = Object.entries(fields).map(([k, v]) => `${k} ${v}`).join(', ');
      console.error(`${label}: ${done}/${total}${info ? `, ${info}` : ''}${Number.isFinite(eta) && done < total ? `, ETA ${Math.round(eta)} s` : ''}`);
    },
    stop() {},
  };
}

const MB = 1e6;

/**
 * Download progress for Hub files: a bar per file with megabytes and rate on a terminal, otherwise a line per
 * file at its end (and about every 10% of a large one).
 */
export function downloadProgress(): { update(p: DownloadProgress): void; stop(): void } {
  let file = '';
  let bar: cliProgress.SingleBar | undefined;
  let t0 = 0;
  let from = 0;
  let shown = 0;
  const rate = (done: number) => ((done - from) / MB / Math.max((performance.now() - t0) / 1000, 1e-3)).toFixed(1);
  const end = () => {
    bar?.stop();
    bar = undefined;
  };
  return {
    update(p) {
      const key = `${p.repo}/${p.file}`;
      if (key !== file) {
        end();
        file = key;
        t0 = performance.now();
        from = p.done;
        shown = p.done;
        if (process.stderr.isTTY) {
          bar = new cliProgress.SingleBar(
            {
              stream: process.stderr,
              format: `download ${p.file} |{bar}| {mb}/{totalMb} MB | {rate} MB/s | ETA {eta_formatted}`,
              hideCursor: true,
              etaBuffer: 50,
            },
            cliProgress.Presets.shades_classic,
          );
          bar.start(p.total, p.done, { mb: (p.done / MB).toFixed(1), totalMb: (p.total / MB).toFixed(1), rate: '0.0' });
        }
      }
      if (bar) bar.update(p.done, { mb: (p.done / MB).toFixed(1), totalMb: (p.total / MB).toFixed(1), rate: rate(p.done) });
      else if (p.done === p.total || p.done - shown >= Math.max(p.total / 10, 50 * MB)) {
        shown = p.done;
        console.error(`download ${p.repo} ${p.file}: ${(p.done / MB).toFixed(1)}/${(p.total / MB).toFixed(1)} MB, ${rate(p.done)} MB/s`);
      }
    },
    stop: end,
  };
}
