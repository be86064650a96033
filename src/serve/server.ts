/**
 * `emosllm serve`: the HTTP inference server (fastify).
 *
 *   POST /v1/emotion   audio in, {label, probabilities, seconds, segments, model, elapsed_ms} out
 *   GET  /healthz      200 {status: "ok", running, waiting, uploading} once the model is loaded; 503 {status:
 *                      "loading" | "shutting_down", ...} before and while draining
 *   GET  /v1/model     labels, encoder, LLM, audio settings and the server's limits
 *
 * POST /v1/emotion takes either the raw audio bytes as the body (Content-Type audio/*, video/*,
 * application/ogg, application/octet-stream, or none; any format decodeAudioFile reads: WAV, FLAC, MP3,
 * Ogg Vorbis/Opus, M4A, WebM) with options as query parameters, or a multipart/form-data form with the file
 * field "audio" and the options as fields. Options: transcript, labels (comma-separated label set), segment
 * (auto | whole | window | vad), window and hop (seconds). Prediction is predictSamples (eval/predict.ts).
 *
 * Every error is JSON {error: {code, message}} with a one-line message, never a stack trace. The status codes
 * and when each is sent are listed in src/serve/README.md (keep it in step with this file).
 *
 * Slow clients: the whole request (headers and body) must arrive within --body-timeout, else 408 and the
 * connection is closed; an upload holds no place in the work queue, only one of --max-uploads (and of
 * --max-uploads-per-client for its address). A request joins the queue (one running, at most --queue waiting)
 * once its body is in, and --timeout counts from then.
 *
 * Shutdown (close(), SIGTERM / SIGINT in the CLI): stop accepting connections, answer new requests on open ones
 * 503 shutting_down without reading their bodies, cut the uploads in progress, answer the waiting requests 503
 * shutting_down and let the running one finish; past --drain-timeout it is answered 503 too and every
 * connection is closed. Then the model is released.
 * One line per request goes to the log (stderr): method, path, status, milliseconds.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import multipart from '@fastify/multipart';
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify';
import { DECODE_DEFAULTS, loadAudio16k, probeAudio, sniffFormat } from '../audio/decode.ts';
import { ClipTooShortError, MIN_CLIP_SECONDS, SEGMENT_DEFAULTS, SEGMENT_MODES } from '../audio/segments.ts';
import { type ClipPrediction, type PredictOptions, predictSamples } from '../eval/predict.ts';
import { EmoSLLM, MODEL_FILE } from '../models/emosllm.ts';
import { UserError, oneLine } from '../util/errors.ts';
import { HttpError, errorBody } from './errors.ts';
import { PARAM_LIMITS, parseParams } from './params.ts';
import { WorkQueue } from './queue.ts';

export const SERVE_DEFAULTS = {
  host: '127.0.0.1',
  port: 8080,
  /** largest request body / form file */
  maxBytes: 50 * 1024 * 1024,
  /** longest audio */
  maxSeconds: 600,
  /** per request, from the end of the upload to the answer (queueing included) */
  timeoutMs: 120_000,
  /**
   * requests waiting behind the running one. 64: a burst of a few dozen concurrent clients (the bench's 50) is
   * queued rather than turned away; with the tiny model a 3 s clip takes ~30 ms, so a full queue waits ~2 s.
   */
  queue: 64,
  /** the whole request (headers and body) must arrive within it; a stalled upload is cut (408) */
  bodyTimeoutMs: 30_000,
  /** uploads in progress at once (each may buffer up to maxBytes) */
  maxUploads: 64,
  /** uploads in progress at once from one client address */
  maxUploadsPerClient: 8,
  /** on close, how long the running request may take before it is answered 503 and every connection closed */
  drainTimeoutMs: 10_000,
} as const;

