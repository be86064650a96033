/**
 * Vite config of the on-device browser demo (web/).
 *
 *   npm run web:build          static page in runs/web/ (serve it from any static server, any sub-path)
 *   npm run web:dev            dev server; EMOSLLM_WEB_MODELS=DIR serves DIR at /models/ (e.g. ?model=/models/demo/)
 *
 * onnxruntime-web's WebAssembly binary is served by the page itself (ort/ beside index.html, copied from
 * node_modules/onnxruntime-web/dist): nothing is fetched from a CDN.
 */
import fs from 'node:fs';
import type { ServerResponse } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Plugin, defineConfig } from 'vite';

const WEB_DIR = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(WEB_DIR, '..');
const ORT_DIST = path.join(REPO_ROOT, 'node_modules/onnxruntime-web/dist');
/** The binary of the default onnxruntime-web build (WASM + WebGPU); its JS glue is bundled into the page. */
export const ORT_WASM_FILES = ['ort-wasm-simd-threaded.jsep.wasm'];

const TYPES: Record<string, string> = {
  '.wasm': 'application/wasm',
  '.mjs': 'text/javascript',
  '.json': 'application/json',
  '.wav': 'audio/wav',
};

/** Serves files of `dir` under the middleware's mount point (dev server only). */
function serveDir(dir: string) {
  return (req: { url?: string }, res: ServerResponse, next: () => void) => {
    const rel = decodeURIComponent((req.url ?? '/').split('?')[0]!).replace(/^\/+/, '');
    const file = path.resolve(dir, rel);
    if (!file.startsWith(path.resolve(dir) + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) return next();
    res.setHeader('Content-Type', TYPES[path.extname(file)] ?? 'application/octet-stream');
    fs.createReadStream(file).pipe(res);
  };
}

function ortWasm(): Plugin {
  let outDir = '';
  return {
    name: 'emosllm-ort-wasm',
    configResolved(c) {
      outDir = path.resolve(c.root, c.build.outDir);
    },
    configureServer(server) {
      server.middlewares.use('/ort', serveDir(ORT_DIST));
      const models = process.env.EMOSLLM_WEB_MODELS;
      if (models) server.middlewares.use('/models', serveDir(path.resolve(models)));
    },
    generateBundle(_options, bundle) {
      // Vite also emits the binary as a hashed asset (it sees ORT's `new URL(..., import.meta.url)`); the page
      // sets ort.env.wasm.wasmPaths to the ort/ copy instead, so drop the 28 MB duplicate.
      for (const [name, chunk] of Object.entries(bundle)) {
        if (chunk.type === 'asset' && /(^|\/)ort-wasm-simd-threaded[.\w-]*\.wasm$/.test(name)) delete bundle[name];
      }
    },
    writeBundle() {
      fs.mkdirSync(path.join(outDir, 'ort'), { recursive: true });
      for (const f of ORT_WASM_FILES) {
        const src = path.join(ORT_DIST, f);
        if (!fs.existsSync(src)) throw new Error(`${src} is missing: run npm ci (onnxruntime-web is a dev dependency)`);
        fs.copyFileSync(src, path.join(outDir, 'ort', f));
      }
    },
  };
}

export default defineConfig({
  root: WEB_DIR,
  base: './',
  plugins: [ortWasm()],
  // The page is served as plain static files; the ORT glue resolves its binary from ort.env.wasm.wasmPaths.
  optimizeDeps: { exclude: ['onnxruntime-web'] },
  server: { host: '127.0.0.1', fs: { allow: [REPO_ROOT] } },
  preview: { host: '127.0.0.1' },
  build: {
    outDir: path.join(REPO_ROOT, 'runs/web'),
    emptyOutDir: true,
    target: 'es2022',
    chunkSizeWarningLimit: 2048,
    reportCompressedSize: false,
  },
});
