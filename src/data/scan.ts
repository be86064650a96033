/** Shared helpers for corpus loaders: bounded directory walks and invalid-clip reporting. */
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../util/errors.ts';

export const AUDIO_EXTENSIONS = ['.wav', '.flac', '.mp3', '.ogg', '.opus', '.m4a', '.mp4', '.webm'];
/** When one clip exists in several formats, the first listed wins (lossless first). */
export const EXTENSION_PREFERENCE = ['.wav', '.flac', '.ogg', '.opus', '.mp3', '.m4a', '.mp4', '.webm'];

export function isAudioFile(name: string): boolean {
  return AUDIO_EXTENSIONS.includes(path.extname(name).toLowerCase());
}

export interface WalkOptions {
  maxDepth?: number;
  /** Stop with an error past this many files (a mistaken `/` must not walk the whole disk). */
  maxFiles?: number;
  filter?: (name: string) => boolean;
}

/** Files under `dir` (absolute paths, sorted), following symlinks once, skipping hidden entries. */
export function walkFiles(dir: string, opts: WalkOptions = {}): string[] {
  const maxDepth = opts.maxDepth ?? 6;
  const maxFiles = opts.maxFiles ?? 1_000_000;
  const filter = opts.filter ?? (() => true);
  const out: string[] = [];
  const seen = new Set<string>();
  const visit = (d: string, depth: number) => {
    let real: string;
    try {
      real = fs.realpathSync(d);
    } catch {
      return;
    }
    if (seen.has(real)) return;
    seen.add(real);
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch (e) {
      throw new UserError(`cannot read folder: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, d);
    }
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      const p = path.join(d, e.name);
      let isDir = e.isDirectory();
      let isFile = e.isFile();
      if (e.isSymbolicLink()) {
        try {
          const st = fs.statSync(p);
          isDir = st.isDirectory();
          isFile = st.isFile();
        } catch {
          continue; // dangling link
        }
      }
      if (isDir && depth < maxDepth) visit(p, depth + 1);
      else if (isFile && filter(e.name)) {
        out.push(p);
        if (out.length > maxFiles) throw new UserError(`more than ${maxFiles} files; is this really a corpus folder?`, dir);
      }
    }
  };
  visit(dir, 0);
  return out.sort();
}

/** Collects or throws invalid-clip reports, depending on `onInvalid`. */
export class Reporter {
  readonly warnings: string[] = [];
  readonly notes: string[] = [];
  constructor(private readonly mode: 'error' | 'skip' = 'error') {}

  /** A clip that does not parse: throws a UserError naming it, or records a warning and returns. */
  invalid(where: string, message: string): void {
    if (this.mode === 'error') throw new UserError(`${message} (pass --skip-invalid / onInvalid: 'skip' to skip such clips)`, where);
    this.warnings.push(`${where}: ${message}; skipped`);
  }

  warn(line: string): void {
    this.warnings.push(line);
  }

  note(line: string): void {
    this.notes.push(line);
  }
}

/** Keep one file per clip id, preferring lossless formats; reports true duplicates (same id, same format). */
export function dedupeById<T extends { id: string; path: string }>(items: T[], rep: Reporter): T[] {
  const byId = new Map<string, T>();
  const rank = (p: string) => {
    const r = EXTENSION_PREFERENCE.indexOf(path.extname(p).toLowerCase());
    return r < 0 ? 99 : r;
  };
  let dups = 0;
  let example = '';
  for (const it of items) {
    const prev = byId.get(it.id);
    if (!prev) {
      byId.set(it.id, it);
      continue;
    }
    if (rank(it.path) === rank(prev.path)) {
      dups++;
      example ||= `${prev.path} and ${it.path}`;
    }
    if (rank(it.path) < rank(prev.path)) byId.set(it.id, it);
  }
  if (dups) rep.warn(`${dups} clip(s) appear twice in the same format (e.g. ${example}); kept one of each`);
  return [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

export function stem(file: string): string {
  return path.basename(file, path.extname(file));
}
