import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, emodbDev, tempDir } from '../../test/fixtures-gen/paths.ts';
import { trainSmallModel } from '../../test/fixtures-gen/model.ts';
import { type TestRedis, startRedis } from '../../test/fixtures-gen/redis.ts';
import { openQueue, queueCounts } from '../serve/distributed/jobs.ts';

const tmp = tempDir('queue');
const env = { ...process.env, EMOSLLM_CACHE_DIR: path.join(tmp, 'cache') };
const CLI = path.join(REPO_ROOT, 'bin/emosllm.mjs');
const cli = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env });
const lines = (file: string) => fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let model = '';
let redis: TestRedis;
const workers: ChildProcess[] = [];

beforeAll(async () => {
  model = await trainSmallModel(tmp, { cacheDir: env.EMOSLLM_CACHE_DIR });
  redis = await startRedis(path.join(tmp, 'redis'));
}, 300_000);
afterAll(async () => {
  for (const w of workers) if (w.exitCode === null && w.signalCode === null) w.kill('SIGKILL');
  await redis?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** A worker process; its stderr goes to a log file (read by the checks). */
function worker(name: string, out: string): { proc: ChildProcess; log: string; exited: Promise<number | null> } {
  const log = path.join(tmp, `${name}.log`);
  const fd = fs.openSync(log, 'w');
  const proc = spawn(process.execPath, [CLI, 'worker', '--queue', redis.url, '--model', model, '--out', out, '--lock-seconds', '5'], { env, stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  workers.push(proc);
  return { proc, log, exited: new Promise((r) => proc.on('exit', (code) => r(code))) };
}

describe('emosllm queue + worker on a real Redis', () => {
  it('3 workers over 303 jobs, one SIGKILLed, one SIGTERMed, Redis restarted: every good file exactly once, equal to predict; broken files failed with their error', async () => {
    const { wavDir } = emodbDev();
    const good = fs.readdirSync(wavDir).filter((f) => f.endsWith('.wav')).sort().slice(0, 300).map((f) => path.join(wavDir, f));
    const brokenDir = path.join(tmp, 'broken');
    fs.mkdirSync(brokenDir);
    fs.writeFileSync(path.join(brokenDir, 'text.wav'), 'this is not audio');
    fs.writeFileSync(path.join(brokenDir, 'empty.wav'), '');
    fs.writeFileSync(path.join(brokenDir, 'cut.wav'), fs.readFileSync(good[0]!).subarray(0, 30)); // a WAV header cut short
    const broken = fs.readdirSync(brokenDir).map((f) => path.join(brokenDir, f));

    // the reference: emosllm predict on the same files
    const ref = path.join(tmp, 'predict.jsonl');
    const p = cli('predict', '--model', model, '--out', ref, ...good);
    expect(p.status, p.stderr).toBe(0);
    const expected = new Map(lines(ref).map((r) => [r.file, r]));
    expect(expected.size).toBe(300);

    const add = cli('queue', 'add', '--queue', redis.url, '--model', model, ...good, brokenDir);
    expect(add.status, add.stderr).toBe(0);
    expect(add.stdout.trim().split('\n').at(-1)).toBe('303 jobs added');

    const out = path.join(tmp, 'results');
    const w = [worker('w1', out), worker('w2', out), worker('w3', out)];
    const q = await openQueue(redis.url, { persistent: true }); // a monitor that outlives the restart
    const counts = async () => {
      for (;;) {
        try {
          return await queueCounts(q.queue);
        } catch {
          await sleep(200); // Redis is restarting
        }
      }
    };
    const until = async (done: (c: Awaited<ReturnType<typeof queueCounts>>) => boolean) => {
      for (;;) {
        const c = await counts();
        if (done(c)) return c;
        await sleep(100);
      }
    };
    try {
      await until((c) => c.completed >= 50);
      w[0]!.proc.kill('SIGKILL'); // mid-job: its job must go back to the queue after the lock time
      expect(await w[0]!.exited).toBe(null);

      await until((c) => c.completed >= 110);
      await redis.stop();
      await sleep(1000);
      await redis.start(); // same port, same append-only file

      await until((c) => c.completed >= 170);
      w[1]!.proc.kill('SIGTERM'); // finishes the running job, acknowledges it, exits
      expect(await w[1]!.exited).toBe(0);
      expect(fs.readFileSync(w[1]!.log, 'utf8')).toMatch(/SIGTERM: finishing/);

      const end = await until((c) => c.waiting === 0 && c.active === 0);
      expect(end).toMatchObject({ waiting: 0, active: 0, completed: 300, failed: 3 });
    } finally {
      await q.close();
    }
    w[2]!.proc.kill('SIGTERM');
    expect(await w[2]!.exited).toBe(0);
    expect(fs.readFileSync(w[2]!.log, 'utf8')).toMatch(/retrying/); // it saw Redis go away

    const status = cli('queue', 'status', '--queue', redis.url, '--json');
    expect(status.status, status.stderr).toBe(0);
    const s = JSON.parse(status.stdout);
    expect([s.waiting, s.active, s.completed, s.failed]).toEqual([0, 0, 300, 3]);
    for (const k of ['waiting', 'active', 'completed', 'failed']) expect(Number.isInteger(s[k])).toBe(true);

    const merged = path.join(tmp, 'all.jsonl');
    const c = cli('queue', 'collect', out, '--out', merged);
    expect(c.status, c.stderr).toBe(0);
    const results = lines(merged);
    expect(results.map((r) => r.file).sort()).toEqual([...good].sort()); // every good file exactly once, no broken one
    expect(new Set(results.map((r) => r.job)).size).toBe(300);
    for (const r of results) {
      const e = expected.get(r.file);
      expect(r.label).toBe(e.label);
      expect(Object.keys(r.probs)).toEqual(Object.keys(e.probabilities));
      for (const [k, v] of Object.entries(e.probabilities as Record<string, number>)) expect(r.probs[k]).toBeCloseTo(v, 6);
      expect(r.segments).toHaveLength(e.segments.length);
    }

    const failed = cli('queue', 'status', '--queue', redis.url, '--failed').stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(failed.map((f) => f.file).sort()).toEqual([...broken].sort());
    for (const f of failed) {
      expect(f.error).toContain(f.file);
      expect(f.error.includes('\n')).toBe(false);
      expect(f.attempts).toBe(3); // retried with backoff before it landed in the failed set
    }

    const again = cli('queue', 'add', '--queue', redis.url, '--model', model, ...good, brokenDir);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout.trim().split('\n').at(-1)).toBe('0 jobs added');

    // retry-failed puts the broken files back; drain removes them before any worker takes them
    expect(cli('queue', 'retry-failed', '--queue', redis.url).stdout.trim()).toBe('3 failed jobs moved back to waiting');
    expect(JSON.parse(cli('queue', 'status', '--queue', redis.url, '--json').stdout)).toMatchObject({ waiting: 3, failed: 0 });
    expect(cli('queue', 'drain', '--queue', redis.url).stdout.trim()).toBe('3 waiting jobs removed');
    expect(JSON.parse(cli('queue', 'status', '--queue', redis.url, '--json').stdout)).toMatchObject({ waiting: 0, failed: 0, completed: 300 });
  }, 600_000);

  it('rediss:// (TLS) with a password in the URL works and never prints it; a wrong password or an untrusted certificate is one line without it', async () => {
    const secret = 'hunter2-queue-secret';
    const locked = await startRedis(path.join(tmp, 'redis-tls'), { password: secret, tls: true });
    const tlsEnv = { ...env, NODE_EXTRA_CA_CERTS: locked.caFile };
    const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: tlsEnv });
    try {
      expect(locked.url.startsWith('rediss://')).toBe(true);
      const add = run('queue', 'add', '--queue', locked.url, '--model', model, path.join(emodbDev().wavDir, '03a01Fa.wav'));
      expect(add.status, add.stderr).toBe(0);
      expect(add.stdout.trim()).toBe('1 jobs added');
      const out = path.join(tmp, 'tls-results');
      const w = spawn(process.execPath, [CLI, 'worker', '--queue', locked.url, '--model', model, '--out', out], { env: tlsEnv, stdio: ['ignore', 'pipe', 'pipe'] });
      workers.push(w);
      let text = '';
      w.stdout!.on('data', (d) => (text += d));
      w.stderr!.on('data', (d) => (text += d));
      const exited = new Promise((r) => w.on('exit', r));
      while (!fs.existsSync(out) || fs.readdirSync(out).length === 0 || !fs.readFileSync(path.join(out, fs.readdirSync(out)[0]!), 'utf8').endsWith('\n')) {
        if (w.exitCode !== null) throw new Error(`the worker exited (${w.exitCode}): ${text}`);
        await sleep(100);
      }
      w.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(text).toMatch(/queue rediss:\/\/:\*\*\*@127\.0\.0\.1/);
      const status = run('queue', 'status', '--queue', locked.url);
      expect(status.stdout).toMatch(/done 1/);
      const wrong = run('queue', 'status', '--queue', locked.url.replace(secret, 'wrong-secret'), '--json');
      expect(wrong.status).toBe(1);
      expect(wrong.stderr.trim().split('\n')).toHaveLength(1);
      expect(wrong.stderr).toMatch(/emosllm: error: rediss:\/\/:\*\*\*@127\.0\.0\.1:\d+.*cannot reach Redis/);
      const untrusted = cli('queue', 'status', '--queue', locked.url, '--json'); // without the certificate
      expect(untrusted.status).toBe(1);
      expect(untrusted.stderr.trim().split('\n')).toHaveLength(1);
      expect(untrusted.stderr).toMatch(/cannot reach Redis: self-signed certificate/);
      for (const o of [add.stdout + add.stderr, text, status.stdout + status.stderr, wrong.stderr, untrusted.stderr]) {
        expect(o).not.toContain(secret);
        expect(o).not.toContain('wrong-secret');
      }
    } finally {
      await locked.stop();
    }
  });
});
