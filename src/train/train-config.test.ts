import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tempDir } from '../../test/fixtures-gen/paths.ts';
import { BuiltinFrameEncoder } from '../models/frame-encoders.ts';
import { UserError } from '../util/errors.ts';
import { defaultTrainConfig, readTrainConfig } from './config.ts';

const tmp = tempDir('train-config');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function runFolder(name: string, config: unknown): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'train_config.json'), JSON.stringify(config));
  return dir;
}

describe('train_config.json on --resume', () => {
  it('an older file without fbankCmvn / featureNorm resumes with the documented defaults (no CMVN, feature norm on)', () => {
    const current = defaultTrainConfig({ data: 'corpus' });
    const { fbankCmvn: _c, featureNorm: _n, ...older } = current;
    const c = readTrainConfig(runFolder('older', older));
    expect(c.fbankCmvn).toBe(false);
    expect(c.featureNorm).toBe(true);
    expect(c).toEqual(current);
  });

  it('a saved value wins over the default', () => {
    const c = readTrainConfig(runFolder('cmvn', { ...defaultTrainConfig({ data: 'corpus' }), fbankCmvn: true }));
    expect(c.fbankCmvn).toBe(true);
  });

  it('a bad field is a one-line error naming the file and the field', () => {
    const dir = runFolder('bad', { ...defaultTrainConfig({ data: 'corpus' }), batchSize: 0 });
    let err: unknown;
    try {
      readTrainConfig(dir);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UserError);
    const msg = (err as Error).message;
    expect(msg).not.toContain('\n');
    expect(msg).toContain(path.join(dir, 'train_config.json'));
    expect(msg).toContain('batchSize');
  });
});

describe('the fbank encoder default', () => {
  it('a spec without options is the training default: no CMVN', () => {
    const plain = new BuiltinFrameEncoder({ stack: 4 });
    expect(plain.id).toBe(new BuiltinFrameEncoder({ stack: 4, options: { cmvn: false } }).id);
    expect(plain.id).not.toBe(new BuiltinFrameEncoder({ stack: 4, options: { cmvn: true } }).id);
  });
});
