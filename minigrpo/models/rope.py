"""Rotary position embedding (RoPE), split-halves convention, with optional `llama3` frequency scaling.

Frequencies, for i = 0 .. D/2 - 1 (always computed in float32, whatever the model dtype):

    inv_freq[i] = 1 / theta^(2i / D)

`llama3` scaling (Llama 3.1) with factor f, low/high frequency factors lf/hf and original context L rescales each
frequency by its wavelength w = 2*pi / inv_freq:

    w < L / hf            (high frequency, short wavelength)  -> inv_freq            unchanged
    w > L / lf            (low frequency, long wavelength)    -> inv_freq / f
    otherwise             (the band in between)               -> (1 - s) * inv_freq / f + s * inv_freq,
                                                                 s = (L / w - lf) / (hf - lf)

For a position p: angle[p, j] = p * inv_freq[j mod D/2] for j = 0 .. D-1, and a vector x of width D rotates as

    x' = x * cos(angle) + rotate_half(x) * sin(angle),   rotate_half(x) = cat(-x[D/2:], x[:D/2])

so dimension i is paired with dimension i + D/2 (the "halves" layout of Hugging Face checkpoints; NOT the
interleaved (2i, 2i+1) pairs of Meta's original code, whose q/k weights are permuted differently).
"""

import math

import torch
from torch import nn


def rope_inv_freq(head_dim, theta, rope_scaling=None, device=None):
    """(D/2,) float32 inverse frequencies, with `llama3` scaling applied when rope_scaling asks for it."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).to(torch.float32) / head_dim
    inv_freq = 1.0 / (theta ** exponent)
    if rope_scaling is not None and rope_scaling.get("rope_type") == "llama3":
        inv_freq = llama3_scale_inv_freq(inv_freq, **{k: rope_scaling[k] for k in (
            "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")})
    return inv_freq


def llama3_scale_inv_freq(inv_freq, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings):
    """Llama 3.1's per-band rescaling of RoPE frequencies (formula in the module docstring)."""
    old_len = original_max_position_embeddings
    low_freq_wavelen = old_len / low_freq_factor
    high_freq_wavelen = old_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def rotate_half(x):  # x (..., D) -> (..., D): (x1, x2) -> (-x2, x1) on the two halves
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(q, k, cos, sin):
    """Rotate q (B, H, T, D) and k (B, Hkv, T, D) by cos/sin (B, T, D)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, D), broadcast over heads
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class RotaryEmbedding(nn.Module):
    """Turns position ids into the cos/sin tables; holds inv_freq as a non-persistent float32 buffer."""

    def __init__(self, head_dim, theta, rope_scaling=None, device=None):
        super().__init__()
        self.head_dim, self.theta, self.rope_scaling = head_dim, theta, rope_scaling
        self.register_buffer("inv_freq", rope_inv_freq(head_dim, theta, rope_scaling, device), persistent=False)

    def reset_inv_freq(self, device=None):
        """Recompute inv_freq in float32 on `device` (default: where it is), e.g. after building on the meta device."""
        device = self.inv_freq.device if device is None else device
        self.inv_freq = rope_inv_freq(self.head_dim, self.theta, self.rope_scaling, device=device)

    def _apply(self, fn, *args, **kwargs):
        # `model.to(torch.bfloat16)` would round inv_freq to bf16 and shift the angles at long positions; keep
        # the buffer float32 through any cast by recomputing it on whatever device the cast left it on.
        out = super()._apply(fn, *args, **kwargs)
        if not self.inv_freq.is_meta:
            self.reset_inv_freq()
        return out

    @torch.no_grad()
    def forward(self, position_ids, dtype):
        """position_ids (B, T) -> cos, sin (B, T, D) in `dtype` (angles computed in float32)."""
        freqs = position_ids[:, :, None].to(torch.float32) * self.inv_freq[None, None, :]  # (B, T, D/2)
        angles = torch.cat((freqs, freqs), dim=-1)  # (B, T, D)
        return angles.cos().to(dtype), angles.sin().to(dtype)
