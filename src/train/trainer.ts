/**
 * EmoSLLM training, as the math reads:
 *
 *   for each step:  g = (1 / N_tokens) * sum over micro-batches of d[sum of answer-token CE] / d theta
 *                   g <- clip(g, max_norm)                       (global L2 norm)
 *                   theta <- AdamW(theta, g, lr(step))           (warmup + cosine)
 *
 * theta = the QPMapper and either LoRA matrices (base LLM frozen), every LLM weight but the token embeddings
 * (llm_train = full) or nothing else (frozen). The speech encoder is frozen: its states come from the feature
 * cache, computed once per clip. Training clips are random 3 s crops (frame domain), validation clips whole.
 *
 * Reproducible and resumable: every random choice is drawn from an RNG derived from (seed, epoch, batch index),
 * so a run resumed from a checkpoint (parameters, AdamW moments, position) takes exactly the steps the
 * uninterrupted run would have taken, and ends with bit-identical weights.
 *
 * The run folder is also the trained model folder (emosllm.json + weights, see models/emosllm.ts):
 *   train_config.json  the resolved configuration (--resume reads it back)
 *   checkpoints/       step-NNNNNNNN/ (keep-last-K plus the best by validation UA), each a model folder too
 *   history.json       per-step loss / lr / grad norm and per-evaluation validation figures
 *   report.html        training curves and the best validation evaluation
 */
import fs from 'node:fs';
import path from 'node:path';
import { cacheRoot } from '../graph/runtime.ts';
import { loadDataset } from '../data/dataset.ts';
import { Rng } from '../util/rng.ts';
import { speakerSplit } from '../data/splits.ts';
import type { DatasetItem } from '../data/types.ts';
import { type EvalResult, evaluateClips } from '../eval/evaluate.ts';
import { historyCurves, writeReport } from '../eval/report.ts';
import { FeatureCache } from '../features/cache.ts';
import { type ClipRef, prepareClips, statesOf } from '../features/clips.ts';
import { groupNormalization } from '../features/normalize.ts';
import { MIN_STAT_GROUP_CLIPS, columnStats } from '../models/normalize.ts';
import { featureStats } from '../features/stats.ts';
import { EmoSLLM, MODEL_FILE } from '../models/emosllm.ts';
import { type EncoderSpec, parseBuiltinEncoder } from '../models/frame-encoders.ts';
import { type Example, buildBatch } from '../models/processor.ts';
import { statWidth } from '../models/qpmapper.ts';
import { DEFAULT_PROMPT } from '../models/prompt.ts';
import { writeTinyLlama } from '../models/tiny.ts';
import { UserError } from '../util/errors.ts';
import { writeFileAtomic } from '../util/fs.ts';
import { type DownloadProgress, type HubFileSelection, hubFiles, pinnedHubId, resolveModelPath } from '../io/hub.ts';
import { AdamW, clipGradNorm } from './adamw.ts';
import { DEFAULT_AUGMENT, specAugment } from './augment.ts';
import { type TrainConfig, type TrainConfigInput, TRAIN_CONFIG_FILE, defaultTrainConfig, readTrainConfig } from './config.ts';
import { listCheckpoints, loadCheckpoint, saveCheckpoint, type TrainState } from './checkpoint.ts';
import { bucketBatches, epochOrder } from './sampling.ts';
import { learningRate } from './schedule.ts';

export interface TrainProgress {
  step: number;
  totalSteps: number;
  epoch: number;
  loss: number;
  lr: number;
  samplesPerSecond: number;
}

export interface TrainHooks {
  log?: (line: string) => void;
  /** called after every optimiser step (progress bars) */
  onStep?: (p: TrainProgress) => void;
  /** called while features are computed */
  onFeatures?: (done: number, total: number) => void;
  /** called while a Hub model (--encoder/--llm given as org/name) is downloaded */
  onDownload?: (p: DownloadProgress) => void;
}

