#!/usr/bin/env node
// CLI entry: runs the compiled CLI in dist/ (built by `npm ci` and `npm pack` through the prepare/prepack
// scripts). In a checkout whose src/ changed after the last build, or was never built, it runs the TypeScript
// sources through tsx instead, so an edit is never shadowed by a stale dist/ (`npm run build` restores the fast
// path).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = new URL('../', import.meta.url);
const BUILT_MAIN = new URL('dist/cli/main.js', ROOT);
const SOURCES = fileURLToPath(new URL('src/', ROOT));

/** Newest modification time of the compiled sources under `dir` (tests are not compiled). */
function newestSourceMtime(dir) {
  let newest = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile() || !/\.(ts|mjs)$/.test(e.name) || e.name.endsWith('.test.ts')) continue;
    newest = Math.max(newest, fs.statSync(path.join(e.parentPath ?? e.path, e.name)).mtimeMs);
  }
  return newest;
}

const builtAt = fs.statSync(BUILT_MAIN, { throwIfNoEntry: false })?.mtimeMs;
const stale = builtAt === undefined || (fs.existsSync(SOURCES) && newestSourceMtime(SOURCES) > builtAt);
let main;
if (stale) {
  const { register } = await import('tsx/esm/api');
  register();
  ({ main } = await import(new URL('src/cli/main.ts', ROOT).href));
} else {
  ({ main } = await import(BUILT_MAIN.href));
}
await main(process.argv);
