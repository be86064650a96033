/** Helpers that run the real sox / ffmpeg binaries for tests (installed by `npm test`'s pretest step). */
import { spawnSync } from 'node:child_process';

export function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) throw new Error(`${cmd} failed to start: ${r.error.message} (install it: node scripts/system-deps.mjs sox ffmpeg espeak-ng)`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  return r.stdout;
}

export const sox = (...args: string[]) => run('sox', args);
export const ffmpeg = (...args: string[]) => run('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y', ...args]);

/** Pearson correlation of two equally long (or truncated to the shorter) signals. */
export function correlation(a: ArrayLike<number>, b: ArrayLike<number>, offset = 0): number {
  const n = Math.min(a.length, b.length - offset);
  let ma = 0, mb = 0;
  for (let i = 0; i < n; i++) { ma += a[i]!; mb += b[i + offset]!; }
  ma /= n; mb /= n;
  let sab = 0, saa = 0, sbb = 0;
  for (let i = 0; i < n; i++) {
    const x = a[i]! - ma, y = b[i + offset]! - mb;
    sab += x * y; saa += x * x; sbb += y * y;
  }
  return sab / Math.sqrt(saa * sbb);
}

/** Best correlation over small lags (lossy codecs may shift the signal by a few samples). */
export function bestCorrelation(a: ArrayLike<number>, b: ArrayLike<number>, maxLag: number): { r: number; lag: number } {
  let best = { r: -Infinity, lag: 0 };
  for (let lag = -maxLag; lag <= maxLag; lag++) {
    const r = lag >= 0 ? correlation(a, b, lag) : correlation(b, a, -lag);
    if (r > best.r) best = { r, lag };
  }
  return best;
}

/** SNR in dB of `test` against `ref`. */
export function snrDb(ref: ArrayLike<number>, test: ArrayLike<number>): number {
  const n = Math.min(ref.length, test.length);
  let s = 0, e = 0;
  for (let i = 0; i < n; i++) { s += ref[i]! ** 2; e += (ref[i]! - test[i]!) ** 2; }
  return 10 * Math.log10(s / e);
}
