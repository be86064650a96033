import { describe, expect, it } from 'vitest';
import { Rng } from '../util/rng.ts';
import { type Example, IGNORE_INDEX, buildBatch, cropWindow } from './processor.ts';
import { PromptBuilder, TextTokenizer, builtinLlama3TokenizerDir } from './prompt.ts';

const tok = TextTokenizer.load(builtinLlama3TokenizerDir());
const labels = ['anger', 'happiness', 'neutral'];
const prompt = new PromptBuilder(tok, labels);

function clip(id: string, frames: number, label: number, transcript?: string): Example {
  const dim = 3;
  const states = [0, 1].map((l) => Float32Array.from({ length: frames * dim }, (_, i) => l * 1000 + i));
  return { id, states: { states, frames, dim }, label, transcript };
}

describe('buildBatch', () => {
  const nQ = 4;
  const exs = [clip('a', 10, 1, 'Hallo Welt.'), clip('b', 6, 0)];
  const b = buildBatch(exs, prompt, { crop: { frames: 100, rng: new Rng(0) }, nQueries: nQ });
  const promptLens = exs.map((e) => prompt.promptIds(e.transcript).length);

  it('pads frames with a mask and keeps layer order', () => {
    expect([b.layers, b.size, b.frames, b.dim]).toEqual([2, 2, 10, 3]);
    expect(Array.from(b.frameMask.slice(10, 20), Number)).toEqual([1, 1, 1, 1, 1, 1, 0, 0, 0, 0]);
    // layer 1, item 1, frame 5, channel 2 = 1000 + 5*3 + 2
    expect(b.hiddenStates[((1 * 2 + 1) * 10 + 5) * 3 + 2]).toBe(1017);
    expect(b.hiddenStates[((1 * 2 + 1) * 10 + 6) * 3]).toBe(0); // padding
  });

  it('aligns answer targets with the logits one position earlier (HF label shift)', () => {
    for (let row = 0; row < 2; row++) {
      const answer = prompt.answerIds[exs[row].label!];
      const pLen = promptLens[row];
      for (let k = 0; k < b.answerLen; k++) {
        const target = Number(b.lossTargets[row * b.answerLen + k]);
        if (k >= answer.length) {
          expect(target).toBe(IGNORE_INDEX);
          continue;
        }
        const pos = Number(b.lossPositions[row * b.answerLen + k]);
        expect(target).toBe(answer[k]);
        // the token at pos+1 of [audio | text] is the target
        expect(Number(b.textIds[row * b.textLen + (pos + 1 - nQ)])).toBe(target);
        expect(pos + 1 - nQ).toBe(pLen + k);
      }
      const valid = Array.from(b.attentionMask.slice(row * (nQ + b.textLen), (row + 1) * (nQ + b.textLen)), Number).reduce((s, x) => s + x, 0);
      expect(valid).toBe(nQ + pLen + answer.length);
    }
  });

  it('crops longer clips to the crop length, inside the clip', () => {
    const s = buildBatch(exs, prompt, { crop: { frames: 4, rng: new Rng(3) }, nQueries: nQ });
    expect(s.frames).toBe(4);
    const start = s.hiddenStates[0] / 3; // layer 0, clip a: value = frame * dim + channel
    expect(Number.isInteger(start) && start >= 0 && start <= 6).toBe(true);
  });

  it('refuses an example whose label is outside the prompt', () => {
    expect(() => buildBatch([clip('c', 5, 7)], prompt, { crop: { frames: 10, rng: new Rng(0) }, nQueries: nQ })).toThrow(/label index 7/);
  });
});

describe('cropWindow', () => {
  it('crops stay inside the clip and are seeded', () => {
    const r1 = new Rng(5);
    const r2 = new Rng(5);
    for (let i = 0; i < 100; i++) {
      const w = cropWindow(50, { frames: 20, rng: r1 });
      expect(w.start).toBeGreaterThanOrEqual(0);
      expect(w.start + w.length).toBeLessThanOrEqual(50);
      expect(cropWindow(50, { frames: 20, rng: r2 })).toEqual(w);
    }
    expect(cropWindow(10, { frames: 20, rng: r1 })).toEqual({ start: 0, length: 10 });
  });
});
