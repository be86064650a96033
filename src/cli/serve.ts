import type { Command } from 'commander';
import { SERVE_DEFAULTS, startServer } from '../serve/server.ts';
import { parseHubId } from '../io/hub.ts';
import { UserError } from '../util/errors.ts';
import { trainedModelFolder } from './hub.ts';

export interface ServeFlags {
  model: string;
  host: string;
  port: string;
  queue: string;
  timeout: string;
  maxBytes: string;
  maxSeconds: string;
  bodyTimeout: string;
  maxUploads: string;
  maxUploadsPerClient: string;
  drainTimeout: string;
  token?: string;
  name?: string;
}

/** "52428800", "50M", "50MiB", "512k", "1G" (binary multiples) -> bytes. */
export function parseBytes(flag: string, v: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmg])?(?:i?b)?\s*$/i.exec(v);
  if (!m) throw new UserError(`${flag} must be a number of bytes (e.g. 52428800, 512K, 50M, 1G), got "${v}"`);
  const mult = { k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[(m[2] ?? '').toLowerCase() as 'k' | 'm' | 'g'] ?? 1;
  const n = Math.floor(Number(m[1]) * mult);
  if (!(n >= 1)) throw new UserError(`${flag} must be at least 1 byte, got "${v}"`);
  return n;
}

function parseNumber(flag: string, v: string, o: { integer?: boolean; min: number; max?: number }): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || (o.integer && !Number.isInteger(n)) || n < o.min || (o.max !== undefined && n > o.max))
    throw new UserError(`${flag} must be ${o.integer ? 'an integer' : 'a number'} >= ${o.min}${o.max !== undefined ? ` and <= ${o.max}` : ''}, got "${v}"`);
  return n;
}

export async function runServe(f: ServeFlags): Promise<void> {
  const timeout = parseNumber('--timeout', f.timeout, { min: 0.001 });
  const drain = parseNumber('--drain-timeout', f.drainTimeout, { min: 0.001 });
  // the process exits by the drain timeout: the running request gets it less this margin to be answered 503
  const exitMarginMs = Math.min(1000, drain * 250);
  const handle = await startServer({
    model: await trainedModelFolder(f.model),
    name: f.name ?? (parseHubId(f.model) ? f.model : undefined), // a snapshot folder is named by its commit
    host: f.host,
    port: parseNumber('--port', f.port, { integer: true, min: 0, max: 65535 }),
    queue: parseNumber('--queue', f.queue, { integer: true, min: 0 }),
    timeoutMs: timeout * 1000,
    maxBytes: parseBytes('--max-bytes', f.maxBytes),
    maxSeconds: parseNumber('--max-seconds', f.maxSeconds, { min: 0.001 }),
    bodyTimeoutMs: parseNumber('--body-timeout', f.bodyTimeout, { min: 0.001 }) * 1000,
    maxUploads: parseNumber('--max-uploads', f.maxUploads, { integer: true, min: 1 }),
    maxUploadsPerClient: parseNumber('--max-uploads-per-client', f.maxUploadsPerClient, { integer: true, min: 1 }),
    drainTimeoutMs: drain * 1000 - exitMarginMs,
    token: f.token ?? process.env.EMOSLLM_TOKEN,
    waitReady: false,
  });
  console.error(`serve: loading ${f.model} (${handle.url}/healthz answers 503 until it is ready)`);
  let signals = 0;
  const done = new Promise<void>((resolve, reject) => {
    const onSignal = (sig: NodeJS.Signals) => {
      if (++signals > 1) {
        console.error(`serve: ${sig} again: exiting without waiting`);
        process.exit(sig === 'SIGINT' ? 130 : 143);
      }
      const s = handle.stats();
      console.error(
        `serve: ${sig}: shutting down (${s.running ? 'finishing the running request' : 'nothing running'}, ${s.waiting} waiting answered 503, ${s.uploading} upload(s) cut; exit within ${drain} s, or ${sig} again to exit now)`,
      );
      setTimeout(() => {
        console.error(`serve: --drain-timeout ${drain} s over: exiting`);
        process.exit(0);
      }, drain * 1000).unref();
      handle.close().then(resolve, reject);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  await handle.ready; // a model that fails to load rejects here (the server is closed already)
  const authNote = f.token ?? process.env.EMOSLLM_TOKEN ? ', bearer token required' : '';
  console.error(`serve: ready (one request at a time, --queue ${f.queue} waiting, --timeout ${timeout} s${authNote})`);
  console.log(`listening on ${handle.url}`);
  await done;
  console.error('serve: stopped');
}

/** The options and action of `emosllm serve` (its name and description are in commands.ts). */
export function defineServe(cmd: Command): void {
  cmd
    .requiredOption('--model <dir|id>', 'a trained model folder (the output of emosllm train), or a Hub id org/name[@rev] of one')
    .option('--host <addr>', 'address to listen on', SERVE_DEFAULTS.host)
    .option('--port <n>', 'port (0: a free one; the address is printed)', String(SERVE_DEFAULTS.port))
    .option('--queue <n>', 'requests waiting behind the running one; more get 503 + Retry-After', String(SERVE_DEFAULTS.queue))
    .option('--timeout <s>', 'per-request limit in seconds, queueing included (504 past it)', String(SERVE_DEFAULTS.timeoutMs / 1000))
    .option('--max-bytes <n>', 'largest request body (413 past it); K/M/G suffixes', '50M')
    .option('--max-seconds <s>', 'longest audio (422 past it)', String(SERVE_DEFAULTS.maxSeconds))
    .option('--body-timeout <s>', 'seconds for the whole request (headers and body) to arrive; 408 and closed past it', String(SERVE_DEFAULTS.bodyTimeoutMs / 1000))
    .option('--max-uploads <n>', 'uploads in progress at once; more get 503 too_many_uploads', String(SERVE_DEFAULTS.maxUploads))
    .option('--max-uploads-per-client <n>', 'uploads in progress at once from one address; more get 429 too_many_uploads', String(SERVE_DEFAULTS.maxUploadsPerClient))
    .option('--drain-timeout <s>', 'on SIGTERM/SIGINT, exit within this many seconds (the running request is answered 503 if it is not done)', String(SERVE_DEFAULTS.drainTimeoutMs / 1000))
    .option('--token <t>', 'require "Authorization: Bearer <t>" (default: env EMOSLLM_TOKEN; /healthz stays open)')
    .option('--name <name>', 'model name in the answers (default: the model folder name, or the Hub id)')
    .action(async (f: ServeFlags) => {
      await runServe(f);
    });
}
