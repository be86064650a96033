/**
 * Hugging Face Hub model ids (`org/name`, optionally `@revision`: a branch, tag, commit or `refs/pr/N`) turned
 * into a local folder through the standard Hugging Face cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
 * ~/.cache/huggingface/hub; `models--org--name/{blobs,snapshots,refs}`), so a model Python's huggingface_hub
 * fetched is used as it is, and the files we fetch are Python's too. Only the files a command needs are fetched.
 *
 * @huggingface/hub makes the API calls (revision -> commit, the file tree, resolve with its redirects). Its
 * downloadFileToCacheDir is not used because it lacks what this file adds: refs/ for branches and tags, snapshots
 * named by the revision's commit (it names them by each file's last commit), resuming a `.incomplete` blob with a
 * Range request, a lock per blob, checksum verification, progress, HF_HUB_OFFLINE, HF_TOKEN and the token file.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HubApiError, fileDownloadInfo, getHFHubCachePath, getRepoFolderName, listFiles, modelInfo } from '@huggingface/hub';
import lockfile from 'proper-lockfile';
import { UserError, oneLine } from '../util/errors.ts';
import { writeFileAtomic } from '../util/fs.ts';

export interface HubRef {
  repo: string;
  /** a branch, tag, commit or refs/pr/N (default main) */
  revision: string;
}

const REPO_PART = /^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?$/;
const COMMIT = /^[0-9a-f]{40}$/;

/**
 * The Hub id in `s`, or undefined when `s` names a local path (an existing path always wins, and `./x/y`, `/x`
 * or `~/x` are never ids). An id is `org/name` with an optional `@revision`.
 */
export function parseHubId(s: string): HubRef | undefined {
  if (fs.existsSync(s) || s.startsWith('.') || s.startsWith('~') || path.isAbsolute(s)) return undefined;
  const at = s.indexOf('@');
  const repo = at < 0 ? s : s.slice(0, at);
  const parts = repo.split('/');
  if (parts.length !== 2 || !parts.every((p) => REPO_PART.test(p) && !p.includes('--') && !p.includes('..'))) return undefined;
  const revision = at < 0 ? 'main' : s.slice(at + 1);
  if (!revision || /\s/.test(revision) || revision.split('/').some((p) => p === '' || p === '.' || p === '..'))
    throw new UserError(`"${revision}" is not a revision (a branch, tag, commit or refs/pr/N)`, s);
  return { repo, revision };
}

/**
 * Which files of a repository a command needs. `select` sees the repository's file list (or, to decide whether
 * the cache already holds enough, the snapshot's) and may read small files such as a shard index; it throws
 * `MissingFiles` when something the command cannot do without is not there.
 */
export interface HubFileSelection {
  /** names the selection in the cache's record of completed selections */
  key: string;
  select(files: ReadonlySet<string>, read: (file: string) => Promise<string>): Promise<string[]>;
  /** the cache's own file list cannot tell whether this selection is complete (e.g. "everything") */
  needsRecord?: boolean;
}

export class MissingFiles extends Error {}

const join = (dir: string, f: string) => (dir ? `${dir}/${f}` : f);
const present = (files: ReadonlySet<string>, dir: string, ...names: string[]) => names.map((n) => join(dir, n)).filter((f) => files.has(f));
function required(files: ReadonlySet<string>, dir: string, name: string): string {
  const f = join(dir, name);
  if (!files.has(f)) throw new MissingFiles(`no ${f}`);
  return f;
}

/** The weights in the best format the folder has: safetensors, else torch `.bin`; a sharded index with its shards. */
async function weightFiles(files: ReadonlySet<string>, read: (f: string) => Promise<string>, dir: string): Promise<string[]> {
  for (const [single, index] of [
    ['model.safetensors', 'model.safetensors.index.json'],
    ['pytorch_model.bin', 'pytorch_model.bin.index.json'],
    ['adapter_model.safetensors', ''],
    ['adapter_model.bin', ''],
  ]) {
    if (files.has(join(dir, single))) return [join(dir, single)];
    if (index && files.has(join(dir, index))) {
      const file = join(dir, index);
      let map: unknown;
      try {
        map = JSON.parse(await read(file)).weight_map;
      } catch (e) {
        throw new UserError(`not a shard index: ${oneLine(e)}`, file);
      }
      if (typeof map !== 'object' || map === null) throw new UserError('not a shard index (no "weight_map")', file);
      const shards = [...new Set(Object.values(map as Record<string, unknown>))];
      if (!shards.every((s) => typeof s === 'string' && !s.includes('..') && !s.startsWith('/'))) throw new UserError('the weight_map names files outside the folder', file);
      for (const s of shards) required(files, dir, s as string);
      return [file, ...shards.map((s) => join(dir, s as string))];
    }
  }
  throw new MissingFiles(`no weights in ${dir || 'the repository'} (model.safetensors, pytorch_model.bin, or a sharded index of either)`);
}

