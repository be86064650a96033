import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type MockHub, startMockHub } from '../../test/fixtures-gen/mock-hub.ts';
import { REPO_ROOT, SHARED_DIR, hfParity, tempDir } from '../../test/fixtures-gen/paths.ts';
import { UserError } from '../util/errors.ts';
import { hubFiles, parseHubId, resolveModelPath } from './hub.ts';

const TORCH = path.join(SHARED_DIR, 'fixtures/torch-checkpoints/models');
const tmp = tempDir('hub');
const sha256 = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
let hub: MockHub;
const ENV_KEYS = ['HF_HOME', 'HF_HUB_CACHE', 'HF_ENDPOINT', 'HF_TOKEN', 'HF_HUB_OFFLINE', 'HUGGING_FACE_HUB_TOKEN', 'HF_TOKEN_PATH', 'HUGGINGFACE_HUB_CACHE'];
const saved = Object.fromEntries(ENV_KEYS.map((k) => [k, process.env[k]]));
let home = '';

/** A folder holding both weight formats, to check that only safetensors is fetched. */
function bothFormats(): string {
  const dir = path.join(tmp, 'both');
  fs.mkdirSync(dir, { recursive: true });
  for (const f of ['config.json', 'model.safetensors', 'preprocessor_config.json']) fs.copyFileSync(path.join(hfParity('wavlm'), f), path.join(dir, f));
  fs.copyFileSync(path.join(TORCH, 'wavlm/pytorch_model.bin'), path.join(dir, 'pytorch_model.bin'));
  return dir;
}

beforeAll(async () => {
  hub = await startMockHub({
    'microsoft/wavlm-tiny': { revisions: { main: hfParity('wavlm'), 'refs/pr/1': hfParity('wavlm_stable') } },
    'org/both-formats': { revisions: { main: bothFormats() } },
    'org/torch-encoder': { revisions: { main: path.join(TORCH, 'wav2vec2') } },
    'org/torch-sharded-llama': { revisions: { main: path.join(TORCH, 'llama') } },
    'meta-llama/gated': { revisions: { main: hfParity('wavlm') }, gatedToken: 'hf_valid' },
  });
});
afterAll(async () => {
  await hub.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});
beforeEach(() => {
  home = fs.mkdtempSync(path.join(tmp, 'home-'));
  for (const k of ENV_KEYS) delete process.env[k];
  process.env.HF_HOME = home;
  process.env.HF_ENDPOINT = hub.url;
  hub.requests.length = 0;
});
afterEach(() => {
  for (const k of ENV_KEYS) if (saved[k] === undefined) delete process.env[k];
  else process.env[k] = saved[k];
});

const encoder = (id: string) => resolveModelPath(id, { files: hubFiles.speechEncoder });
const storage = (repo: string) => path.join(home, 'hub', `models--${repo.replace('/', '--')}`);
const files = (dir: string) => (fs.readdirSync(dir, { recursive: true }) as string[]).filter((f) => fs.statSync(path.join(dir, f)).isFile()).sort();

describe('parseHubId', () => {
  it('org/name with an optional @revision; paths are never ids', () => {
    expect(parseHubId('microsoft/wavlm-large')).toEqual({ repo: 'microsoft/wavlm-large', revision: 'main' });
    expect(parseHubId('meta-llama/Llama-3.2-3B-Instruct@refs/pr/12')).toEqual({ repo: 'meta-llama/Llama-3.2-3B-Instruct', revision: 'refs/pr/12' });
    expect(parseHubId('a/b@v1.0')).toEqual({ repo: 'a/b', revision: 'v1.0' });
    for (const p of ['./a/b', '/a/b', '~/a/b', 'a/b/c', 'fbank', 'tiny', 'a--b/c', REPO_ROOT, 'src/io']) expect(parseHubId(p)).toBeUndefined();
    expect(() => parseHubId('a/b@')).toThrow(UserError);
    expect(() => parseHubId('a/b@refs/../x')).toThrow(UserError);
  });
});

