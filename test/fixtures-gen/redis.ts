/**
 * A real redis-server for tests (the Debian package, installed by `pretest`): bound to 127.0.0.1 on a free
 * port, its data in `dir` with the append-only file fsynced on every write, so a stop + start on the same port
 * keeps every job (a restart mid-run, as in production).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export interface TestRedis {
  port: number;
  url: string;
  /** stops the server (SIGTERM: it flushes its data and exits) */
  stop(): Promise<void>;
  /** starts it again on the same port with the same data folder */
  start(): Promise<void>;
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/** Resolves once the server answers on its port (a PING over a plain socket: PONG, or NOAUTH with a password). */
async function waitReady(port: number, proc: ChildProcess, log: string): Promise<void> {
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`redis-server exited with ${proc.exitCode}: ${fs.readFileSync(log, 'utf8').slice(-500)}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.on('connect', () => s.write('PING\r\n'));
      s.on('data', (d) => {
        s.destroy();
        resolve(/^(\+PONG|-NOAUTH)/.test(d.toString()));
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startRedis(dir: string, o: { password?: string } = {}): Promise<TestRedis> {
  fs.mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const log = path.join(dir, 'redis.log');
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--logfile', log];
  if (o.password) args.push('--requirepass', o.password);
  let proc: ChildProcess | undefined;
  const start = async () => {
    proc = spawn('redis-server', args, { stdio: 'ignore' });
    await waitReady(port, proc, log);
  };
  const stop = async () => {
    const p = proc;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    await exited;
  };
  await start();
  const auth = o.password ? `:${encodeURIComponent(o.password)}@` : '';
  return { port, url: `redis://${auth}127.0.0.1:${port}`, stop, start };
}
