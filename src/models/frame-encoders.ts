/**
 * The first stage of EmoSLLM, as a swappable piece: a frozen speech encoder that turns a 16 kHz clip into
 * hidden states ([frames, dim] per layer). Everything downstream (feature cache, batches, QPMapper) only sees
 * the FrameEncoder interface (src/models/encoder.ts), so encoders are interchangeable:
 *   - `fbank`: the built-in weight-free log-mel filterbank, with `stack` consecutive frames concatenated
 *     (100 fps -> 100/stack fps): fewer, wider frames for the mapper, which is what makes CPU training fast;
 *   - a Hugging Face wav2vec2 / HuBERT / WavLM folder: run frozen in an ONNX Runtime session, every hidden
 *     state returned, the waveform normalised as its preprocessor_config.json says.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { normalizeWaveformGraph } from '../audio/normalize.ts';
import { Graph, type Value } from '../graph/ir.ts';
import { type CompileOptions, type CompiledGraph, compile, tensor } from '../graph/runtime.ts';
import { folderOrCachedHub } from '../io/hub.ts';
import { UserError } from '../util/errors.ts';
import { type FrameEncoder, loadSpeechEncoder, type SpeechEncoder, type SpeechEncoderOutputs } from './encoder.ts';
import { type FbankOptions, FBANK_IMPL_VERSION, resolveFbankOptions } from './fbank.ts';
import { buildFbankGraph } from './fbank-graph.ts';
import { concat, constant, dimOf, div, fill, gather, int64s, maximum, mul, pad, range, reshapeTo, squeeze, sub, unsqueeze } from '../graph/ops.ts';

/** How a model folder names its encoder (emosllm.json "encoder"). */
export type EncoderSpec = { kind: 'fbank'; stack: number; options?: FbankOptions } | { kind: 'hf'; path: string; hub?: string };

/**
 * The fbank encoder's graph, from audio [1, S] to [1, frames, stack * bins]: the log-mel of fbank-graph.ts, then
 * `stack` consecutive frames side by side. Training, predict and the export all run this one graph. Options
 * absent from the spec take FBANK_DEFAULTS (no CMVN, as the training config's default).
 */
export function fbankEncoderGraph(audio: Value, spec: { stack: number; options?: FbankOptions }): Value {
  return stackFramesGraph(buildFbankGraph(audio.graph, audio, resolveFbankOptions(spec.options)), spec.stack);
}

/** The fbank encoder on ONNX Runtime (fbankEncoderGraph): one hidden state at 100 / stack frames per second. */
export class FbankGraphEncoder implements FrameEncoder {
  readonly id: string;
  readonly numHiddenStates = 1;
  readonly hiddenSize: number;
  readonly frameRate: number;
  private session?: Promise<CompiledGraph>;

  constructor(
    readonly spec: { stack: number; options?: FbankOptions },
    private readonly compileOptions: CompileOptions = {},
  ) {
    if (!Number.isInteger(spec.stack) || spec.stack < 1) throw new UserError(`frame stacking must be a positive integer, got ${spec.stack}`);
    const o = resolveFbankOptions(spec.options);
    this.hiddenSize = o.numMelBins * spec.stack;
    this.frameRate = 1000 / o.frameShiftMs / spec.stack;
    const canonical = JSON.stringify({ kind: 'fbank-graph', version: FBANK_IMPL_VERSION, stack: spec.stack, options: Object.keys(o).sort().map((k) => [k, o[k as keyof typeof o]]) });
    this.id = `fbank-graph-v${FBANK_IMPL_VERSION}-${crypto.createHash('sha256').update(canonical).digest('hex').slice(0, 16)}`;
  }

  private getSession(): Promise<CompiledGraph> {
    this.session ??= (() => {
      const g = new Graph();
      return compile({ fbank: fbankEncoderGraph(g.input('audio', 'float32', [1, 'samples']), this.spec) }, { name: 'fbank', ...this.compileOptions });
    })();
    return this.session;
  }

  async encode(batch: Float32Array[]): Promise<Array<{ states: Float32Array[]; frames: number }>> {
    const s = await this.getSession();
    const out: Array<{ states: Float32Array[]; frames: number }> = [];
    for (const clip of batch) {
      const r = await s.run({ audio: tensor(clip, [1, clip.length]) });
      out.push({ states: [r.fbank.data as Float32Array], frames: r.fbank.shape[1] });
    }
    return out;
  }

  async release(): Promise<void> {
    if (this.session) await (await this.session).release();
    this.session = undefined;
  }
}

/** Frame stacking: [B, T, D] -> [B, max(1, floor(T/k)), k*D]; a clip shorter than k frames is zero-padded. */
export function stackFramesGraph(x: Value, k: number): Value {
  if (k === 1) return x;
  const D = x.shape[2] as number;
  const T = squeeze(dimOf(x, 1), [0]);
  const kept = mul(maximum(div(T, k), 1), k); // frames kept: a multiple of k, at least k
  const padded = pad(x, [0, 0, 0, 0, k - 1, 0]);
  const rows = gather(padded, range(constant(x, [0], [], 'int64'), kept, constant(x, [1], [], 'int64')), 1); // [B, kept, D]
  const shape = concat([dimOf(x, 0), unsqueeze(div(kept, k), [0]), int64s(x, [k * D])], 0);
  return reshapeTo(rows, shape, [x.shape[0], 'frames', k * D]);
}