export interface TrainResult {
  out: string;
  /** the run's step counter at the end */
  steps: number;
  /** optimiser steps this call took (steps - resumedFrom when resumed) */
  stepsRun: number;
  /** the checkpoint step a --resume continued from */
  resumedFrom?: number;
  bestStep: number;
  bestUa: number;
  /** validation evaluation of the saved model (undefined without validation data) */
  valid?: EvalResult;
  history: Array<Record<string, number>>;
  seconds: number;
  stoppedEarly: boolean;
}

/** Training / validation items and the label set. */
async function loadSplits(
  c: TrainConfig,
  log: (l: string) => void,
  given?: { train: DatasetItem[]; valid?: DatasetItem[] },
): Promise<{ train: DatasetItem[]; valid: DatasetItem[]; labels: string[] }> {
  let train: DatasetItem[];
  if (given) train = given.train;
  else {
    const ds = await loadDataset(c.data, { labelMap: c.labelMap });
    for (const w of ds.warnings) log(`warning: ${w}`);
    train = ds.items;
  }
  let valid: DatasetItem[] = given?.valid ?? [];
  if (given?.valid) {
    // the caller chose the validation clips
  } else if (c.validData) {
    const vd = await loadDataset(c.validData, { labelMap: c.labelMap });
    for (const w of vd.warnings) log(`warning: ${w}`);
    valid = vd.items;
  } else if (c.validFraction > 0) {
    const speakers = new Set(train.map((i) => i.speaker));
    if (speakers.size >= 3) {
      const s = speakerSplit(train, { valid: c.validFraction, test: 0, seed: c.seed });
      train = s.train;
      valid = s.valid;
      log(`validation: speaker(s) ${s.speakers.valid.join(', ')} held out of training (${valid.length} clips)`);
    } else log(`validation: none (${speakers.size} speaker(s) in the data; a speaker-independent split needs 3)`);
  }
  const labels = c.labels ?? [...new Set(train.map((i) => i.label))].sort();
  const known = new Set(labels);
  const dropped = [...train, ...valid].filter((i) => !known.has(i.label));
  if (dropped.length) log(`note: ${dropped.length} clip(s) with labels outside [${labels.join(', ')}] are left out`);
  train = train.filter((i) => known.has(i.label));
  valid = valid.filter((i) => known.has(i.label));
  if (train.length === 0) throw new UserError('no training clips', c.data);
  return { train, valid, labels };
}

/** `encoderDir`: the local folder of a Hugging Face encoder (c.encoder may be a Hub id). */
function encoderSpec(c: TrainConfig, encoderDir: string): EncoderSpec {
  const features = parseBuiltinEncoder(c.encoder);
  // plain fbank keeps the spec it always had (no features key)
  if (features) return { kind: 'fbank', stack: c.fbankStack, options: { cmvn: c.fbankCmvn }, ...(c.encoder === 'fbank' ? {} : { features }) };
  const hub = pinnedHubId(c.encoder, encoderDir);
  return { kind: 'hf', path: path.resolve(encoderDir), ...(hub ? { hub } : {}) };
}

/** Micro-batches of one epoch, grouped into optimiser steps (drawn from the epoch's own RNG). */
function epochPlan(c: TrainConfig, epoch: number, labels: number[], lengths: number[]): number[][][] {
  const rng = new Rng(`${c.seed}:epoch:${epoch}`);
  const order = epochOrder(labels.length, rng, c.balance ? labels : undefined);
  const micro = c.bucket
    ? bucketBatches(order, lengths, c.batchSize, rng)
    : Array.from({ length: Math.ceil(order.length / c.batchSize) }, (_, i) => order.slice(i * c.batchSize, (i + 1) * c.batchSize));
  const steps: number[][][] = [];
  for (let i = 0; i < micro.length; i += c.gradAccum) steps.push(micro.slice(i, i + c.gradAccum));
  return steps;
}

