import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { UserError } from './errors.ts';

/**
 * Write a file atomically: write a temp file beside it, fsync, then rename over the target. `data` may be an
 * iterable of chunks (e.g. a generator), so a large file is streamed rather than held in memory.
 */
export function writeFileAtomic(file: string, data: string | Uint8Array | Iterable<Uint8Array>): void {
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

/** The one-line reason an open/stat failed (ENOENT, ELOOP, EACCES...), for a UserError naming the path. */
export function fsErrorText(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'file not found';
  if (code === 'ELOOP') return 'symlink loop (too many levels of symbolic links)';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EISDIR') return 'is a directory, not a file';
  if (code === 'ENOTDIR') return 'a path component is not a folder';
  return `cannot open: ${code ?? (e as Error).message.split('\n')[0]}`;
}

/**
 * Opens a file for reading, refusing anything but a regular file (a FIFO, a device, a socket). The open itself
 * is non-blocking: a plain open of a FIFO waits for a writer forever, so checking only afterwards would hang.
 */
export function openRegularFile(file: string): number {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    throw new UserError(fsErrorText(e), file);
  }
  if (!fs.fstatSync(fd).isFile()) {
    fs.closeSync(fd);
    throw new UserError('not a regular file', file);
  }
  return fd;
}

/** The contents of a regular file (see openRegularFile); every failure is a one-line UserError naming it. */
export function readRegularFile(file: string): Buffer;
export function readRegularFile(file: string, encoding: 'utf8'): string;
export function readRegularFile(file: string, encoding?: 'utf8'): Buffer | string {
  const fd = openRegularFile(file);
  try {
    return encoding ? fs.readFileSync(fd, encoding) : fs.readFileSync(fd);
  } catch (e) {
    throw new UserError(`cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message.split('\n')[0]}`, file);
  } finally {
    fs.closeSync(fd);
  }
}

/** A JSON object read from a file; a missing, unreadable or malformed file is a one-line UserError naming it. */
export function readJsonObject(file: string): Record<string, unknown> {
  const text = readRegularFile(file, 'utf8');
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    throw new UserError(`invalid JSON: ${(e as Error).message.split('\n')[0]}`, file);
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new UserError('expected a JSON object', file);
  return j as Record<string, unknown>;
}
