import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { UserError } from './errors.ts';

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

/** A JSON object read from a file; a missing, unreadable or malformed file is a one-line UserError naming it. */
export function readJsonObject(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserError(code === 'ENOENT' ? 'file not found' : `cannot read: ${code}`, file);
  }
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    throw new UserError(`invalid JSON: ${(e as Error).message.split('\n')[0]}`, file);
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new UserError('expected a JSON object', file);
  return j as Record<string, unknown>;
}
