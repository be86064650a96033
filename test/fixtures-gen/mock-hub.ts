/**
 * A loopback stand-in for the Hugging Face Hub's HTTP API, serving local folders as model repositories: the
 * subset @huggingface/hub and src/io/hub.ts use. Revision info (GET /api/models/ORG/NAME/revision/REV), the file
 * tree (GET /api/models/ORG/NAME/tree/REV?recursive=true), and resolve (GET /ORG/NAME/resolve/REV/PATH): small
 * files answer directly with their git ETag, LFS files (.safetensors, .bin) redirect to a content URL
 * (/cdn/SHA256) with X-Linked-Etag / X-Linked-Size; every answer carries X-Repo-Commit; content honours Range
 * (206 + Content-Range). A gated repository answers 401 without the right bearer token. Every request is
 * recorded, and a download can be cut mid-body, corrupted or slowed, to test resuming, checksums and locking.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

export interface MockRepo {
  /** revision name (main, a tag, refs/pr/1) -> the folder served at that revision */
  revisions: Record<string, string>;
  /** answer 401 unless the request carries `Authorization: Bearer <token>` */
  gatedToken?: string;
}

export interface MockRequest {
  method: string;
  url: string;
  range?: string;
}

interface FileEntry {
  path: string;
  abs: string;
  size: number;
  gitOid: string;
  sha256?: string;
}

interface Revision {
  commit: string;
  files: Map<string, FileEntry>;
}

const isLfs = (f: string) => /\.(safetensors|bin|onnx)$/.test(f);