/** A Hugging Face speech encoder run frozen in one ONNX Runtime session (clips encoded one at a time). */
export class HFFrameEncoder implements FrameEncoder {
  readonly id: string;
  readonly numHiddenStates: number;
  readonly hiddenSize: number;
  /** 16000 / the conv stack's total stride (50 for the usual wav2vec2 / HuBERT / WavLM stack) */
  readonly frameRate: number;
  private session?: Promise<CompiledGraph>;

  constructor(
    readonly encoder: SpeechEncoder,
    private readonly compileOptions: CompileOptions = {},
  ) {
    this.numHiddenStates = encoder.numHiddenStates;
    this.hiddenSize = encoder.hiddenSize;
    this.frameRate = 16000 / encoder.config.convStride.reduce((a, b) => a * b, 1);
    const h = crypto.createHash('sha256');
    // version 2: the waveform is normalised in the graph (version 1 did it in JS; float rounding differs)
    h.update(JSON.stringify({ kind: 'hf-speech-encoder', version: 2, config: encoder.config, preprocessor: encoder.preprocessor }));
    // A changed weight file (new inode, size or mtime) is a different encoder: no stale cache hits.
    for (const f of fs.readdirSync(encoder.dir).filter((n) => n.endsWith('.safetensors') || n.endsWith('.bin')).sort()) {
      const st = fs.statSync(path.join(encoder.dir, f));
      h.update(`${fs.realpathSync(path.join(encoder.dir, f))}:${st.size}:${st.mtimeMs}\n`);
    }
    this.id = `hf-${encoder.config.modelType}-${h.digest('hex').slice(0, 16)}`;
  }

  static open(dir: string, opts: CompileOptions = {}): HFFrameEncoder {
    return new HFFrameEncoder(loadSpeechEncoder(dir), opts);
  }

  private getSession(): Promise<CompiledGraph> {
    this.session ??= (async () => {
      const g = new Graph();
      const out = hfEncoderGraph(g.input('audio', 'float32', [1, 'samples']), this.encoder);
      const outputs: Record<string, Value> = {};
      out.hiddenStates.forEach((h, i) => (outputs[`hidden_states.${i}`] = h));
      return compile(outputs, { name: `speech encoder ${path.basename(this.encoder.dir)}`, ...this.compileOptions });
    })();
    return this.session;
  }

  async encode(batch: Float32Array[]): Promise<Array<{ states: Float32Array[]; frames: number }>> {
    const s = await this.getSession();
    const out: Array<{ states: Float32Array[]; frames: number }> = [];
    for (const clip of batch) {
      const res = await s.run({ audio: tensor(clip, [1, clip.length]) });
      const states = Array.from({ length: this.numHiddenStates }, (_, i) => res[`hidden_states.${i}`].data as Float32Array);
      out.push({ states, frames: res['hidden_states.0'].shape[1] });
    }
    return out;
  }

  async release(): Promise<void> {
    if (this.session) await (await this.session).release();
    this.session = undefined;
  }
}

/**
 * A Hugging Face speech encoder's graph from audio [1, S]: zero-padded to one receptive field (so a very short clip
 * still gives a frame), normalised as its preprocessor_config.json says, then the encoder. HFFrameEncoder
 * (training, predict, the server) and the export both run this one graph.
 */
export function hfEncoderGraph(audio: Value, enc: SpeechEncoder): SpeechEncoderOutputs {
  const S = squeeze(dimOf(audio, 1), [0]);
  const padLen = maximum(sub(constant(audio, [receptiveField(enc.config)], [], 'int64'), S), 0);
  const zeros = fill(concat([int64s(audio, [1]), unsqueeze(padLen, [0])], 0), [1, 'pad'], 0, 'float32');
  const x = concat([audio, zeros], 1);
  return enc.build(audio.graph, enc.preprocessor.doNormalize ? normalizeWaveformGraph(x) : x);
}

/** Samples one output frame of a conv feature stack reads (400 for the usual wav2vec2 / HuBERT / WavLM stack). */
export function receptiveField(cfg: { convKernel: number[]; convStride: number[] }): number {
  let n = 1;
  for (let i = cfg.convKernel.length - 1; i >= 0; i--) n = (n - 1) * cfg.convStride[i] + cfg.convKernel[i];
  return n;
}

/** Opens the encoder a spec names; `baseDir` resolves a relative HF path (model folders store them relative). */
export function openFrameEncoder(spec: EncoderSpec, baseDir = process.cwd(), opts: CompileOptions = {}): FrameEncoder {
  if (spec.kind === 'fbank') return new FbankGraphEncoder(spec, opts);
  const dir = folderOrCachedHub(path.resolve(baseDir, spec.path), spec.hub);
  if (!fs.existsSync(path.join(dir, 'config.json'))) throw new UserError('not a speech encoder folder (no config.json)', dir);
  return HFFrameEncoder.open(dir, opts);
}

/** Releases an encoder's sessions, if it holds any. */
export async function releaseFrameEncoder(enc: FrameEncoder): Promise<void> {
  const r = (enc as { release?: () => Promise<void> }).release;
  if (r) await r.call(enc);
}