const speechEncoderFiles = async (files: ReadonlySet<string>, read: (f: string) => Promise<string>, dir = '') => [
  required(files, dir, 'config.json'),
  ...present(files, dir, 'preprocessor_config.json'),
  ...(await weightFiles(files, read, dir)),
];

const llmFiles = async (files: ReadonlySet<string>, read: (f: string) => Promise<string>, dir = '') => [
  required(files, dir, 'config.json'),
  required(files, dir, 'tokenizer.json'),
  ...present(files, dir, 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'),
  ...(await weightFiles(files, read, dir)),
];

/** A path inside the repository named by a file in it (`.` is the repository itself), or undefined. */
function inside(p: unknown): string | undefined {
  if (typeof p !== 'string' || path.isAbsolute(p)) return undefined;
  const n = path.posix.normalize(p.replaceAll('\\', '/'));
  return n === '.' ? '' : n.startsWith('..') ? undefined : n.replace(/\/$/, '');
}

/** The file selections the commands use. */
export const hubFiles = {
  /** a wav2vec2 / HuBERT / WavLM folder: config, preprocessor config, weights */
  speechEncoder: { key: 'speech-encoder', select: (files, read) => speechEncoderFiles(files, read) } satisfies HubFileSelection,
  /** a Llama folder: config, tokenizer, generation config, weights */
  llm: { key: 'llm', select: (files, read) => llmFiles(files, read) } satisfies HubFileSelection,
  /** a trained emosllm model folder: emosllm.json and what it names (never its checkpoints/) */
  emosllmModel: {
    key: 'emosllm-model',
    async select(files, read) {
      const specFile = required(files, '', 'emosllm.json');
      let spec: Record<string, any>;
      try {
        spec = JSON.parse(await read(specFile));
      } catch (e) {
        throw new UserError(`not valid JSON: ${oneLine(e)}`, specFile);
      }
      const out = [specFile, required(files, '', 'mapper.safetensors')];
      if (typeof spec.featureNorm === 'string') out.push(required(files, '', spec.featureNorm));
      if (spec.llmTrain === 'lora') out.push(required(files, 'adapter', 'adapter_config.json'), ...(await weightFiles(files, read, 'adapter')));
      if (spec.llmTrain === 'full') out.push(required(files, '', 'llm_weights.safetensors'));
      const llmDir = inside(spec.llm?.path);
      if (llmDir !== undefined) out.push(...(await llmFiles(files, read, llmDir)));
      const encoderDir = spec.encoder?.kind === 'hf' ? inside(spec.encoder.path) : undefined;
      if (encoderDir !== undefined) out.push(...(await speechEncoderFiles(files, read, encoderDir)));
      return [...new Set(out)];
    },
  } satisfies HubFileSelection,
  /** every file (under `folders`, when given): parity fixtures, `emosllm convert` */
  all(folders?: string[]): HubFileSelection {
    return {
      key: folders ? `all:${[...folders].sort().join(',')}` : 'all',
      needsRecord: true,
      async select(files) {
        const out = [...files].filter((f) => !folders || folders.some((d) => f.startsWith(`${d}/`))).sort();
        if (out.length === 0) throw new MissingFiles(folders ? `no files under ${folders.join(', ')}` : 'no files');
        return out;
      },
    };
  },
};

export interface DownloadProgress {
  repo: string;
  file: string;
  /** bytes on disk so far (a resumed download starts above 0) */
  done: number;
  total: number;
}

export interface HubOptions {
  files: HubFileSelection;
  onProgress?: (p: DownloadProgress) => void;
  /** one line per repository resolved over the network */
  log?: (line: string) => void;
}

interface HubEnv {
  cache: string;
  endpoint: string;
  token?: string;
  offline: boolean;
}

const truthy = (v: string | undefined) => v !== undefined && ['1', 'true', 'yes', 'on'].includes(v.trim().toLowerCase());

/** The settings huggingface_hub reads, read the same way (on every call: tests and users change them). */
function hubEnv(): HubEnv {
  const home = process.env.HF_HOME ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'huggingface');
  let token = process.env.HF_TOKEN || process.env.HUGGING_FACE_HUB_TOKEN || undefined;
  if (!token) {
    try {
      token = fs.readFileSync(process.env.HF_TOKEN_PATH ?? path.join(home, 'token'), 'utf8').trim() || undefined;
    } catch {
      // no token file: anonymous
    }
  }
  return {
    cache: getHFHubCachePath(),
    endpoint: (process.env.HF_ENDPOINT || 'https://huggingface.co').replace(/\/+$/, ''),
    token,
    offline: truthy(process.env.HF_HUB_OFFLINE),
  };
}