function walk(dir: string, base = ''): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(dir, base), { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const rel = base ? `${base}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...walk(dir, rel));
    else if (fs.statSync(path.join(dir, rel)).isFile()) out.push(rel);
  }
  return out;
}

function snapshotOf(repo: string, revision: string, dir: string): Revision {
  const files = new Map<string, FileEntry>();
  const commit = crypto.createHash('sha1').update(`${repo}@${revision}\n`);
  for (const rel of walk(dir)) {
    const abs = path.join(dir, rel);
    const data = fs.readFileSync(abs);
    const gitOid = crypto.createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
    const sha256 = isLfs(rel) ? crypto.createHash('sha256').update(data).digest('hex') : undefined;
    files.set(rel, { path: rel, abs, size: data.length, gitOid, sha256 });
    commit.update(`${rel} ${gitOid}\n`);
  }
  return { commit: commit.digest('hex'), files };
}

export interface MockHub {
  url: string;
  requests: MockRequest[];
  /** the commit a revision of a repository is served as */
  commit(repo: string, revision?: string): string;
  /** the next `times` downloads of `file` stop after `afterBytes` bytes of body (the socket is destroyed) */
  cut(file: string, afterBytes: number, times: number): void;
  /** the next download of `file` has one byte flipped */
  corrupt(file: string): void;
  /** content goes out in `chunk`-byte pieces `delayMs` apart */
  slow(chunk: number, delayMs: number): void;
  close(): Promise<void>;
}

export async function startMockHub(repos: Record<string, MockRepo>): Promise<MockHub> {
  const revs = new Map<string, Revision>(); // `${repo}@${revision}` and `${repo}@${commit}`
  const blobs = new Map<string, FileEntry>();
  for (const [repo, r] of Object.entries(repos)) {
    for (const [rev, dir] of Object.entries(r.revisions)) {
      const s = snapshotOf(repo, rev, dir);
      revs.set(`${repo}@${rev}`, s);
      revs.set(`${repo}@${s.commit}`, s);
      for (const f of s.files.values()) if (f.sha256) blobs.set(f.sha256, f);
    }
  }
  const requests: MockRequest[] = [];
  const cuts = new Map<string, { afterBytes: number; times: number }>();
  const corrupt = new Set<string>();
  let pace: { chunk: number; delayMs: number } | undefined;

  const json = (res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
  const denied = (req: http.IncomingMessage, repo: string) => {
    const token = repos[repo]?.gatedToken;
    return token !== undefined && req.headers.authorization !== `Bearer ${token}`;
  };

  async function sendContent(req: http.IncomingMessage, res: http.ServerResponse, f: FileEntry, headers: Record<string, string>) {
    let data = fs.readFileSync(f.abs);
    const isProbe = req.headers.range === 'bytes=0-0'; // the client's size probe is never cut or corrupted
    if (!isProbe && corrupt.delete(f.path)) {
      data = Buffer.from(data);
      data[data.length >> 1] ^= 0xff;
    }
    let start = 0;
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '') ?? /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    let end = data.length;
    if (m) {
      start = Number(m[1]);
      if (m[2] !== undefined) end = Math.min(data.length, Number(m[2]) + 1);
      if (start >= data.length) {
        res.writeHead(416, { 'Content-Range': `bytes */${data.length}` });
        res.end();
        return;
      }
    }
    const body = data.subarray(start, end);
    res.writeHead(m ? 206 : 200, {
      ...headers,
      'Accept-Ranges': 'bytes',
      'Content-Length': String(body.length),
      'Content-Type': 'application/octet-stream',
      ...(m ? { 'Content-Range': `bytes ${start}-${end - 1}/${data.length}` } : {}),
    });
    const cut = cuts.get(f.path);
    if (cut && !isProbe && cut.times > 0) {
      cut.times--;
      res.write(body.subarray(0, Math.min(cut.afterBytes, body.length)), () => setTimeout(() => res.destroy(), 20));
      return;
    }
    if (!pace || isProbe) {
      res.end(body);
      return;
    }
    for (let i = 0; i < body.length; i += pace.chunk) {
      res.write(body.subarray(i, i + pace.chunk));
      await new Promise((r) => setTimeout(r, pace!.delayMs));
    }
    res.end();
  }

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    requests.push({ method: req.method ?? '', url: req.url ?? '', range: req.headers.range });
    const p = url.pathname;
    let m: RegExpExecArray | null;
    if ((m = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/(.+)$/.exec(p))) {
      const repo = m[1];
      const s = revs.get(`${repo}@${decodeURIComponent(m[2])}`);
      if (!repos[repo]) return json(res, 404, { error: 'Repository not found' }, { 'X-Error-Code': 'RepoNotFound' });
      if (!s) return json(res, 404, { error: 'Invalid rev id' }, { 'X-Error-Code': 'RevisionNotFound' });
      return json(res, 200, { _id: repo, id: repo, sha: s.commit, private: false, gated: repos[repo].gatedToken ? 'manual' : false, downloads: 0, likes: 0, tags: [], siblings: [...s.files.keys()].map((rfilename) => ({ rfilename })) });
    }
    if ((m = /^\/api\/models\/([^/]+\/[^/]+)\/tree\/(.+)$/.exec(p))) {
      const repo = m[1];
      if (!repos[repo]) return json(res, 404, { error: 'Repository not found' }, { 'X-Error-Code': 'RepoNotFound' });
      if (denied(req, repo)) return json(res, 401, { error: `Access to model ${repo} is restricted. You must have access to it and be authenticated to access it.` }, { 'X-Error-Code': 'GatedRepo' });
      const s = revs.get(`${repo}@${decodeURIComponent(m[2])}`);
      if (!s) return json(res, 404, { error: 'Invalid rev id' }, { 'X-Error-Code': 'RevisionNotFound' });
      const dirs = new Set<string>();
      for (const f of s.files.keys()) for (let i = f.indexOf('/'); i >= 0; i = f.indexOf('/', i + 1)) dirs.add(f.slice(0, i));
      return json(res, 200, [
        ...[...dirs].sort().map((d) => ({ type: 'directory', oid: crypto.createHash('sha1').update(d).digest('hex'), size: 0, path: d })),
        ...[...s.files.values()].map((f) => ({
          type: 'file',
          oid: f.gitOid,
          size: f.sha256 ? 134 : f.size, // an LFS file's git object is its pointer
          path: f.path,
          ...(f.sha256 ? { lfs: { oid: f.sha256, size: f.size, pointerSize: 134 } } : {}),
        })),
      ]);
    }
    if ((m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(p))) {
      const repo = m[1];
      if (!repos[repo]) return json(res, 404, { error: 'Repository not found' }, { 'X-Error-Code': 'RepoNotFound' });
      if (denied(req, repo)) return json(res, 401, { error: `Access to model ${repo} is restricted.` }, { 'X-Error-Code': 'GatedRepo' });
      const s = revs.get(`${repo}@${decodeURIComponent(m[2])}`);
      if (!s) return json(res, 404, { error: 'Invalid rev id' }, { 'X-Error-Code': 'RevisionNotFound' });
      const f = s.files.get(decodeURIComponent(m[3]));
      if (!f) return json(res, 404, { error: 'Entry not found' }, { 'X-Error-Code': 'EntryNotFound' });
      const common = { 'X-Repo-Commit': s.commit };
      if (f.sha256) {
        res.writeHead(302, { ...common, Location: `/cdn/${f.sha256}`, ETag: `"${f.gitOid}"`, 'X-Linked-Etag': `"${f.sha256}"`, 'X-Linked-Size': String(f.size), 'Content-Length': '0' });
        res.end();
        return;
      }
      void sendContent(req, res, f, { ...common, ETag: `"${f.gitOid}"` });
      return;
    }
    if ((m = /^\/cdn\/([0-9a-f]{64})$/.exec(p))) {
      const f = blobs.get(m[1]);
      if (!f) return json(res, 404, { error: 'no such object' });
      void sendContent(req, res, f, { ETag: `"${f.sha256}"` });
      return;
    }
    json(res, 404, { error: `the mock Hub does not serve ${p}` });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    requests,
    commit: (repo, revision = 'main') => {
      const s = revs.get(`${repo}@${revision}`);
      if (!s) throw new Error(`mock hub: no ${repo}@${revision}`);
      return s.commit;
    },
    cut: (file, afterBytes, times) => cuts.set(file, { afterBytes, times }),
    corrupt: (file) => corrupt.add(file),
    slow: (chunk, delayMs) => {
      pace = { chunk, delayMs };
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
