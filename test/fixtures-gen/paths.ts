/** Locations of the shared test data beside this checkout (`../shared`), resolved from this file. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const SHARED_DIR = path.resolve(REPO_ROOT, '../shared');
export const EMODB_DEV_DIR = path.join(SHARED_DIR, 'data/emodb-dev');
export const HF_PARITY_DIR = path.join(SHARED_DIR, 'fixtures/hf-parity');

/** The EmoDB dev corpus; throws (fails the test, never skips) with a clear message when it is missing. */
export function emodbDev(): { dir: string; manifest: string; wavDir: string } {
  const manifest = path.join(EMODB_DEV_DIR, 'manifest.csv');
  if (!fs.existsSync(manifest)) {
    throw new Error(`test data missing: ${manifest} not found. The tests need ../shared/data/emodb-dev beside the checkout (see README.md).`);
  }
  return { dir: EMODB_DEV_DIR, manifest, wavDir: path.join(EMODB_DEV_DIR, 'wav') };
}

export function hfParity(model: string): string {
  const dir = path.join(HF_PARITY_DIR, model);
  if (!fs.existsSync(path.join(dir, 'expected.safetensors'))) {
    throw new Error(`test data missing: ${dir}/expected.safetensors not found. The tests need ../shared/fixtures/hf-parity beside the checkout.`);
  }
  return dir;
}

/** A fresh temp dir under the OS temp folder. */
export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(fs.realpathSync(os.tmpdir()), `emosllm-${prefix}-`));
}