/** A local folder for `idOrPath`: a Hub id is fetched into (or found in) the cache; anything else is returned as is. */
export async function resolveModelPath(idOrPath: string, opts: HubOptions): Promise<string> {
  const ref = parseHubId(idOrPath);
  return ref ? snapshotFolder(ref, opts) : idOrPath;
}

/** `org/name@COMMIT` for a Hub id resolved to `snapshot`: a model folder keeps it, to fetch the model where the path does not exist. */
export function pinnedHubId(idOrPath: string, snapshot: string): string | undefined {
  const ref = parseHubId(idOrPath);
  return ref ? `${ref.repo}@${path.basename(snapshot)}` : undefined;
}

/** `dir` when it holds a config.json, else the cached snapshot of the pinned Hub id `hub` when the cache has it. */
export function folderOrCachedHub(dir: string, hub?: string): string {
  if (!hub || fs.existsSync(path.join(dir, 'config.json'))) return dir;
  const ref = parseHubId(hub);
  if (!ref || !COMMIT.test(ref.revision)) return dir;
  const snapshot = path.join(getHFHubCachePath(), getRepoFolderName({ type: 'model', name: ref.repo }), 'snapshots', ref.revision);
  return fs.existsSync(path.join(snapshot, 'config.json')) ? snapshot : dir;
}

/**
 * A trained emosllm model folder (or Hub id of one), with the Hub encoder and LLM it names by pinned id fetched
 * into the cache when their recorded paths do not exist here (a model trained on another machine, or uploaded).
 */
export async function resolveTrainedModel(idOrPath: string, opts: Omit<HubOptions, 'files'>): Promise<string> {
  const dir = await resolveModelPath(idOrPath, { ...opts, files: hubFiles.emosllmModel });
  let spec: { llm?: { path?: unknown; hub?: unknown }; encoder?: { kind?: unknown; path?: unknown; hub?: unknown } };
  try {
    spec = JSON.parse(fs.readFileSync(path.join(dir, 'emosllm.json'), 'utf8'));
  } catch {
    return dir; // loading the model reports what is wrong with it
  }
  const needs: Array<[unknown, unknown, HubFileSelection]> = [[spec.llm?.path, spec.llm?.hub, hubFiles.llm]];
  if (spec.encoder?.kind === 'hf') needs.push([spec.encoder.path, spec.encoder.hub, hubFiles.speechEncoder]);
  for (const [p, hub, files] of needs) {
    if (typeof p !== 'string' || typeof hub !== 'string' || fs.existsSync(path.join(path.resolve(dir, p), 'config.json'))) continue;
    await resolveModelPath(hub, { ...opts, files });
  }
  return dir;
}

