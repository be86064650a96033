import { type ParityRow, notCovered } from './compare.ts';

/** Llama folders (placeholder until the Llama model lands). */
export async function checkLlamaFolder(_dir: string, name: string): Promise<ParityRow[]> {
  return [notCovered(name, 'llama not implemented yet')];
}
export async function checkLoraFolder(_dir: string, name: string): Promise<ParityRow[]> {
  return [notCovered(name, 'LoRA not implemented yet')];
}
export async function checkLoraGradFolder(_dir: string, name: string): Promise<ParityRow[]> {
  return [notCovered(name, 'LoRA training step not implemented yet')];
}
