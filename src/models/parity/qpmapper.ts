import { type ParityRow, notCovered } from './compare.ts';

/** The QPMapper reference belongs to the EmoSLLM issue: reported as not covered until then. */
export async function checkQPMapperFolder(_dir: string, name: string): Promise<ParityRow[]> {
  return [notCovered(name, 'QPMapper arrives with the EmoSLLM model')];
}
