"""The decoder-only transformer shared by Llama and Qwen3, and the causal LM on top of it.

One code path for both families; the config decides the differences (Qwen3: q_norm/k_norm and an explicit
head_dim; Llama 3.1: `llama3` RoPE scaling; either: tied or untied output head). Pre-norm blocks:

    h = x + Attention(input_layernorm(x))
    x = h + MLP(post_attention_layernorm(h))

then a final RMSNorm (`norm`) and, for the causal LM, logits = lm_head(x). Attribute names equal the checkpoint
keys (`model.layers.0.self_attn.q_proj.weight`, ...), so loading a checkpoint is a one-to-one copy.

KV cache protocol (see kv_cache.py): every attention layer calls `k, v = kv_cache.update(layer_idx, k, v)` with
its new keys/values (after k_norm and RoPE), and the body calls `kv_cache.advance(T)` once after the last layer.
"""

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import Attention, build_attention_mask
from .mlp import MLP
from .norm import RMSNorm
from .rope import RotaryEmbedding


class DecoderBlock(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.self_attn = Attention(config, layer_idx)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, x, cos, sin, mask=None, is_causal=False, kv_cache=None):  # (B, T, C) -> (B, T, C)
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, is_causal, kv_cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    """Token embedding, the decoder blocks and the final norm (transformers' LlamaModel / Qwen3Model)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.rope_theta, config.rope_scaling)
        # recompute each block's activations in backward instead of storing them (training without a cache only)
        self.gradient_checkpointing = False

    def forward(self, input_ids, attention_mask=None, position_ids=None, kv_cache=None):
        """input_ids (B, T) -> hidden states (B, T, C) after the final norm.

        attention_mask (B, S): 1 = real token, 0 = pad; S = kv_cache.seen + T with a cache, else T.
        position_ids (B, T): None means past, past+1, ..., past+T-1 for every row (also for left-padded rows,
        like transformers' plain forward; RoPE only sees differences between positions, so a shift is harmless).
        """
        B, T = input_ids.shape
        past = kv_cache.seen if kv_cache is not None else 0
        x = self.embed_tokens(input_ids)  # (B, T, C)
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=input_ids.device).expand(B, T)
        cos, sin = self.rotary_emb(position_ids, x.dtype)  # (B, T, D) each
        mask, is_causal = build_attention_mask(attention_mask, T, past, input_ids.device)
        use_checkpointing = self.gradient_checkpointing and self.training and kv_cache is None
        for layer in self.layers:
            if use_checkpointing:
                x = checkpoint(layer, x, cos, sin, mask, is_causal, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, is_causal, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(T)
        return self.norm(x)


class CausalLM(nn.Module):
    """Transformer body + output head: logits = lm_head(hidden states). Tied: lm_head.weight IS embed_tokens.weight."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = Transformer(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self):
        """Share one Parameter between input embedding and output head when the config says so (call after loading)."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def hidden_states(self, input_ids, attention_mask=None, position_ids=None, kv_cache=None):
        """(B, T) -> (B, T, C), after the final norm; same arguments as forward."""
        return self.model(input_ids, attention_mask, position_ids, kv_cache)

    def forward(self, input_ids, attention_mask=None, position_ids=None, kv_cache=None):
        """(B, T) -> logits (B, T, V); see Transformer.forward for the arguments."""
        return self.lm_head(self.hidden_states(input_ids, attention_mask, position_ids, kv_cache))
