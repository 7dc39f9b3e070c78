"""Turning next-token logits into a token: temperature, top-k, top-p, then a draw.

The filters follow transformers' `TemperatureLogitsWarper`, `TopKLogitsWarper` and `TopPLogitsWarper` exactly,
in the order `generate()` applies them (temperature -> top-k -> top-p), each keeping at least
`min_tokens_to_keep = 1` token. A filtered logit becomes -inf, so it gets probability exactly 0 after softmax.

The draw itself is inverse-CDF sampling (`draw_from_logits`): the same law as transformers' torch.multinomial,
so the same tokens in distribution, though not the same tokens for a given seed. Each draw reads one uniform
number per row; `row_uniforms` gives every row its own stream of them, seeded by `stream_seed` from a key such as
(seed, step, prompt index, completion index), so what a row samples depends on its key alone: not on the other
rows of the batch, the batch size, or which process of a data-parallel run samples it.

Shapes: B rows, V vocabulary. The filters take logits (B, V) and return (B, V); the draws return tokens (B,).
"""

import numpy as np
import torch

NEG_INF = float("-inf")


def check_sampling_args(temperature, top_k, top_p):
    """Raise a ValueError naming the first bad argument: temperature >= 0, top_k an int >= 0, 0 < top_p <= 1."""
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), found {temperature}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0 disables it), found {top_k!r}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (1 disables it), found {top_p}")


def apply_temperature(logits, temperature):
    """logits / temperature, for temperature > 0 (temperature = 0 means greedy and is handled by the caller).

    Temperature below 1 sharpens softmax(logits / temperature), above 1 flattens it.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 to scale logits, found {temperature} (use 0 only for greedy)")
    return logits if temperature == 1.0 else logits / temperature


def top_k_filter(logits, top_k, min_tokens_to_keep=1):
    """Keep the k largest logits of each row, set the rest to -inf.

    k_eff = min(max(top_k, min_tokens_to_keep), V); a token is removed iff its logit < the k_eff-th largest logit.
    Ties with the k_eff-th value are therefore all kept (transformers' rule), so a row may keep more than k_eff.
    top_k = 0 disables the filter.
    """
    check_sampling_args(1.0, top_k, 1.0)
    if top_k == 0:
        return logits
    k = min(max(top_k, min_tokens_to_keep), logits.shape[-1])
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth_largest, NEG_INF)


def top_p_filter(logits, top_p, min_tokens_to_keep=1):
    """Nucleus filter: keep the most probable tokens whose probabilities add up to at least top_p.

    With p = softmax(logits) sorted ascending and c_j = p_1 + ... + p_j (cumulative, ascending order), token j is
    removed iff c_j <= 1 - top_p, i.e. iff the tokens less or equally likely than it (itself included) carry at
    most 1 - top_p of the mass. The min_tokens_to_keep most probable tokens are always kept.
    Example: p = [0.5, 0.3, 0.15, 0.05], top_p = 0.7 -> ascending c = [0.05, 0.2, 0.5, 1.0], removed where
    c <= 0.3, so 0.5 and 0.3 are kept. top_p = 1 disables the filter.
    """
    check_sampling_args(1.0, 0, top_p)
    if top_p == 1.0:
        return logits
    sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=False)  # (B, V) ascending
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1.0 - top_p)
    remove_sorted[..., -min_tokens_to_keep:] = False  # the most probable tokens are last in ascending order
    remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, NEG_INF)


def stream_seed(*key):
    """A 64-bit seed that is a pure function of a key of ints, e.g. (seed, step, prompt index, completion index).

    The key is hashed by NumPy's SeedSequence (the tool NumPy provides for deriving independent streams), so keys
    that differ in one place give unrelated seeds. Negative ints are taken modulo 2**64.
    """
    if not key or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) for k in key):
        raise ValueError(f"stream_seed: expected a key of ints, found {key!r}")
    entropy = [int(k) % 2**64 for k in key]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


def row_uniforms(row_seeds, n, device="cpu"):
    """(B, n) float64 uniforms in [0, 1): row b holds the first n numbers of its own generator,
    torch.Generator().manual_seed(row_seeds[b]) (CPU, so the numbers do not depend on the device either).

    Row b depends on row_seeds[b] alone: not on the other rows, nor on B.
    """
    rows = [torch.rand(n, generator=torch.Generator().manual_seed(int(s)), dtype=torch.float64) for s in row_seeds]
    if not rows:
        raise ValueError("row_uniforms: expected at least one row seed, found none")
    return torch.stack(rows).to(device)  # (B, n)


def draw_from_logits(logits, generator=None, *, uniforms=None):
    """One token per row of Categorical(softmax(logits)), logits (B, V) -> (B,) long, by inverse-CDF sampling:

        w_v = exp(logit_v - max_v logit_v),  F_v = w_1 + ... + w_v,  u ~ Uniform[0, 1),
        token = the first v with F_v > u * F_V.

    P(token = v) = w_v / F_V = softmax(logits)_v, and a -inf logit (w_v = 0, so F_v = F_(v-1)) is never picked.
    This is the law torch.multinomial(softmax(logits), 1) samples, but it costs one random number per row
    instead of V (multinomial draws an exponential variable per vocabulary entry), which on CPU dominates a
    decoding step at large B * V. The cumulative sum is taken in float64 so that rounding over a vocabulary of
    ~10^5 entries stays far below any probability that matters.

    uniforms: (B,) the u of each row (e.g. a column of `row_uniforms`); None draws them from `generator`.
    """
    weights = (logits - logits.amax(dim=-1, keepdim=True)).exp()  # (B, V), max entry 1
    cdf = weights.double().cumsum_(dim=-1)  # (B, V) nondecreasing
    if uniforms is None:
        uniforms = torch.rand(cdf.shape[0], generator=generator, dtype=cdf.dtype, device=cdf.device)
    u = uniforms.to(cdf.device, cdf.dtype)[:, None] * cdf[:, -1:]  # (B, 1)
    token = torch.searchsorted(cdf, u, right=True).squeeze(-1)  # first v with F_v > u * F_V
    return token.clamp_(max=logits.shape[-1] - 1)  # u * F_V rounding up to F_V would give V


def sample_next_token(logits, *, temperature=1.0, top_k=0, top_p=1.0, generator=None, uniforms=None):
    """Pick one token per row from logits (B, V); returns (B,) long.

    temperature = 0: greedy, argmax(logits) (the first index on ties), top_k/top_p are irrelevant.
    Otherwise: token ~ Categorical(softmax(top_p(top_k(logits / temperature)))), drawn by `draw_from_logits`
    with `uniforms` (B,) when given, else with `generator`, so a seeded generator reproduces the same tokens.
    Filtering is done in float32 like transformers' generate, whatever the model dtype.
    """
    check_sampling_args(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1)
    scores = apply_temperature(logits.float(), temperature)
    scores = top_k_filter(scores, top_k)
    scores = top_p_filter(scores, top_p)
    return draw_from_logits(scores, generator, uniforms=uniforms)
