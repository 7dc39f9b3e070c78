"""Grouped-query self-attention with rotary embeddings, optional per-head q/k RMSNorm (Qwen3) and a KV cache.

For each head h, with D = head_dim, n_rep = H / Hkv and key/value head g = h // n_rep (query heads 0..n_rep-1 share
key/value head 0, the next n_rep share head 1, ...):

    q_h = RoPE(q_norm(x Wq_h^T)),  k_g = RoPE(k_norm(x Wk_g^T)),  v_g = x Wv_g^T      (q_norm/k_norm: Qwen3 only)
    out_h = softmax(q_h k_g^T / sqrt(D) + mask) v_g
    y = concat_h(out_h) Wo^T

Visibility (the mask): query i, at absolute position past + i, sees key j iff j <= past + i and the key is a real
token (attention_mask[b, j] == 1), and always sees itself. So no softmax row is ever empty: a left-pad query
attends to itself alone and stays finite (never NaN), and real tokens never look at pads.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .norm import RMSNorm
from .rope import apply_rotary

# enable_gqa appeared in torch 2.5; older versions repeat the key/value heads instead.
_SDPA_HAS_GQA = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)


def build_attention_mask(attention_mask, num_queries, past, device):
    """Return (mask, is_causal) for scaled_dot_product_attention.

    attention_mask: (B, S) with 1 = real token, 0 = pad, S = past + T; or None (every token real).
    mask: None, or bool (B, 1, T, S) with True = may attend.
    Fast paths: no pads and no past -> (None, True), SDPA's own causal kernel; no pads and a single new query
    -> (None, False), since the newest token sees every key.
    """
    T = num_queries
    no_pads = attention_mask is None or bool(attention_mask.all())
    if no_pads and past == 0:
        return None, True
    if no_pads and T == 1:
        return None, False
    S = past + T
    query_pos = torch.arange(past, S, device=device)[:, None]  # (T, 1) absolute positions of the queries
    key_pos = torch.arange(S, device=device)[None, :]  # (1, S)
    causal = key_pos <= query_pos  # (T, S)
    if no_pads:
        return causal[None, None], False  # (1, 1, T, S)
    if attention_mask.shape[-1] != S:
        raise ValueError(f"attention_mask covers {attention_mask.shape[-1]} positions, expected past + T = {S}")
    real = attention_mask.to(torch.bool)[:, None, None, :]  # (B, 1, 1, S)
    itself = key_pos == query_pos  # (T, S)
    return (causal & real) | itself, False  # (B, 1, T, S)


class Attention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        C, H, Hkv, D = config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim
        self.layer_idx = layer_idx  # which slot of a KV cache this layer writes
        self.num_heads, self.num_kv_heads, self.head_dim = H, Hkv, D
        bias = config.attention_bias
        self.q_proj = nn.Linear(C, H * D, bias=bias)
        self.k_proj = nn.Linear(C, Hkv * D, bias=bias)
        self.v_proj = nn.Linear(C, Hkv * D, bias=bias)
        self.o_proj = nn.Linear(H * D, C, bias=bias)
        if config.qk_norm:  # Qwen3: RMSNorm over each head's D features, weights shared by all heads
            self.q_norm = RMSNorm(D, eps=config.rms_norm_eps)
            self.k_norm = RMSNorm(D, eps=config.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x, cos, sin, mask=None, is_causal=False, kv_cache=None):
        """x (B, T, C), cos/sin (B, T, D), mask (B or 1, 1, T, S) bool or None -> (B, T, C)."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim)  # (B, T, H, D)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim)  # (B, T, Hkv, D)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim)  # (B, T, Hkv, D)
        if self.q_norm is not None:  # per head, before RoPE
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H or Hkv, T, D)
        q, k = apply_rotary(q, k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, Hkv, S, D), S = past + T
        out = grouped_attention(q, k, v, mask, is_causal)  # (B, H, T, D)
        out = out.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim)  # (B, T, H*D)
        return self.o_proj(out)


def grouped_attention(q, k, v, mask, is_causal):
    """softmax(q k^T / sqrt(D) + mask) v with query head h reading key/value head h // n_rep.

    q (B, H, T, D), k/v (B, Hkv, S, D) -> (B, H, T, D).

    With a mask, the n_rep query heads that share a key/value head are folded into that head's queries: query head
    h = g * n_rep + r at time t becomes query row r * T + t of head g, and each such row takes mask row t. SDPA then
    sees Hkv heads on both sides and reads k/v where they lie. (Repeating k/v for every query head instead would copy
    the whole KV cache n_rep times at every decoding step.)
    """
    B, H, T, D = q.shape
    Hkv = k.shape[1]
    scale = 1.0 / math.sqrt(D)
    if H == Hkv:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale)
    if _SDPA_HAS_GQA and mask is None:
        # no mask: SDPA's fused kernels handle the head groups without copying k and v
        return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=scale, enable_gqa=True)
    # (enable_gqa is not used with a mask: the fused GPU kernels that accept masks do not take grouped heads, and on
    # CPU (torch 2.13) enable_gqa together with a broadcast (1, 1, T, S) mask gives wrong results.)
    if mask is None and is_causal:  # torch < 2.5 only: spell the causal mask out, as folding breaks is_causal
        S = k.shape[2]
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)[None, None]  # (1, 1, T, S)
    n_rep = H // Hkv
    q = q.reshape(B, Hkv, n_rep * T, D)  # head g's query rows: (r, t) for r < n_rep, t < T
    if mask is not None:
        mask = mask.unsqueeze(2).expand(-1, -1, n_rep, -1, -1)  # (B or 1, 1, n_rep, T, S): row t for every r
        mask = mask.reshape(mask.shape[0], 1, n_rep * T, mask.shape[-1])  # (B or 1, 1, n_rep*T, S)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)  # (B, Hkv, n_rep*T, D)
    return out.reshape(B, H, T, D)
