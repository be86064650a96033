/**
 * A real redis-server for tests (the Debian package, installed by `pretest`): bound to 127.0.0.1 on a free
 * port, its data in `dir` with the append-only file fsynced on every write, so a stop + start on the same port
 * keeps every job (a restart mid-run, as in production). With `tls`, it speaks TLS only, with a self-signed
 * certificate for 127.0.0.1 made by openssl (`caFile`: what a client must trust).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export interface TestRedis {
  port: number;
  url: string;
  /** with `tls`: the self-signed certificate to trust (NODE_EXTRA_CA_CERTS) */
  caFile?: string;
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

/** Resolves once the server accepts TLS connections on its port. */
async function waitReadyTls(port: number, proc: ChildProcess, log: string): Promise<void> {
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`redis-server exited with ${proc.exitCode}: ${fs.readFileSync(log, 'utf8').slice(-500)}`);
    if (fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes('Ready to accept connections')) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startRedis(dir: string, o: { password?: string; tls?: boolean } = {}): Promise<TestRedis> {
  fs.mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const log = path.join(dir, 'redis.log');
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--logfile', log];
  if (o.password) args.push('--requirepass', o.password);
  let caFile: string | undefined;
  if (o.tls) {
    caFile = path.join(dir, 'cert.pem');
    const key = path.join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', caFile, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    args.splice(0, 2, '--port', '0', '--tls-port', String(port), '--tls-cert-file', caFile, '--tls-key-file', key, '--tls-ca-cert-file', caFile, '--tls-auth-clients', 'no');
  }
  let proc: ChildProcess | undefined;
  const start = async () => {
    fs.rmSync(log, { force: true });
    proc = spawn('redis-server', args, { stdio: 'ignore' });
    await (o.tls ? waitReadyTls : waitReady)(port, proc, log);
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
  return { port, url: `${o.tls ? 'rediss' : 'redis'}://${auth}127.0.0.1:${port}`, caFile, stop, start };
}