describe('resolving Hub ids through the Hugging Face cache', () => {
  it('fetches only the files a speech encoder needs into the standard layout; a second resolve makes no request', async () => {
    const dir = await encoder('microsoft/wavlm-tiny');
    const commit = hub.commit('microsoft/wavlm-tiny');
    expect(dir).toBe(path.join(storage('microsoft/wavlm-tiny'), 'snapshots', commit));
    expect(files(dir)).toEqual(['config.json', 'model.safetensors', 'preprocessor_config.json']); // no expected.safetensors
    for (const f of files(dir)) expect(fs.readFileSync(path.join(dir, f))).toEqual(fs.readFileSync(path.join(hfParity('wavlm'), f)));
    expect(fs.readFileSync(path.join(storage('microsoft/wavlm-tiny'), 'refs/main'), 'utf8')).toBe(commit);
    // snapshot entries are relative symlinks to blobs named by ETag: sha256 for LFS files, the git sha1 for others
    const link = fs.readlinkSync(path.join(dir, 'model.safetensors'));
    expect(link).toBe(`../../blobs/${sha256(path.join(hfParity('wavlm'), 'model.safetensors'))}`);
    const cfg = fs.readFileSync(path.join(hfParity('wavlm'), 'config.json'));
    const gitOid = crypto.createHash('sha1').update(`blob ${cfg.length}\0`).update(cfg).digest('hex');
    expect(fs.readlinkSync(path.join(dir, 'config.json'))).toBe(`../../blobs/${gitOid}`);
    expect(hub.requests.some((r) => r.url.includes('expected.safetensors'))).toBe(false);

    hub.requests.length = 0;
    expect(await encoder('microsoft/wavlm-tiny')).toBe(dir);
    expect(await encoder(`microsoft/wavlm-tiny@${commit}`)).toBe(dir);
    expect(hub.requests).toEqual([]);
  });

  it('a revision (refs/pr/1) gets its own ref and snapshot', async () => {
    const dir = await encoder('microsoft/wavlm-tiny@refs/pr/1');
    const commit = hub.commit('microsoft/wavlm-tiny', 'refs/pr/1');
    expect(commit).not.toBe(hub.commit('microsoft/wavlm-tiny'));
    expect(dir.endsWith(commit)).toBe(true);
    expect(fs.readFileSync(path.join(storage('microsoft/wavlm-tiny'), 'refs/refs/pr/1'), 'utf8')).toBe(commit);
    expect(fs.readFileSync(path.join(dir, 'config.json'))).toEqual(fs.readFileSync(path.join(hfParity('wavlm_stable'), 'config.json')));
  });

  it('prefers safetensors, takes pytorch_model.bin when that is all there is, and follows a shard index', async () => {
    expect(files(await encoder('org/both-formats'))).toEqual(['config.json', 'model.safetensors', 'preprocessor_config.json']);
    expect(hub.requests.some((r) => r.url.includes('pytorch_model.bin'))).toBe(false);
    expect(files(await encoder('org/torch-encoder'))).toEqual(['config.json', 'preprocessor_config.json', 'pytorch_model.bin']);
    const llama = await resolveModelPath('org/torch-sharded-llama', { files: hubFiles.all() });
    expect(files(llama)).toEqual(files(path.join(TORCH, 'llama')));
    // a Llama without tokenizer.json is refused before any weight is fetched
    await expect(resolveModelPath('org/torch-encoder', { files: hubFiles.llm })).rejects.toThrow(/org\/torch-encoder@main: no tokenizer\.json/);
  });

  it('uses a cache written the way Python huggingface_hub writes it, without a request', async () => {
    const repo = storage('microsoft/wavlm-tiny');
    const commit = '0123456789abcdef0123456789abcdef01234567'; // a commit the mock does not even know
    for (const f of ['config.json', 'model.safetensors', 'preprocessor_config.json']) {
      const data = fs.readFileSync(path.join(hfParity('wavlm_stable'), f));
      const etag = f.endsWith('.safetensors') ? crypto.createHash('sha256').update(data).digest('hex') : crypto.createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
      fs.mkdirSync(path.join(repo, 'blobs'), { recursive: true });
      fs.writeFileSync(path.join(repo, 'blobs', etag), data);
      fs.mkdirSync(path.join(repo, 'snapshots', commit), { recursive: true });
      fs.symlinkSync(`../../blobs/${etag}`, path.join(repo, 'snapshots', commit, f));
    }
    fs.mkdirSync(path.join(repo, 'refs'), { recursive: true });
    fs.writeFileSync(path.join(repo, 'refs/main'), commit);
    expect(await encoder('microsoft/wavlm-tiny')).toBe(path.join(repo, 'snapshots', commit));
    expect(hub.requests).toEqual([]);
  });

  it('HF_HUB_OFFLINE=1 works from the cache and fails in one line for what it lacks', async () => {
    const dir = await encoder('microsoft/wavlm-tiny');
    process.env.HF_HUB_OFFLINE = '1';
    process.env.HF_ENDPOINT = 'http://127.0.0.1:9'; // nothing listens there
    hub.requests.length = 0;
    expect(await encoder('microsoft/wavlm-tiny')).toBe(dir);
    await expect(encoder('org/torch-encoder')).rejects.toThrow(/^org\/torch-encoder@main: no such folder, and not in the Hugging Face cache .* \(HF_HUB_OFFLINE is set\)$/);
    expect(hub.requests).toEqual([]);
  });

  it('HF_HUB_CACHE moves the cache', async () => {
    process.env.HF_HUB_CACHE = path.join(home, 'elsewhere');
    const dir = await encoder('microsoft/wavlm-tiny');
    expect(dir.startsWith(path.join(home, 'elsewhere', 'models--microsoft--wavlm-tiny', 'snapshots'))).toBe(true);
  });

  it('a gated repository without a token is a one-line error naming the licence page; HF_TOKEN or the token file open it', async () => {
    const err = await encoder('meta-llama/gated').catch((e) => e);
    expect(err).toBeInstanceOf(UserError);
    expect(err.message).not.toContain('\n');
    expect(err.message).toBe(
      `meta-llama/gated@main: access denied (HTTP 401): a gated or private model; accept its licence at ${hub.url}/meta-llama/gated, then set HF_TOKEN (or run: hf auth login)`,
    );
    process.env.HF_TOKEN = 'hf_wrong';
    await expect(encoder('meta-llama/gated')).rejects.toThrow(/access denied \(HTTP 401\) with your token: accept the licence at http:\/\/127\.0\.0\.1:\d+\/meta-llama\/gated/);
    process.env.HF_TOKEN = 'hf_valid';
    expect(files(await encoder('meta-llama/gated'))).toContain('model.safetensors');
    delete process.env.HF_TOKEN;
    fs.rmSync(path.join(home, 'hub'), { recursive: true });
    fs.writeFileSync(path.join(home, 'token'), 'hf_valid\n');
    expect(files(await encoder('meta-llama/gated'))).toContain('model.safetensors');
    expect(hub.requests.filter((r) => r.url.includes('/resolve/')).length).toBeGreaterThan(0);
  });

  it('an unknown model, or a Hub out of reach, is a one-line error naming the endpoint', async () => {
    await expect(encoder('nobody/nothing')).rejects.toThrow(`nobody/nothing@main: no such folder, and no model or revision by that name on ${hub.url}`);
    process.env.HF_ENDPOINT = 'http://127.0.0.1:9';
    await expect(encoder('runs/mistyped')).rejects.toThrow(/^runs\/mistyped@main: no such folder, and cannot reach http:\/\/127\.0\.0\.1:9 to fetch it as a Hub id \([^)]+\); HF_HUB_OFFLINE=1 uses the cache only$/);
  });

  it('a connection cut mid-body resumes with a Range request from the bytes already on disk', async () => {
    const weights = path.join(hfParity('wavlm'), 'model.safetensors');
    hub.cut('model.safetensors', 50_000, 1);
    const dir = await encoder('microsoft/wavlm-tiny');
    expect(sha256(path.join(dir, 'model.safetensors'))).toBe(sha256(weights));
    const gets = hub.requests.filter((r) => r.url.startsWith('/cdn/') && r.range !== 'bytes=0-0');
    expect(gets.map((r) => r.range)).toEqual([undefined, 'bytes=50000-']);
  });

  it('a download interrupted for good leaves its .incomplete file, and the next run continues it', async () => {
    const weights = path.join(hfParity('wavlm'), 'model.safetensors');
    const blob = path.join(storage('microsoft/wavlm-tiny'), 'blobs', sha256(weights));
    hub.cut('model.safetensors', 40_000, 3);
    await expect(encoder('microsoft/wavlm-tiny')).rejects.toThrow(/the download of model\.safetensors was interrupted 3 times .*run again to resume it$/);
    expect(fs.existsSync(blob)).toBe(false);
    expect(fs.statSync(`${blob}.incomplete`).size).toBe(120_000); // each attempt added its 40 000 bytes
    hub.requests.length = 0;
    const dir = await encoder('microsoft/wavlm-tiny');
    expect(hub.requests.filter((r) => r.url.startsWith('/cdn/') && r.range !== 'bytes=0-0').map((r) => r.range)).toEqual(['bytes=120000-']);
    expect(sha256(path.join(dir, 'model.safetensors'))).toBe(sha256(weights));
    expect(fs.existsSync(`${blob}.incomplete`)).toBe(false);
  });

  it('a file that fails its checksum is deleted, never kept as the blob', async () => {
    hub.corrupt('model.safetensors');
    await expect(encoder('microsoft/wavlm-tiny')).rejects.toThrow(/model\.safetensors failed verification .*sha256.*: deleted, run again$/);
    const blobs = path.join(storage('microsoft/wavlm-tiny'), 'blobs');
    expect(fs.readdirSync(blobs).filter((f) => f.length === 64 || f.endsWith('.incomplete'))).toEqual([]);
    expect(files(await encoder('microsoft/wavlm-tiny'))).toContain('model.safetensors'); // the next run is clean
  });

  it('two processes fetching the same model at once download each blob once and both get the right files', async () => {
    hub.slow(8192, 5); // ~17 chunks for the weights: the two processes overlap
    const script = `import { hubFiles, resolveModelPath } from ${JSON.stringify(path.join(REPO_ROOT, 'src/io/hub.ts'))};
      console.log(await resolveModelPath('microsoft/wavlm-tiny', { files: hubFiles.speechEncoder }));`;
    const run = () =>
      new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
        const p = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: REPO_ROOT, env: { ...process.env } });
        let out = '';
        let err = '';
        p.stdout.on('data', (d) => (out += d));
        p.stderr.on('data', (d) => (err += d));
        p.on('close', (code) => resolve({ code, out: out.trim(), err }));
      });
    try {
      const [a, b] = await Promise.all([run(), run()]);
      expect(a.code, a.err).toBe(0);
      expect(b.code, b.err).toBe(0);
      expect(a.out).toBe(b.out);
      expect(sha256(path.join(a.out, 'model.safetensors'))).toBe(sha256(path.join(hfParity('wavlm'), 'model.safetensors')));
    } finally {
      hub.slow(1 << 30, 0);
    }
    const weightGets = hub.requests.filter((r) => r.url.startsWith('/cdn/') && r.range !== 'bytes=0-0');
    expect(weightGets).toHaveLength(1);
  });
});
