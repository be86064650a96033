import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, emodbDev, tempDir } from '../../test/fixtures-gen/paths.ts';
import { defaultTrainConfig } from '../train/config.ts';
import { UserError } from '../util/errors.ts';
import { addTrainOptions, trainConfigFromCommand } from './train.ts';

const tmp = tempDir('cli-train');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function configOf(args: string[]) {
  const cmd = addTrainOptions(new Command('train').exitOverride());
  cmd.parse(['--out', path.join(tmp, 'run'), ...args], { from: 'user' });
  return trainConfigFromCommand(cmd);
}

function errorOf(args: string[]): string {
  try {
    configOf(args);
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    return (e as Error).message;
  }
  throw new Error('expected an error');
}

describe('train options generated from the config schema', () => {
  it('no flags but --data: the schema defaults', () => {
    expect(configOf(['--data', 'corpus'])).toEqual(defaultTrainConfig({ data: 'corpus' }));
  });

  it('flags set their fields, nested ones field by field, with the LLM-dependent defaults of the chosen LLM', () => {
    const c = configOf(['--data', 'corpus', '--llm', '/m/llama', '--lora-r', '4', '--queries', '16', '--no-balance', '--steps', '3', '--encoder-layers', '1,2', '--labels', 'ang,neu', '--llm-train', 'frozen', '--fbank-cmvn']);
    expect(c.lora).toEqual({ r: 4, alpha: 16, targetModules: ['q_proj', 'v_proj'] });
    expect(c.mapper).toEqual({ dModel: 768, numHeads: 8, numLayers: 2, nQueries: 16 });
    expect([c.balance, c.maxSteps, c.encoderLayers, c.labels, c.llmTrain, c.fbankCmvn]).toEqual([false, 3, [1, 2], ['ang', 'neu'], 'frozen', true]);
    expect([c.useTranscript, c.epochs, c.lr]).toEqual([true, 10, 1e-4]);
  });

  it('--config fills fields, flags override it, and switches the user did not give leave it alone', () => {
    const file = path.join(tmp, 'config.json');
    fs.writeFileSync(file, JSON.stringify({ data: 'corpus', augment: false, batchSize: 4, mapper: { nQueries: 8 } }));
    const c = configOf(['--config', file, '--batch-size', '6', '--transcript']);
    expect([c.augment, c.batchSize, c.mapper.nQueries, c.mapper.dModel, c.useTranscript]).toEqual([false, 6, 8, 256, true]);
  });

  it('a bad value is one line naming the flag and the field', () => {
    for (const [args, flag, field] of [
      [['--data', 'c', '--batch-size', '0'], '--batch-size', 'batchSize'],
      [['--data', 'c', '--lr', 'fast'], '--lr', 'lr'],
      [['--data', 'c', '--llm-train', 'some'], '--llm-train', 'llmTrain'],
      [['--data', 'c', '--quantize', 'int2'], '--quantize', 'quantize'],
      [['--data', 'c', '--mapper-width', '2.5'], '--mapper-width', 'mapper.dModel'],
      [['--batch-size', '2'], '--data', 'data'],
    ] as const) {
      const msg = errorOf([...args]);
      expect(msg).not.toContain('\n');
      expect(msg.startsWith(`${flag}: ${field}:`)).toBe(true);
    }
  });

  it('a bad or unknown field in the --config file is one line naming the file and the field', () => {
    const file = path.join(tmp, 'bad.json');
    fs.writeFileSync(file, JSON.stringify({ data: 'corpus', lora: { r: -1 } }));
    expect(errorOf(['--config', file])).toBe(`${file}: lora.r: Too small: expected number to be >0`);
    fs.writeFileSync(file, JSON.stringify({ data: 'corpus', bachSize: 4 }));
    expect(errorOf(['--config', file])).toBe(`${file}: unknown field "bachSize"`);
  });
});

describe('train --quantize', () => {
  it('sets the field; with the LLM trained in full (the tiny default) the run stops with one line before any work', () => {
    expect(configOf(['--data', 'corpus', '--quantize', 'int4', '--llm-train', 'lora']).quantize).toBe('int4');
    const out = path.join(tmp, 'quant-full');
    const r = spawnSync(process.execPath, [path.join(REPO_ROOT, 'bin/emosllm.mjs'), 'train', '--data', emodbDev().dir, '--out', out, '--quantize', 'int8', '--steps', '1'], {
      encoding: 'utf8',
      env: { ...process.env, EMOSLLM_CACHE_DIR: path.join(tmp, 'cache') },
    });
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n').filter((l) => l.startsWith('emosllm:'))).toEqual([
      "emosllm: error: --quantize int8 freezes the LLM's weights; it cannot be combined with --llm-train full (use lora or frozen)",
    ]);
  });
});
