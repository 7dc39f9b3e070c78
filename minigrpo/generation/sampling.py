"""Turning next-token logits into a token: temperature, top-k, top-p, then a draw.

The filters follow transformers' `TemperatureLogitsWarper`, `TopKLogitsWarper` and `TopPLogitsWarper` exactly,
in the order `generate()` applies them (temperature -> top-k -> top-p), each keeping at least
`min_tokens_to_keep = 1` token. A filtered logit becomes -inf, so it gets probability exactly 0 after softmax.

The draw itself is inverse-CDF sampling (`draw_from_logits`): the same law as transformers' torch.multinomial,
so the same tokens in distribution, though not the same tokens for a given seed.

Shapes: B rows, V vocabulary. The filters take logits (B, V) and return (B, V); the draws return tokens (B,).
"""

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


def draw_from_logits(logits, generator=None):
    """One token per row of Categorical(softmax(logits)), logits (B, V) -> (B,) long, by inverse-CDF sampling:

        w_v = exp(logit_v - max_v logit_v),  F_v = w_1 + ... + w_v,  u ~ Uniform[0, 1),
        token = the first v with F_v > u * F_V.

    P(token = v) = w_v / F_V = softmax(logits)_v, and a -inf logit (w_v = 0, so F_v = F_(v-1)) is never picked.
    This is the law torch.multinomial(softmax(logits), 1) samples, but it costs one random number per row
    instead of V (multinomial draws an exponential variable per vocabulary entry), which on CPU dominates a
    decoding step at large B * V. The cumulative sum is taken in float64 so that rounding over a vocabulary of
    ~10^5 entries stays far below any probability that matters.
    """
    weights = (logits - logits.amax(dim=-1, keepdim=True)).exp()  # (B, V), max entry 1
    cdf = weights.double().cumsum_(dim=-1)  # (B, V) nondecreasing
    u = torch.rand(cdf.shape[0], 1, generator=generator, dtype=cdf.dtype, device=cdf.device) * cdf[:, -1:]
    token = torch.searchsorted(cdf, u, right=True).squeeze(-1)  # first v with F_v > u * F_V
    return token.clamp_(max=logits.shape[-1] - 1)  # u * F_V rounding up to F_V would give V


def sample_next_token(logits, *, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    """Pick one token per row from logits (B, V); returns (B,) long.

    temperature = 0: greedy, argmax(logits) (the first index on ties), top_k/top_p are irrelevant.
    Otherwise: token ~ Categorical(softmax(top_p(top_k(logits / temperature)))), drawn by `draw_from_logits`
    with `generator`, so a seeded generator reproduces the same tokens. Filtering is done in float32 like
    transformers' generate, whatever the model dtype.
    """
    check_sampling_args(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1)
    scores = apply_temperature(logits.float(), temperature)
    scores = top_k_filter(scores, top_k)
    scores = top_p_filter(scores, top_p)
    return draw_from_logits(scores, generator)