export interface ServeOptions {
  /** a trained model folder, or an already loaded model (then the caller keeps it: close() does not release it) */
  model: string | EmoSLLM;
  /** name reported as "model" (default: the model folder's name) */
  name?: string;
  host?: string;
  /** 0 = a free port */
  port?: number;
  maxBytes?: number;
  maxSeconds?: number;
  timeoutMs?: number;
  queue?: number;
  bodyTimeoutMs?: number;
  maxUploads?: number;
  maxUploadsPerClient?: number;
  drainTimeoutMs?: number;
  /** bearer token required on every route but /healthz (unset or empty: no auth) */
  token?: string;
  /** log lines (default: stderr) */
  log?: (line: string) => void;
  /** resolve startServer only once the model is loaded and warmed up (default true) */
  waitReady?: boolean;
}

export interface ServerStats {
  state: ServerState;
  /** a request is being processed */
  running: boolean;
  /** requests waiting behind it */
  waiting: number;
  /** uploads in progress (POST /v1/emotion whose body is not in yet) */
  uploading: number;
}

export interface ServerHandle {
  url: string;
  host: string;
  port: number;
  /** resolves once the model is loaded and warmed up (rejects when loading fails; the server is then closed) */
  ready: Promise<void>;
  /**
   * graceful: stop accepting, cut the uploads in progress, answer the waiting requests 503 shutting_down, let the
   * running one finish (at most drainTimeoutMs), release the model
   */
  close(): Promise<void>;
  stats(): ServerStats;
}

export type ServerState = 'loading' | 'ready' | 'closing' | 'closed' | 'failed';

const SR = 16000;
const SUPPORTED = 'WAV, FLAC, MP3, Ogg Vorbis, Opus, M4A/MP4 (AAC), WebM';
const RAW_TYPES = /^(audio\/[\w.+-]+|video\/[\w.+-]+|application\/ogg|application\/octet-stream)$/;

/** A short non-silent signal that compiles every session before the server says it is ready. */
function warmupSignal(seconds: number): Float32Array {
  const x = new Float32Array(Math.round(seconds * SR));
  for (let i = 0; i < x.length; i++) x[i] = 0.1 * Math.sin((2 * Math.PI * 220 * i) / SR) + 0.05 * Math.sin((2 * Math.PI * 660 * i) / SR);
  return x;
}

function urlPath(url: string): string {
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}

function sameToken(given: string, want: string): boolean {
  const a = crypto.createHash('sha256').update(given).digest();
  const b = crypto.createHash('sha256').update(want).digest();
  return crypto.timingSafeEqual(a, b);
}

function positiveInt(name: string, v: number, min = 1): number {
  if (!Number.isInteger(v) || v < min) throw new UserError(`${name} must be an integer >= ${min}, got ${v}`);
  return v;
}

function positiveMs(name: string, v: number): number {
  if (!(v > 0) || !Number.isFinite(v)) throw new UserError(`${name} must be > 0, got ${v}`);
  return v;
}

const shuttingDown = () => new HttpError(503, 'shutting_down', 'the server is shutting down', { 'Retry-After': '5' });
/** the reason a request's work is aborted when its client went away (never sent: there is no one to send it to) */
const clientGone = () => new HttpError(499, 'client_closed', 'the client closed the connection');

