/**
 * Test harness of the browser demo: build the page with Vite into a temp folder, serve it and an export
 * folder on 127.0.0.1 (random port, loopback only), and drive Debian's Chromium with playwright-core.
 *
 *   const demo = await startBrowserDemo({ modelDir });   // modelDir: any "emosllm-onnx/1" export folder
 *   const page = await demo.newPage();
 *   await page.goto(demo.pageUrl());                      // ?model=/models/demo/ (the export, served beside the page)
 *   ...
 *   await demo.close();
 *
 * No browser is downloaded: Chromium comes from Debian (scripts/system-deps.mjs installs it, as root).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type BrowserContext, type Page, chromium } from 'playwright-core';

const WEB_DIR = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(WEB_DIR, '..');
export const CHROMIUM = process.env.EMOSLLM_CHROMIUM ?? '/usr/bin/chromium';

/** Makes sure Chromium is installed (apt-get as root, via scripts/system-deps.mjs); throws a clear message if not. */
export function ensureChromium(): string {
  if (fs.existsSync(CHROMIUM)) return CHROMIUM;
  const r = spawnSync(process.execPath, [path.join(REPO_ROOT, 'scripts/system-deps.mjs'), 'chromium'], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0 || !fs.existsSync(CHROMIUM)) {
    throw new Error(`Chromium is missing (${CHROMIUM}); install the Debian package: apt-get install -y --no-install-recommends chromium`);
  }
  return CHROMIUM;
}

/** Builds web/ with Vite into `outDir` (the same config as `npm run web:build`). */
export async function buildPage(outDir: string): Promise<string> {
  const { build } = await import('vite');
  await build({
    configFile: path.join(WEB_DIR, 'vite.config.ts'),
    logLevel: 'warn',
    build: { outDir, emptyOutDir: true },
  });
  if (!fs.existsSync(path.join(outDir, 'index.html'))) throw new Error(`vite build wrote no index.html into ${outDir}`);
  return outDir;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.wav': 'audio/wav',
};

export interface StaticServer {
  origin: string;
  /** Every request served, as "METHOD /path status". */
  log: string[];
  close(): Promise<void>;
}

/** A minimal static server on 127.0.0.1 (random port): `mounts` maps URL prefixes ("/", "/models/demo/") to folders. */
export async function serveStatic(mounts: Record<string, string>): Promise<StaticServer> {
  const table = Object.entries(mounts)
    .map(([prefix, dir]) => [prefix.endsWith('/') ? prefix : `${prefix}/`, path.resolve(dir)] as const)
    .sort((a, b) => b[0].length - a[0].length);
  const log: string[] = [];
  const server = http.createServer((req, res) => {
    const done = (status: number, body?: string) => {
      log.push(`${req.method} ${req.url} ${status}`);
      if (body !== undefined) {
        res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8' });
        res.end(body);
      }
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return done(405, 'method not allowed');
    let pathname: string;
    try {
      pathname = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    } catch {
      return done(400, 'bad path');
    }
    const mount = table.find(([prefix]) => pathname.startsWith(prefix) || `${pathname}/` === prefix);
    if (!mount) return done(404, 'not found');
    let file = path.resolve(mount[1], `.${pathname.slice(mount[0].length - 1)}`);
    if (file !== mount[1] && !file.startsWith(mount[1] + path.sep)) return done(403, 'forbidden');
    if (fs.existsSync(file) && fs.statSync(file).isDirectory()) file = path.join(file, 'index.html');
    if (!fs.existsSync(file) || !fs.statSync(file).isFile()) return done(404, 'not found');
    const size = fs.statSync(file).size;
    res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'Content-Length': size, 'Cache-Control': 'no-store' });
    done(200);
    if (req.method === 'HEAD') return res.end();
    fs.createReadStream(file).pipe(res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    log,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface BrowserDemoOptions {
  /** An "emosllm-onnx/1" export folder (manifest.json + model.onnx [+ external data]); served at /models/demo/. */
  modelDir: string;
  /** Use this built page instead of building one (it is not deleted on close). */
  pageDir?: string;
  /** Extra Chromium flags (e.g. a fake microphone). */
  chromiumArgs?: string[];
}

export interface BrowserDemo {
  /** The built page (reusable as `pageDir` of another demo). */
  pageDir: string;
  server: StaticServer;
  context: BrowserContext;
  modelPath: string;
  /** The page URL with ?model= pointing at the served export, plus any extra query parameters. */
  pageUrl(query?: Record<string, string>): string;
  newPage(): Promise<Page>;
  close(): Promise<void>;
}

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export async function startBrowserDemo(opts: BrowserDemoOptions): Promise<BrowserDemo> {
  const executablePath = ensureChromium();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-web-'));
  const cleanup: Array<() => Promise<void> | void> = [() => fs.rmSync(tmp, { recursive: true, force: true })];
  const close = async () => {
    for (const f of cleanup.reverse()) await Promise.resolve(f()).catch(() => undefined);
  };
  try {
    const pageDir = opts.pageDir ?? (await buildPage(path.join(tmp, 'page')));
    const modelPath = '/models/demo/';
    const server = await serveStatic({ '/': pageDir, [modelPath]: opts.modelDir });
    cleanup.push(() => server.close());
    const context = await chromium.launchPersistentContext(path.join(tmp, 'profile'), {
      executablePath,
      headless: true,
      args: [...CHROMIUM_ARGS, ...(opts.chromiumArgs ?? [])],
      viewport: { width: 900, height: 900 },
    });
    cleanup.push(() => context.close());
    return {
      pageDir,
      server,
      context,
      modelPath,
      pageUrl: (query = {}) => `${server.origin}/?${new URLSearchParams({ model: modelPath, ...query })}`,
      newPage: () => context.newPage(),
      close,
    };
  } catch (e) {
    await close();
    throw e;
  }
}