/** The snapshot folder of `ref` holding the selected files, fetching what the cache lacks. */
export async function snapshotFolder(ref: HubRef, opts: HubOptions): Promise<string> {
  const env = hubEnv();
  const id = `${ref.repo}@${ref.revision}`;
  const storage = path.join(env.cache, getRepoFolderName({ type: 'model', name: ref.repo }));
  const refFile = path.join(storage, 'refs', ref.revision);
  let commit = COMMIT.test(ref.revision) ? ref.revision : readRef(refFile);
  if (commit && (await cachedSelection(storage, commit, opts.files, env.offline))) return path.join(storage, 'snapshots', commit);
  if (env.offline) {
    throw new UserError(
      commit ? `not complete in the Hugging Face cache ${env.cache} and HF_HUB_OFFLINE is set` : `no such folder, and not in the Hugging Face cache ${env.cache} (HF_HUB_OFFLINE is set)`,
      id,
    );
  }
  const call = <T>(what: string, f: () => Promise<T>) => hubCall(env, ref, what, f);
  const credentials = env.token ? { accessToken: env.token } : {};
  if (!commit) {
    const info = await call('revision', () => modelInfo({ name: ref.repo, revision: ref.revision, hubUrl: env.endpoint, additionalFields: ['sha'], ...credentials }));
    if (typeof info.sha !== 'string' || !COMMIT.test(info.sha)) throw new UserError(`${env.endpoint} gave no commit for this revision`, id);
    commit = info.sha;
    writeFileAtomic(refFile, commit); // as huggingface_hub writes it: the bare commit, no newline
  }
  const listing = new Map<string, { size: number; etag: string; lfs: boolean }>();
  await call('file list', async () => {
    for await (const e of listFiles({ repo: ref.repo, revision: commit, recursive: true, hubUrl: env.endpoint, ...credentials })) {
      if (e.type !== 'file') continue;
      const etag = e.lfs?.oid ?? e.oid;
      if (!etag) throw new UserError(`the file list gives no hash for ${e.path}`, id);
      listing.set(e.path, { size: e.lfs?.size ?? e.size, etag, lfs: !!e.lfs });
    }
  });
  const snapshot = path.join(storage, 'snapshots', commit);
  const ctx: FetchContext = { env, ref, commit, storage, onProgress: opts.onProgress };
  const fetched = new Set<string>();
  const ensure = async (file: string) => {
    const entry = listing.get(file);
    if (!entry) throw new MissingFiles(`no ${file}`);
    if (!fetched.has(file)) await ensureFile(ctx, file, entry);
    fetched.add(file);
    return path.join(snapshot, file);
  };
  let files: string[];
  try {
    files = await opts.files.select(new Set(listing.keys()), async (f) => fs.readFileSync(await ensure(f), 'utf8'));
  } catch (e) {
    if (e instanceof MissingFiles) throw new UserError(`${e.message} at revision ${commit.slice(0, 7)}: not a folder this command can use`, id);
    throw e;
  }
  const missing = files.filter((f) => !fs.existsSync(path.join(snapshot, f)));
  const bytes = missing.reduce((s, f) => s + (listing.get(f)?.size ?? 0), 0);
  opts.log?.(`hub: ${id} is commit ${commit.slice(0, 7)}; ${missing.length ? `fetching ${missing.length} of ${files.length} files (${(bytes / 1e6).toFixed(1)} MB)` : `all ${files.length} files cached`} in ${storage}`);
  for (const f of files) await ensure(f);
  writeFileAtomic(recordFile(storage, commit, opts.files), `${JSON.stringify({ files }, null, 1)}\n`);
  return snapshot;
}

function readRef(file: string): string | undefined {
  try {
    const c = fs.readFileSync(file, 'utf8').trim();
    return COMMIT.test(c) ? c : undefined;
  } catch {
    return undefined;
  }
}

/** Our record of a completed selection (Python's cache cannot say whether "every file" is there). */
const recordFile = (storage: string, commit: string, sel: HubFileSelection) =>
  path.join(storage, '.emosllm', commit, `${crypto.createHash('sha1').update(sel.key).digest('hex').slice(0, 16)}.json`);

/** The snapshot's files (symlinks into blobs/ followed; a dangling link is no file). */
function snapshotFiles(dir: string): Set<string> {
  const out = new Set<string>();
  if (!fs.existsSync(dir)) return out;
  for (const rel of fs.readdirSync(dir, { recursive: true }) as string[]) {
    if (fs.statSync(path.join(dir, rel), { throwIfNoEntry: false })?.isFile()) out.add(rel.split(path.sep).join('/'));
  }
  return out;
}

