import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';

/** Write a file atomically: write a temp file beside it, fsync, then rename over the target. */
export function writeFileAtomic(file: string, data: string | Uint8Array | readonly Uint8Array[]): void {
  const dir = path.dirname(file);
  fs.mkdirSync(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`);
  const fd = fs.openSync(tmp, 'w');
  try {
    const parts = typeof data === 'string' || data instanceof Uint8Array ? [data] : data;
    for (const p of parts) {
      if (typeof p === 'string') fs.writeSync(fd, p);
      else {
        let off = 0;
        while (off < p.byteLength) off += fs.writeSync(fd, p, off, Math.min(p.byteLength - off, 1 << 30));
      }
    }
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
}
