#!/usr/bin/env node
// Makes sure the Debian packages the tests and the demo need are present (sox, ffmpeg, espeak-ng, chromium, redis-server, openssl).
// Installs the missing ones with apt-get when running as root; otherwise says what to install and exits 1.
// Usage: node scripts/system-deps.mjs [--optional] pkg[:command] ...
import { spawnSync } from 'node:child_process';

const args = process.argv.slice(2);
const optional = args.includes('--optional');
const wanted = args.filter((a) => !a.startsWith('--')).map((spec) => {
  const [pkg, cmd] = spec.split(':');
  return { pkg, cmd: cmd ?? pkg };
});

const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const missing = wanted.filter((w) => !has(w.cmd));
if (missing.length === 0) process.exit(0);

const names = missing.map((m) => m.pkg);
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
if (!isRoot || !has('apt-get')) {
  console.error(`missing system packages: ${names.join(' ')} (install them with: sudo apt-get install -y ${names.join(' ')})`);
  process.exit(optional ? 0 : 1);
}
console.error(`installing system packages: ${names.join(' ')}`);
const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
const run = (argv) => spawnSync(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'inherit'], env }).status === 0;
let ok = run(['apt-get', 'install', '-y', '-q', '--no-install-recommends', ...names]);
if (!ok) ok = run(['apt-get', 'update', '-q']) && run(['apt-get', 'install', '-y', '-q', '--no-install-recommends', ...names]);
const still = missing.filter((w) => !has(w.cmd)).map((m) => m.pkg);
if (still.length) {
  console.error(`could not install: ${still.join(' ')}`);
  process.exit(optional ? 0 : 1);
}
