import { type ParityRow, notCovered } from './compare.ts';

/** wav2vec2 / HuBERT / WavLM folders (placeholder until the encoders land). */
export async function checkEncoderFolder(_dir: string, name: string): Promise<ParityRow[]> {
  return [notCovered(name, 'encoders not implemented yet')];
}