/** Starts the server; resolves once it listens (and, unless waitReady is false, once the model is ready). */
export async function startServer(opts: ServeOptions): Promise<ServerHandle> {
  const host = opts.host ?? SERVE_DEFAULTS.host;
  const port = opts.port ?? SERVE_DEFAULTS.port;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UserError(`port must be an integer 0-65535, got ${port}`);
  const maxBytes = positiveInt('maxBytes', opts.maxBytes ?? SERVE_DEFAULTS.maxBytes);
  const maxSeconds = opts.maxSeconds ?? SERVE_DEFAULTS.maxSeconds;
  if (!(maxSeconds > 0)) throw new UserError(`maxSeconds must be > 0, got ${maxSeconds}`);
  const timeoutMs = positiveMs('timeoutMs', opts.timeoutMs ?? SERVE_DEFAULTS.timeoutMs);
  const queueSize = positiveInt('queue', opts.queue ?? SERVE_DEFAULTS.queue, 0);
  const bodyTimeoutMs = positiveMs('bodyTimeoutMs', opts.bodyTimeoutMs ?? SERVE_DEFAULTS.bodyTimeoutMs);
  const maxUploads = positiveInt('maxUploads', opts.maxUploads ?? SERVE_DEFAULTS.maxUploads);
  const maxUploadsPerClient = positiveInt('maxUploadsPerClient', opts.maxUploadsPerClient ?? SERVE_DEFAULTS.maxUploadsPerClient);
  const drainTimeoutMs = positiveMs('drainTimeoutMs', opts.drainTimeoutMs ?? SERVE_DEFAULTS.drainTimeoutMs);
  const token = opts.token || undefined;
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const ownsModel = typeof opts.model === 'string';
  if (typeof opts.model === 'string' && !fs.existsSync(path.join(opts.model, MODEL_FILE)))
    throw new UserError(`not an emosllm model folder (no ${MODEL_FILE})`, opts.model);
  const name = opts.name ?? (typeof opts.model === 'string' ? path.basename(path.resolve(opts.model)) : 'emosllm');

  let state: ServerState = 'loading';
  let model: EmoSLLM | undefined;
  const queue = new WorkQueue(queueSize);
  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-serve-'));
  const removeTmp = () => fs.rmSync(tmpDir, { recursive: true, force: true });
  process.on('exit', removeTmp); // also when the process exits without close() (a second SIGTERM)
  let nextFile = 0;
  /** when each request arrived (for elapsed_ms and the log line) */
  const arrived = new WeakMap<IncomingMessage, number>();
  /** uploads in progress (their client's address), to cap them and to cut them on close */
  const uploads = new Map<FastifyReply, string>();
  const uploadsByClient = new Map<string, number>();
  /** requests past their upload, until answered: close() aborts them once the drain timeout is over */
  const inFlight = new Set<AbortController>();

  // Node's http server cuts a request that is not in after requestTimeout, checking every `check` ms: cut at
  // most bodyTimeoutMs after its first byte, at least bodyTimeoutMs - check.
  const check = Math.max(1, Math.floor(Math.min(1000, bodyTimeoutMs / 4)));
  const receiveMs = Math.max(1, Math.round(bodyTimeoutMs - check));
  const app = Fastify({
    logger: false,
    bodyLimit: maxBytes,
    requestTimeout: receiveMs,
    http: { requestTimeout: receiveMs, headersTimeout: receiveMs, connectionsCheckingInterval: check },
    // we answer 503 ourselves while draining, in our own error format
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    // malformed HTTP and uploads past --body-timeout (never reach a route): answered in our error format too
    clientErrorHandler: (err: NodeJS.ErrnoException, socket) => {
      if (err.code === 'ECONNRESET' || !socket.writable) {
        socket.destroy();
        return;
      }
      const [status, reason, code, message] =
        err.code === 'HPE_HEADER_OVERFLOW'
          ? [431, 'Request Header Fields Too Large', 'headers_too_large', 'the request headers are too large']
          : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
            ? [408, 'Request Timeout', 'request_timeout', `the request (headers and body) did not arrive within ${bodyTimeoutMs / 1000} s (--body-timeout)`]
            : [400, 'Bad Request', 'bad_request', 'malformed HTTP request'];
      const body = JSON.stringify(errorBody(code, message));
      log(`- - ${status} (${err.code ?? 'client error'})`);
      // destroyed once written: a stalled client would otherwise keep the half-closed socket open
      socket.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`, () => socket.destroy());
    },
  });

  const bodyTooLarge = () => new HttpError(413, 'body_too_large', `the request body is over the ${maxBytes}-byte limit (--max-bytes)`);
  const timedOut = () => new HttpError(504, 'timeout', `the request took longer than ${timeoutMs / 1000} s (--timeout)`);

  /** Any error as a status, code and one-line message. */
  function toHttp(err: unknown): HttpError {
    if (err instanceof HttpError) return err;
    const e = err as { code?: string; statusCode?: number };
    switch (e.code) {
      case 'FST_ERR_CTP_BODY_TOO_LARGE':
      case 'FST_REQ_FILE_TOO_LARGE':
        return bodyTooLarge();
      case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
        return new HttpError(415, 'unsupported_content_type', 'unsupported Content-Type');
      case 'FST_PARTS_LIMIT':
      case 'FST_FILES_LIMIT':
      case 'FST_FIELDS_LIMIT':
      case 'FST_PROTO_VIOLATION':
      case 'FST_INVALID_MULTIPART_CONTENT_TYPE':
        return new HttpError(400, 'bad_multipart', `bad multipart form: ${oneLine(err)}`);
    }
    if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) return new HttpError(e.statusCode, 'bad_request', oneLine(err));
    return new HttpError(500, 'internal', 'internal server error (see the server log)');
  }

  app.setErrorHandler((err, req, reply) => {
    const h = toHttp(err);
    if (h.status === 500) {
      log(`error: ${req.method} ${urlPath(req.url)}: ${oneLine(err)}`);
      if (process.env.EMOSLLM_DEBUG) log(String((err as Error)?.stack ?? err));
    }
    void reply.code(h.status).headers(h.headers).send(errorBody(h.code, h.message));
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send(errorBody('not_found', `no route ${req.method} ${urlPath(req.url)} (routes: POST /v1/emotion, GET /v1/model, GET /healthz)`));
  });

  /** Counts an upload until its body is in or its request ends; refuses it past --max-uploads(-per-client). */
  function admitUpload(req: FastifyRequest, reply: FastifyReply): void {
    const client = req.socket.remoteAddress ?? '';
    const fromClient = uploadsByClient.get(client) ?? 0;
    // the unread body is not drained: the connection closes after the answer
    const refuse = { 'Retry-After': '1', Connection: 'close' };
    if (uploads.size >= maxUploads)
      throw new HttpError(503, 'too_many_uploads', `the server is receiving ${uploads.size} uploads, its limit (--max-uploads ${maxUploads}); retry later`, refuse);
    if (fromClient >= maxUploadsPerClient)
      throw new HttpError(429, 'too_many_uploads', `${fromClient} uploads from this address are in progress, its limit (--max-uploads-per-client ${maxUploadsPerClient}); retry later`, refuse);
    uploads.set(reply, client);
    uploadsByClient.set(client, fromClient + 1);
    const done = () => {
      if (!uploads.delete(reply)) return;
      const n = uploadsByClient.get(client)! - 1;
      if (n) uploadsByClient.set(client, n);
      else uploadsByClient.delete(client);
    };
    req.raw.once('end', done);
    reply.raw.once('close', done);
  }

  /** On close: an upload in progress is answered 503 and its connection closed, whatever is still to come. */
  function cutUpload(reply: FastifyReply): void {
    const socket = reply.raw.socket;
    if (reply.sent || !socket) {
      socket?.destroy();
      return;
    }
    reply.raw.once('finish', () => socket.destroy());
    const h = shuttingDown();
    void reply.code(h.status).headers({ ...h.headers, Connection: 'close' }).send(errorBody(h.code, h.message));
  }

  app.addHook('onRequest', async (req, reply) => {
    const t0 = performance.now();
    arrived.set(req.raw, t0);
    reply.raw.once('close', () => {
      const status = reply.raw.writableFinished ? String(reply.raw.statusCode) : `${reply.raw.headersSent ? reply.raw.statusCode : '-'} (client closed)`;
      log(`${req.method} ${urlPath(req.url)} ${status} ${Math.round(performance.now() - t0)}ms`);
    });
    const route = req.routeOptions.url;
    if (route === '/healthz') return;
    if (state === 'closing' || state === 'closed') {
      reply.header('Connection', 'close');
      throw shuttingDown();
    }
    if (token) {
      const h = req.headers.authorization;
      const m = h ? /^Bearer\s+(\S+)\s*$/i.exec(h) : null;
      if (!m) throw new HttpError(401, 'unauthorized', 'missing bearer token: send "Authorization: Bearer <token>"', { 'WWW-Authenticate': 'Bearer realm="emosllm"' });
      if (!sameToken(m[1], token)) throw new HttpError(401, 'unauthorized', 'invalid bearer token', { 'WWW-Authenticate': 'Bearer realm="emosllm", error="invalid_token"' });
    }
    if (route === '/v1/emotion' && req.method === 'POST') {
      if (state === 'loading') throw new HttpError(503, 'loading', 'the model is still loading', { 'Retry-After': '2' });
      if (state !== 'ready') throw new HttpError(503, 'unavailable', 'the model failed to load');
      admitUpload(req, reply);
    }
  });
  app.addHook('onSend', async (_req, reply) => {
    if (state === 'closing') reply.header('Connection', 'close');
  });

  // Raw bodies of any content type are buffered (up to maxBytes); the handler decides what it accepts.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: maxBytes }, (_req, body, done) => done(null, body));
  await app.register(multipart, { limits: { fileSize: maxBytes, files: 1, fields: 16, parts: 17, fieldSize: 64 * 1024, headerPairs: 100 } });

  app.get('/healthz', async (_req, reply) => {
    const load = { running: queue.busy ? 1 : 0, waiting: queue.queued, uploading: uploads.size };
    if (state === 'ready') return { status: 'ok', ...load };
    return reply.code(503).header('Retry-After', '2').send({ status: state === 'loading' ? 'loading' : state === 'failed' ? 'failed' : 'shutting_down', ...load });
  });

  app.get('/v1/model', async () => {
    const m = model;
    if (!m) throw new HttpError(503, 'loading', 'the model is still loading', { 'Retry-After': '2' });
    const s = m.spec;
    return {
      name,
      labels: s.labels,
      encoder: s.encoder.kind === 'hf' ? { kind: 'hf', name: path.basename(s.encoder.path) } : s.encoder,
      encoderLayers: s.encoderLayers,
      frameRate: m.frameRate,
      llm: {
        name: path.basename(m.llmDir()),
        ...(s.llm.builtin ? { builtin: s.llm.builtin } : {}),
        hiddenSize: m.llm.config.hiddenSize,
        layers: m.llm.config.numHiddenLayers,
        vocabSize: m.llm.config.vocabSize,
      },
      llmTrain: s.llmTrain,
      ...(s.lora ? { lora: s.lora } : {}),
      prompt: { useTranscript: s.prompt.useTranscript },
      audio: { ...s.audio, sampleRate: SR },
      segment: { modes: SEGMENT_MODES, default: SEGMENT_DEFAULTS.segment, windowSeconds: s.audio.trainCropSeconds, hopSeconds: s.audio.trainCropSeconds / 2, wholeMaxSeconds: SEGMENT_DEFAULTS.wholeMaxSeconds },
      limits: { maxBytes, maxSeconds, timeoutMs, queue: queueSize, bodyTimeoutMs, maxUploads, maxUploadsPerClient, drainTimeoutMs, ...PARAM_LIMITS },
    };
  });

  /** The form's file "audio" and its fields; any malformed form (a missing or wrong boundary, cut off) is a 400. */
  async function readForm(req: FastifyRequest): Promise<{ bytes?: Buffer; params: Record<string, unknown> }> {
    let bytes: Buffer | undefined;
    const params: Record<string, unknown> = {};
    try {
      for await (const part of req.parts()) {
        if (part.type === 'file') {
          if (part.fieldname !== 'audio') throw new HttpError(400, 'bad_multipart', `unexpected file field ${JSON.stringify(part.fieldname)}: send the audio as the file field "audio"`);
          if (bytes) throw new HttpError(400, 'bad_multipart', 'more than one "audio" file in the form');
          bytes = await part.toBuffer();
        } else {
          if (part.fieldname === 'audio') throw new HttpError(400, 'bad_multipart', 'the field "audio" must be a file (e.g. curl -F audio=@clip.wav)');
          if (part.valueTruncated) throw new HttpError(400, 'bad_parameter', `field ${part.fieldname} is too long`);
          const v = String(part.value);
          params[part.fieldname] = part.fieldname in params ? [params[part.fieldname], v] : v;
        }
      }
    } catch (e) {
      const h = toHttp(e);
      // what is left is the form parser's own complaint (busboy: "Boundary not found", "Unexpected end of form")
      throw h.status === 500 ? new HttpError(400, 'bad_multipart', `bad multipart form: ${oneLine(e)}`) : h;
    }
    if (!bytes) throw new HttpError(400, 'empty_body', 'the form has no file field "audio"');
    return { bytes, params };
  }

  /** The audio bytes and raw options of a request, from a multipart form or a raw body + query. */
  async function readInput(req: FastifyRequest): Promise<{ bytes?: Buffer; params: Record<string, unknown> }> {
    if (req.isMultipart()) return readForm(req);
    const ct = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (ct && !RAW_TYPES.test(ct))
      throw new HttpError(415, 'unsupported_content_type', `Content-Type ${ct} is not accepted: send the audio bytes as audio/* or application/octet-stream, or a multipart/form-data form with the file field "audio"`);
    return { bytes: Buffer.isBuffer(req.body) ? req.body : undefined, params: { ...(req.query as Record<string, unknown>) } };
  }

  /** A decoding UserError as the answer the client gets (the temp file's path never leaks). */
  function audioError(e: UserError, file: string): HttpError {
    let msg = e.where === file ? e.message.slice(file.length + 2) : e.message;
    msg = msg.split(file).join('body');
    if (/\(maxSeconds\)/.test(msg)) return new HttpError(422, 'audio_too_long', msg.replace('(maxSeconds)', '(--max-seconds)'));
    if (/\(maxBytes\)/.test(msg)) return bodyTooLarge();
    if (/^silent:/.test(msg)) return new HttpError(422, 'silent_audio', `the audio is ${msg}: nothing to recognise`);
    return new HttpError(415, 'not_audio', `cannot decode the audio: ${msg}`);
  }

  app.post('/v1/emotion', async (req: FastifyRequest, reply: FastifyReply) => {
    const t0 = arrived.get(req.raw)!;
    const m = model!;
    const { bytes, params } = await readInput(req);
    // The body is in: from here the request counts against --timeout and may take a place in the queue.
    if (state !== 'ready') throw shuttingDown();
    const o: PredictOptions = parseParams(params, m);
    if (!bytes || bytes.length === 0) throw new HttpError(400, 'empty_body', 'the request has no audio: send the audio bytes as the body, or as the file field "audio" of a multipart form');
    const format = sniffFormat(bytes.subarray(0, 4096));
    if (!format) throw new HttpError(415, 'not_audio', `the body is not audio in a supported format (${SUPPORTED})`);

    // A timed-out request (or one cut by the drain) is answered at once; its job stops at the next segment.
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(timedOut()), timeoutMs);
    reply.raw.once('close', () => ac.abort(clientGone())); // finished, or the client left: nothing to do any more
    inFlight.add(ac);
    const file = path.join(tmpDir, `req-${++nextFile}.${format}`);
    const work = (async (): Promise<ClipPrediction> => {
      await fs.promises.writeFile(file, bytes);
      if (format === 'wav') {
        // header only: a too long or broken WAV is refused without waiting in the queue
        try {
          const p = await probeAudio(file);
          if (p.durationS > maxSeconds) throw new HttpError(422, 'audio_too_long', `audio is ${p.durationS.toFixed(1)} s long, over the ${maxSeconds} s limit (--max-seconds)`);
        } catch (e) {
          throw e instanceof UserError ? audioError(e, file) : e;
        }
      }
      if (state !== 'ready') throw shuttingDown();
      if (queue.full)
        throw new HttpError(503, 'queue_full', `the server is busy: 1 request running and ${queueSize} waiting (--queue ${queueSize}); retry later`, {
          'Retry-After': String(queue.retryAfterSeconds()),
        });
      return queue.run(ac.signal, async () => {
        ac.signal.throwIfAborted();
        let samples: Float32Array;
        try {
          samples = await loadAudio16k(file, { maxSeconds, maxBytes, timeoutMs: Math.min(DECODE_DEFAULTS.timeoutMs, timeoutMs) });
        } catch (e) {
          throw e instanceof UserError ? audioError(e, file) : e;
        }
        try {
          return await predictSamples(m, samples, { ...o, signal: ac.signal });
        } catch (e) {
          ac.signal.throwIfAborted();
          if (e instanceof ClipTooShortError) throw new HttpError(422, e.code, `the audio is too short: ${(e.seconds * 1000).toFixed(1)} ms, the minimum is ${MIN_CLIP_SECONDS * 1000} ms`);
          throw e instanceof UserError ? new HttpError(400, 'bad_parameter', oneLine(e)) : e;
        }
      });
    })();
    void work.catch(() => undefined).finally(() => fs.promises.rm(file, { force: true }).catch(() => undefined));
    const aborted = new Promise<never>((_, reject) => ac.signal.addEventListener('abort', () => reject(ac.signal.reason), { once: true }));
    let r: ClipPrediction;
    try {
      r = await Promise.race([work, aborted]);
    } finally {
      clearTimeout(timer);
      inFlight.delete(ac);
    }
    return { label: r.label, probabilities: r.probabilities, seconds: r.seconds, segments: r.segments, model: name, elapsed_ms: Math.round(performance.now() - t0) };
  });

  try {
    await app.listen({ host, port });
  } catch (e) {
    removeTmp();
    process.off('exit', removeTmp);
    throw new UserError(`cannot listen on ${host}:${port}: ${(e as NodeJS.ErrnoException).code ?? oneLine(e)}`);
  }
  const addr = app.server.address() as AddressInfo;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${addr.port}`;

  const ready = (async () => {
    await new Promise((r) => setImmediate(r)); // let listen() return first: /healthz answers 503 while we load
    model = typeof opts.model === 'string' ? EmoSLLM.load(opts.model) : opts.model;
    await predictSamples(model, warmupSignal(model.spec.audio.trainCropSeconds || 3), { segment: 'whole' });
    if (state === 'loading') state = 'ready';
  })();

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      if (state !== 'failed') state = 'closing';
      await ready.catch(() => undefined);
      const stopped = app.close(); // stops accepting; resolves once every connection has ended
      for (const reply of [...uploads.keys()]) cutUpload(reply);
      queue.rejectWaiting(shuttingDown());
      const drainOver = setTimeout(() => {
        for (const ac of inFlight) ac.abort(shuttingDown());
        setImmediate(() => app.server.closeAllConnections()); // once those 503s are written
      }, drainTimeoutMs);
      try {
        await stopped;
      } finally {
        clearTimeout(drainOver);
      }
      await queue.drained(); // a job cut by the drain (or whose request timed out) stops at its next segment
      if (ownsModel && model) await model.release();
      model = undefined;
      removeTmp();
      process.off('exit', removeTmp);
      if (state !== 'failed') state = 'closed';
    })());

  const readyOrClose = ready.catch(async (e) => {
    state = 'failed';
    await close();
    throw e;
  });
  const handle: ServerHandle = {
    url,
    host,
    port: addr.port,
    ready: readyOrClose,
    close,
    stats: () => ({ state, running: queue.busy, waiting: queue.queued, uploading: uploads.size }),
  };
  if (opts.waitReady === false) readyOrClose.catch(() => undefined);
  else await readyOrClose;
  return handle;
}