/** Does the cache hold the selected files of this commit (so no request is needed)? */
async function cachedSelection(storage: string, commit: string, sel: HubFileSelection, offline: boolean): Promise<boolean> {
  const snapshot = path.join(storage, 'snapshots', commit);
  const have = snapshotFiles(snapshot);
  if (have.size === 0) return false;
  try {
    const rec = JSON.parse(fs.readFileSync(recordFile(storage, commit, sel), 'utf8')) as { files: string[] };
    if (rec.files.every((f) => have.has(f))) return true;
  } catch {
    // no record: a cache written by huggingface_hub, or a selection we never completed
  }
  if (sel.needsRecord && !offline) return false;
  try {
    const files = await sel.select(have, async (f) => fs.readFileSync(path.join(snapshot, f), 'utf8'));
    return files.every((f) => have.has(f));
  } catch (e) {
    if (e instanceof MissingFiles) return false;
    throw e;
  }
}

/** Runs a Hub API call; its failures become one-line errors (401/403 name the licence page). */
async function hubCall<T>(env: HubEnv, ref: HubRef, what: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw hubError(env, ref, what, e);
  }
}

function hubError(env: HubEnv, ref: HubRef, what: string, e: unknown): Error {
  const id = `${ref.repo}@${ref.revision}`;
  if (e instanceof UserError || e instanceof MissingFiles) return e;
  const status = e instanceof HubApiError ? e.statusCode : undefined;
  if (status === 401 || status === 403) {
    const page = `${env.endpoint}/${ref.repo}`;
    return new UserError(
      env.token
        ? `access denied (HTTP ${status}) with your token: accept the licence at ${page} with the account the token belongs to`
        : `access denied (HTTP ${status}): a gated or private model; accept its licence at ${page}, then set HF_TOKEN (or run: hf auth login)`,
      id,
    );
  }
  if (status === 404) return new UserError(`no such folder, and no model or revision by that name on ${env.endpoint}`, id);
  if (e instanceof TypeError && /access token/.test(e.message)) return new UserError(`HF_TOKEN: ${e.message}`, id);
  if (status !== undefined) return new UserError(`the Hub answered HTTP ${status} to the ${what} request: ${oneLine(e)}`, id);
  const cause = (e as { cause?: { code?: string; message?: string } }).cause;
  return new UserError(`no such folder, and cannot reach ${env.endpoint} to fetch it as a Hub id (${cause?.code ?? cause?.message ?? oneLine(e)}); HF_HUB_OFFLINE=1 uses the cache only`, id);
}

interface FetchContext {
  env: HubEnv;
  ref: HubRef;
  commit: string;
  storage: string;
  onProgress?: (p: DownloadProgress) => void;
}