/**
 * Trains with `config` (defaults filled in, validated) and writes the model folder `out`; with `resume` it
 * continues the run in `out` with the configuration saved there instead.
 */
export async function train(
  config: TrainConfigInput,
  out: string,
  opts: {
    resume?: boolean;
    hooks?: TrainHooks;
    /** train on these clips instead of loading config.data (cross-validation folds); valid as in loadSplits */
    items?: { train: DatasetItem[]; valid?: DatasetItem[] };
  } = {},
): Promise<TrainResult> {
  const t0 = performance.now();
  const log = opts.hooks?.log ?? ((l: string) => console.error(l));
  out = path.resolve(out);
  const ckptRoot = path.join(out, 'checkpoints');
  let c: TrainConfig;
  if (opts.resume) {
    c = readTrainConfig(out);
    // a run that stopped before its first checkpoint has nothing to continue: starting over is the user's call
    if (!listCheckpoints(ckptRoot).length) throw new UserError('no checkpoint to resume from: run the same command without --resume to start over', out);
    log(`resume: ${out} (configuration from ${TRAIN_CONFIG_FILE})`);
  } else if (fs.existsSync(path.join(out, MODEL_FILE)) || listCheckpoints(ckptRoot).length) {
    // (a folder with only train_config.json is a run that stopped before its first checkpoint: nothing to lose)
    throw new UserError('already holds a training run: pass --resume to continue it, or choose another --out', out);
  } else c = defaultTrainConfig(config);
  // the stat token's statistics are stored beside the feature normalisation (feature_norm.safetensors)
  if (c.statToken && !c.featureNorm) throw new UserError('the stat token (on by default) needs the feature normalisation: drop --no-feature-norm, or add --no-stat-token');
  fs.mkdirSync(out, { recursive: true });

  const { train: trainItems, valid: validItems, labels } = await loadSplits(c, log, opts.items);

  // Hub ids (org/name[@rev]) become their snapshot folders in the Hugging Face cache; train_config.json keeps the id.
  const hub = (files: HubFileSelection) => ({ files, onProgress: opts.hooks?.onDownload, log });
  const encoderDir = await resolveModelPath(c.encoder, hub(hubFiles.speechEncoder));
  // The built-in tiny LLM lives in the run folder: seeded, so a resume rebuilds exactly the same weights.
  let llmDir = c.llm === 'tiny' ? '' : path.resolve(await resolveModelPath(c.llm, hub(hubFiles.llm)));
  if (c.llm === 'tiny') {
    llmDir = path.join(out, 'llm');
    if (!fs.existsSync(path.join(llmDir, 'config.json'))) writeTinyLlama(llmDir, { seed: c.seed, ...c.tinyLlm });
  }
  const model = EmoSLLM.create({
    labels,
    encoder: encoderSpec(c, encoderDir),
    llmDir,
    llmBuiltin: c.llm === 'tiny' ? 'tiny' : undefined,
    llmHub: c.llm === 'tiny' ? undefined : pinnedHubId(c.llm, llmDir),
    llmTrain: c.llmTrain,
    quantize: c.quantize,
    lora: c.lora,
    mapper: c.mapper,
    encoderLayers: c.encoderLayers,
    prompt: { ...DEFAULT_PROMPT, useTranscript: c.useTranscript },
    trainCropSeconds: c.cropSeconds,
    normalize: c.normalize,
    statToken: c.statToken,
    seed: c.seed,
  });
  try {
    // written once the data, encoder and LLM have loaded: a run that fails to start leaves nothing to --resume
    if (!opts.resume) writeFileAtomic(path.join(out, TRAIN_CONFIG_FILE), `${JSON.stringify(c, null, 2)}\n`);
    const cache = new FeatureCache(cacheRoot({ cacheDir: c.cacheDir }), model.encoder, { layers: model.spec.encoderLayers, onWarning: log });
    log(`features: ${model.encoder.id}, ${trainItems.length + validItems.length} clips`);
    const prepTrain = await prepareClips(cache, trainItems, { onProgress: opts.hooks?.onFeatures });
    const prepValid = await prepareClips(cache, validItems, { onProgress: opts.hooks?.onFeatures });
    for (const w of [...prepTrain.warnings, ...prepValid.warnings]) log(`warning: ${w}`);
    const trainClips = prepTrain.clips;
    const validClips = prepValid.clips;
    if (trainClips.length === 0) throw new UserError('no training clip could be read', c.data);
    log(`features: ${cache.stats.hits} cached, ${cache.stats.misses} computed`);
    if (c.featureNorm) {
      const { mean, std } = await featureStats(cache, trainClips, model.mapperConfig.numHiddenStates, model.mapperConfig.dIn);
      model.setFeatureNorm(mean, std);
    }
    // each side's groups from its own clips (validation speakers are not training speakers)
    if (model.mapperConfig.statChannels) {
      // the stat token's training statistics, from the functionals of the clips as the mapper sees them
      const frameNorm = await groupNormalization(cache, trainClips, c.normalize, model, { statToken: false });
      const rows: Float32Array[] = [];
      for (let i = 0; i < trainClips.length; i += 32) {
        const refs = trainClips.slice(i, i + 32);
        const raw = await statesOf(cache, refs);
        rows.push(...(await model.clipFunctionals(frameNorm ? raw.map((st, k) => frameNorm(refs[k]!, st)) : raw)));
      }
      const { mean, std } = columnStats(rows);
      model.setStatNorm(mean, std);
    }
    const trainNorm = await groupNormalization(cache, trainClips, c.normalize, model);
    const validNorm = await groupNormalization(cache, validClips, c.normalize, model);
    if (c.normalize !== 'none')
      log(
        `normalize: ${c.normalize} (encoder states z-normalised per ${c.normalize} before the mapper` +
          (c.normalize === 'speaker' && model.mapperConfig.statChannels ? `, and the stat token's functionals per speaker of >= ${MIN_STAT_GROUP_CLIPS} clips)` : ')'),
      );
    const modelStates = async (refs: ClipRef[]) => {
      const raw = await statesOf(cache, refs);
      return trainNorm ? raw.map((st, k) => trainNorm(refs[k]!, st)) : raw;
    };

    const cropFrames = Math.round(c.cropSeconds * model.frameRate);
    const channelGroup = parseBuiltinEncoder(c.encoder) ? model.encoder.hiddenSize / c.fbankStack : model.encoder.hiddenSize;
    const labelIdx = trainClips.map((x) => labels.indexOf(x.item.label));
    const lengths = trainClips.map((x) => Math.min(x.frames, cropFrames));
    const stepsPerEpoch = epochPlan(c, 0, labelIdx, lengths).length;
    const totalSteps = c.maxSteps ?? c.epochs * stepsPerEpoch;
    const warmupSteps = Math.round(c.warmupRatio * totalSteps);
    const evalEvery = c.evalEvery || stepsPerEpoch;
    const ckptEvery = c.checkpointEvery || stepsPerEpoch;

    const opt = new AdamW({ lr: c.lr, weightDecay: c.weightDecay });
    let state: TrainState = { step: 0, epoch: 0, batchInEpoch: 0, bestUa: -1, bestStep: 0, badEvals: 0, history: [] };
    let resumedFrom: number | undefined;
    if (opts.resume) {
      const ck = loadCheckpoint(ckptRoot);
      if (!ck) throw new UserError('no checkpoint to resume from', ckptRoot);
      for (const k of model.paramNames) {
        const p = ck.params[k];
        if (!p || p.length !== model.params[k].length) throw new UserError(`checkpoint has no parameter "${k}" of the right size`, ck.dir);
        model.params[k].set(p);
      }
      state = ck.state;
      resumedFrom = state.step;
      const steps = Object.fromEntries(Object.keys(ck.moments.m).map((k) => [k, state.step]));
      opt.loadState({ step: steps, expAvg: ck.moments.m, expAvgSq: ck.moments.v });
      log(`resume: from step ${state.step} (epoch ${state.epoch + 1}, batch ${state.batchInEpoch})`);
    }
    log(
      `train: ${trainClips.length} clips, ${validClips.length} validation clips, labels [${labels.join(', ')}]; ` +
        `${totalSteps} steps (${stepsPerEpoch}/epoch) of ${c.batchSize * c.gradAccum} clips, ${c.cropSeconds} s crops, lr ${c.lr}, LLM ${c.llmTrain}`,
    );

    const example = (ref: ClipRef, states: Example['states']): Example => ({ id: ref.item.id, states, label: labels.indexOf(ref.item.label), transcript: ref.item.transcript });
    const validate = async (): Promise<EvalResult | undefined> => (validClips.length ? evaluateClips(model, cache, validClips, { transform: validNorm }) : undefined);
    // each checkpoint is also a model folder (emosllm.json, mapper, PEFT adapter or LLM weights)
    const checkpoint = () =>
      saveCheckpoint(ckptRoot, model.params, model.shapes, { m: opt.state().expAvg, v: opt.state().expAvgSq }, state, c.keepLast, (dir) =>
        model.save(dir, { checkpoint_step: state.step }),
      );

    let stoppedEarly = false;
    let lastValid: EvalResult | undefined;
    const tStart = performance.now();
    let samplesDone = 0;
    outer: while (state.step < totalSteps) {
      const plan = epochPlan(c, state.epoch, labelIdx, lengths);
      for (let s = state.batchInEpoch; s < plan.length && state.step < totalSteps; s++) {
        // one optimiser step: sums over the micro-batches, divided by the number of answer tokens
        let lossSum = 0;
        let count = 0;
        let grads: Record<string, Float32Array> | undefined;
        for (let j = 0; j < plan[s].length; j++) {
          const refs = plan[s][j].map((i) => trainClips[i]);
          const states = await modelStates(refs);
          const rng = new Rng(`${c.seed}:crop:${state.epoch}:${s}:${j}`);
          const batch = buildBatch(
            refs.map((r, k) => example(r, states[k])),
            model.prompt(),
            { crop: { frames: cropFrames, rng }, nQueries: model.mapperConfig.nQueries },
          );
          if (c.augment) specAugment(batch, rng, { ...DEFAULT_AUGMENT, channelGroup });
          if (statWidth(model.mapperConfig) && c.statDropout > 0) {
            const keep = 1 / (1 - c.statDropout);
            batch.statKeep = Float32Array.from({ length: batch.size * statWidth(model.mapperConfig) }, () => (rng.next() < c.statDropout ? 0 : keep));
          }
          const r = await model.trainStep(batch);
          lossSum += r.sum;
          count += r.count;
          if (!grads) grads = r.grads;
          else for (const k of Object.keys(grads)) {
            const a = grads[k];
            const b = r.grads[k];
            for (let i = 0; i < a.length; i++) a[i] += b[i];
          }
          samplesDone += refs.length;
        }
        for (const g of Object.values(grads!)) for (let i = 0; i < g.length; i++) g[i] /= count;
        const gradNorm = clipGradNorm(grads!, c.clipNorm);
        const lr = learningRate(state.step + 1, { peak: c.lr, warmupSteps, totalSteps });
        opt.step(model.params, grads!, lr);
        state.step++;
        state.batchInEpoch = s + 1;
        const loss = lossSum / count;
        if (!Number.isFinite(loss)) throw new Error(`training diverged at step ${state.step} (loss ${loss}); try a lower --lr`);
        state.history.push({ step: state.step, epoch: state.epoch + 1, loss, lr, grad_norm: gradNorm });
        const sps = samplesDone / ((performance.now() - tStart) / 1000);
        opts.hooks?.onStep?.({ step: state.step, totalSteps, epoch: state.epoch + 1, loss, lr, samplesPerSecond: sps });

        const endOfEpoch = state.batchInEpoch >= plan.length;
        if (endOfEpoch) {
          state.epoch++;
          state.batchInEpoch = 0;
        }
        const last = state.step >= totalSteps;
        let newBest = false;
        if (state.step % evalEvery === 0 || last) {
          lastValid = await validate();
          if (lastValid) {
            const ua = lastValid.metrics.ua;
            state.history.push({ step: state.step, valid_ua: ua, valid_wa: lastValid.metrics.wa, valid_loss: lastValid.loss });
            if (ua > state.bestUa) {
              state.bestUa = ua;
              state.bestStep = state.step;
              state.badEvals = 0;
              newBest = true;
            } else state.badEvals++;
            log(`step ${state.step}: loss ${loss.toFixed(4)}, validation UA ${(100 * ua).toFixed(1)}% WA ${(100 * lastValid.metrics.wa).toFixed(1)}% (best ${(100 * state.bestUa).toFixed(1)}% at step ${state.bestStep})`);
          } else state.bestStep = state.step;
        }
        const stop = c.patience > 0 && state.badEvals >= c.patience;
        // the best step is always checkpointed: the saved model is restored from it at the end
        if (state.step % ckptEvery === 0 || last || stop || newBest) checkpoint();
        if (stop) {
          log(`early stop: no better validation UA in ${c.patience} evaluations`);
          stoppedEarly = true;
          break outer;
        }
      }
    }

    // The saved model: the best checkpoint by validation UA (the last one without validation data).
    const bestStep = validClips.length ? state.bestStep : state.step;
    if (bestStep !== state.step) {
      const best = loadCheckpoint(ckptRoot, bestStep);
      if (!best) throw new Error(`best checkpoint (step ${bestStep}) is missing`);
      for (const k of model.paramNames) model.params[k].set(best.params[k]);
      lastValid = await validate();
    } else if (validClips.length && !lastValid) lastValid = await validate();
    const seconds = (performance.now() - t0) / 1000;
    const info = {
      data: c.data,
      train_clips: trainClips.length,
      valid_clips: validClips.length,
      steps: state.step,
      best_step: bestStep,
      valid_ua: lastValid?.metrics.ua,
      valid_wa: lastValid?.metrics.wa,
      seed: c.seed,
    };
    model.save(out, info);
    writeFileAtomic(path.join(out, 'history.json'), `${JSON.stringify(state.history)}\n`);
    if (lastValid) {
      writeReport(path.join(out, 'report.html'), {
        title: 'EmoSLLM training run',
        info: {
          data: c.data,
          encoder: parseBuiltinEncoder(c.encoder) ? `built-in ${c.encoder} (${model.encoder.hiddenSize / c.fbankStack} channels, stack ${c.fbankStack})` : c.encoder,
          llm: c.llm === 'tiny' ? 'built-in tiny Llama (random init)' : c.llm,
          'llm training': c.llmTrain,
          steps: `${state.step} (best ${bestStep})`,
          'validation clips': String(validClips.length),
          'wall time': `${seconds.toFixed(0)} s`,
        },
        metrics: lastValid.metrics,
        curves: historyCurves(state.history, 'run'),
      });
    }
    log(`saved model to ${out} (step ${bestStep}${lastValid ? `, validation UA ${(100 * lastValid.metrics.ua).toFixed(1)}%` : ''}) in ${seconds.toFixed(0)} s`);
    return { out, steps: state.step, stepsRun: state.step - (resumedFrom ?? 0), resumedFrom, bestStep, bestUa: state.bestUa, valid: lastValid, history: state.history, seconds, stoppedEarly };
  } finally {
    await model.release();
  }
}
