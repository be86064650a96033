/**
 * Progress on stderr: a cli-progress bar on a terminal, and plain lines (at most ~20 per task) otherwise, so
 * logs of CI runs and redirected output stay readable.
 */
import cliProgress from 'cli-progress';

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