/** Puts `file` into the snapshot: a relative symlink to its blob, fetching the blob unless it is there already. */
async function ensureFile(ctx: FetchContext, file: string, entry: { size: number; etag: string; lfs: boolean }): Promise<void> {
  if (file.split('/').some((p) => p === '..' || p === '') || path.isAbsolute(file)) throw new UserError(`refusing a file path outside the snapshot: ${file}`, ctx.ref.repo);
  const pointer = path.join(ctx.storage, 'snapshots', ctx.commit, file);
  if (fs.existsSync(pointer)) return;
  const blob = path.join(ctx.storage, 'blobs', entry.etag);
  fs.mkdirSync(path.dirname(blob), { recursive: true });
  if (!fs.existsSync(blob)) {
    // one writer per blob across processes; huggingface_hub's own locks (fcntl) are not reachable from Node
    const lockDir = path.join(ctx.env.cache, '.locks', path.basename(ctx.storage));
    fs.mkdirSync(lockDir, { recursive: true });
    let compromised: Error | undefined;
    const release = await lockfile.lock(blob, {
      realpath: false,
      lockfilePath: path.join(lockDir, `${entry.etag}.emosllm.lock`),
      stale: 30_000,
      update: 5_000,
      retries: { forever: true, minTimeout: 100, maxTimeout: 1000 },
      onCompromised: (err) => {
        compromised = err;
      },
    });
    try {
      if (!fs.existsSync(blob)) await downloadBlob(ctx, file, entry, blob);
      if (compromised) throw new UserError(`the download lock was lost (${compromised.message}); run again`, blob);
    } finally {
      await release().catch(() => {});
    }
  }
  fs.mkdirSync(path.dirname(pointer), { recursive: true });
  try {
    fs.symlinkSync(path.relative(path.dirname(pointer), blob), pointer);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
}

/** A new hash of the blob's bytes: sha256 for LFS files (their ETag), git's blob sha1 for the others (theirs). */
function blobHash(entry: { size: number; lfs: boolean }): crypto.Hash {
  const h = crypto.createHash(entry.lfs ? 'sha256' : 'sha1');
  if (!entry.lfs) h.update(`blob ${entry.size}\0`);
  return h;
}

const ATTEMPTS = 3;

/**
 * Fetches a blob into `<blob>.incomplete`, continuing what an earlier (killed or cut) attempt left with a Range
 * request, checks its size and hash, then renames it into place. A cut connection is retried (resuming) twice.
 */
async function downloadBlob(ctx: FetchContext, file: string, entry: { size: number; etag: string; lfs: boolean }, blob: string): Promise<void> {
  const { env, ref } = ctx;
  const id = `${ref.repo}@${ref.revision}`;
  const credentials = env.token ? { accessToken: env.token } : {};
  const info = await hubCall(env, ref, 'resolve', () => fileDownloadInfo({ repo: ref.repo, path: file, revision: ctx.commit, hubUrl: env.endpoint, ...credentials }));
  if (!info) throw new UserError(`${file} is listed but the Hub has no content for it`, id);
  const incomplete = `${blob}.incomplete`;
  let lastError: unknown;
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    let have = fs.statSync(incomplete, { throwIfNoEntry: false })?.size ?? 0;
    if (have > entry.size) {
      fs.truncateSync(incomplete, 0);
      have = 0;
    }
    let hash = blobHash(entry);
    if (have > 0) for await (const chunk of fs.createReadStream(incomplete, { end: have - 1 })) hash.update(chunk as Buffer);
    try {
      if (have < entry.size) {
        // the client's ranged blobs hide the response status, and a server that ignores Range must restart the
        // file rather than have its whole body appended: this one request is made here
        const res = await fetch(info.url, {
          headers: { ...(env.token ? { Authorization: `Bearer ${env.token}` } : {}), ...(have > 0 ? { Range: `bytes=${have}-` } : {}) },
        });
        if (res.status === 401 || res.status === 403) throw hubError(env, ref, 'download', new HubApiError(info.url, res.status));
        if (!res.ok || !res.body) throw new UserError(`HTTP ${res.status} downloading ${file}`, id);
        if (have > 0 && res.status !== 206) {
          // the server sent the whole file: write it from byte 0
          fs.truncateSync(incomplete, 0);
          have = 0;
          hash = blobHash(entry);
        }
        await appendBody(ctx, file, entry, incomplete, res.body, hash, have);
      }
      finish(ctx, file, entry, blob, incomplete, hash);
      return;
    } catch (e) {
      if (e instanceof UserError) throw e;
      lastError = e; // a cut connection: what arrived is on disk, the next attempt resumes from there
    }
  }
  throw new UserError(`the download of ${file} was interrupted ${ATTEMPTS} times (${oneLine(lastError)}); run again to resume it`, id);
}

async function appendBody(ctx: FetchContext, file: string, entry: { size: number }, incomplete: string, body: ReadableStream<Uint8Array>, hash: crypto.Hash, have: number): Promise<void> {
  const fd = fs.openSync(incomplete, 'a');
  try {
    ctx.onProgress?.({ repo: ctx.ref.repo, file, done: have, total: entry.size });
    for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
      let off = 0;
      while (off < chunk.byteLength) off += fs.writeSync(fd, chunk, off);
      hash.update(chunk);
      have += chunk.byteLength;
      ctx.onProgress?.({ repo: ctx.ref.repo, file, done: have, total: entry.size });
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Size and hash checked, the blob takes its final name; a bad file is deleted (never kept as the blob). */
function finish(ctx: FetchContext, file: string, entry: { size: number; etag: string; lfs: boolean }, blob: string, incomplete: string, hash: crypto.Hash): void {
  const id = `${ctx.ref.repo}@${ctx.ref.revision}`;
  const size = fs.statSync(incomplete).size;
  const digest = hash.digest('hex');
  if (size !== entry.size || digest !== entry.etag) {
    fs.rmSync(incomplete, { force: true });
    throw new UserError(
      `${file} failed verification (${size} bytes, ${entry.lfs ? 'sha256' : 'git sha1'} ${digest.slice(0, 12)}; expected ${entry.size} bytes, ${entry.etag.slice(0, 12)}): deleted, run again`,
      id,
    );
  }
  fs.renameSync(incomplete, blob);
}
