"""The GRPO policy loss: a clipped surrogate per token, plus beta times the k3 KL, aggregated over tokens.

Per token t of completion i, with ratio w = exp(logp - old_logp) and the completion's advantage A_i:

    L_it = -min(w * A_i, clip(w, 1 - eps_low, 1 + eps_high) * A_i) + beta * k3(logp, ref_logp)

Clipping removes the incentive to move a ratio further out of the band [1 - eps_low, 1 + eps_high] in the
direction the advantage pushes: for A > 0 the gain stops at w = 1 + eps_high, for A < 0 at w = 1 - eps_low.
Outside that case the min picks the unclipped term and the gradient is -A * w * grad(logp).
eps_high > eps_low is DAPO's "clip-higher", which leaves room for unlikely tokens to become likely.

With one gradient step per generation (mu = 1) the old policy is the current one: old_logp = logp.detach(), so
w = 1 in value and nothing is clipped, while the gradient is A * grad(logp), the policy gradient. The loss value
is then -(aggregate of A) + beta * (aggregate of k3). For loss_type "grpo" with per-group advantages the first
term is 0 up to rounding (each sequence carries its own A as its token mean, and A sums to 0 over a group), so the
value is beta * KL on average; the token-weighted aggregations (bnpo, dr_grpo, dapo) weight each A by its
sequence's length, so a group whose long completions have negative advantages gives a positive value with beta = 0.

Aggregation over the masked tokens m_it (loss_type), for a micro-batch of B rows:

    grpo     (1/B) sum_i [ sum_t m L / max(1, sum_t m) ]      mean over sequences of each one's token mean
                                                              (DeepSeekMath's 1/G sum_i 1/|o_i| sum_t)
    bnpo     sum_it m L / max(1, sum_it m)                    token mean over the micro-batch
    dr_grpo  sum_it m L / (B * max_completion_length)         constant normalizer (Dr. GRPO)
    dapo     sum_it m L / max(1, num_items_in_batch)          token sum over the global token count (DAPO)

These are TRL GRPOTrainer's for one process without gradient accumulation.

Gradient accumulation (`micro_batch_weight`). When a generation batch of R rows and K masked tokens is split into
micro-batches whose gradients are added, GRPOTrainer scales micro-batch j (R_j rows, K_j tokens) so that the sum
is exactly the loss, and gradient, of the whole batch in one piece:

    grpo, dr_grpo   x R_j / R      each is a mean over its rows
    bnpo            x K_j / K      each is a mean over its tokens
    dapo            x 1            with num_items_in_batch = K, each is already a share of the batch's token mean

so the number of micro-batches changes the memory a step needs, not what it computes. TRL treats dapo the same
way but divides the grpo, bnpo and dr_grpo micro-batch losses by the number of micro-batches. For grpo and dr_grpo
with equal micro-batches that is the same thing; for bnpo it is a mean of micro-batch token means, which weights
the tokens of short micro-batches more, so its loss and gradient depend on how the batch was split, the more so
the more completion lengths vary. Without accumulation the two agree, which is what the TRL parity test checks.
"""

import torch

from .kl import kl_estimate

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


def micro_batch_weight(loss_type, rows, total_rows, tokens, total_tokens):
    """The factor a micro-batch's loss is multiplied by so that micro-batches add up to the full batch (see the
    module docstring): rows / total_rows for grpo and dr_grpo, tokens / total_tokens for bnpo, 1 for dapo."""
    if loss_type in ("grpo", "dr_grpo"):
        return rows / total_rows
    if loss_type == "bnpo":
        return tokens / max(total_tokens, 1)
    if loss_type == "dapo":
        return 1.0
    raise ValueError(f"micro_batch_weight: loss_type must be one of {LOSS_TYPES}, found {loss_type!r}")


def policy_loss(logp, old_logp, ref_logp, advantages, mask, *, beta, eps_low=0.2, eps_high=None,
                loss_type="grpo", max_completion_length=None, num_items_in_batch=None):
    """GRPO loss of a micro-batch and its statistics.

    Formula (see the module docstring for each aggregation):
        w    = exp(logp - old_logp)                     old_logp None means logp.detach() (w = 1, mu = 1)
        L_it = -min(w A_i, clip(w, 1 - eps_low, 1 + eps_high) A_i) + beta k3_it
        k3   = exp(ref - logp) - (ref - logp) - 1
        loss = aggregate_{loss_type}(L, mask)

    Args:
        logp: (B, T) log-probs of the completion tokens under the policy, with grad.
        old_logp: (B, T) log-probs under the policy that sampled them (no grad), or None.
        ref_logp: (B, T) log-probs under the reference policy (no grad); may be None when beta == 0.
            When given with beta == 0 it is used only for the "kl" statistic.
        advantages: (B,) one per completion, broadcast over its tokens; or (B, T) per token.
        mask: (B, T) 1 on completion tokens that count, 0 on padding (bool, int or float). Masked positions
            must still hold finite log-probs (they are multiplied by 0, as in TRL).
        beta: KL coefficient, >= 0 (keyword only: there is no safe default, see the package docstring).
        eps_low, eps_high: the clip band [1 - eps_low, 1 + eps_high]; eps_high None means eps_low.
        loss_type: "grpo" | "bnpo" | "dr_grpo" | "dapo".
        max_completion_length: required by dr_grpo, at least T; ignored by the other loss types.
        num_items_in_batch: dapo's normalizer, the masked-token count of the whole generation batch, i.e. of
            all micro-batches accumulated into one optimizer step (int or 0-dim tensor); None means mask.sum(),
            i.e. this micro-batch is the whole batch. Ignored by the other loss types.

    Returns:
        loss: 0-dim tensor with grad (in logp's dtype).
        stats: dict of python floats, detached, computed with one device sync:
            loss                  the loss value
            ratio_mean            token mean of w over masked tokens
            clip_ratio/low_mean   fraction of masked tokens with w < 1 - eps_low and A < 0   (TRL's names)
            clip_ratio/high_mean  fraction with w > 1 + eps_high and A > 0
            clip_ratio/region_mean  fraction with either
            clip_ratio/low_min    min over rows with tokens of the row's low-clip fraction
            clip_ratio/high_max   max over rows with tokens of the row's high-clip fraction
            num_tokens            masked tokens in this micro-batch
            kl                    token mean of k3 over masked tokens; present only when ref_logp is given
    """
    B, T = _check_inputs(logp, old_logp, ref_logp, advantages, mask, beta, eps_low, eps_high, loss_type,
                         max_completion_length, num_items_in_batch)
    eps_high = eps_low if eps_high is None else eps_high
    if old_logp is None:
        old_logp = logp.detach()
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages  # (B, 1) or (B, T)
    adv = adv.to(logp.dtype)
    m = mask.to(logp.dtype)  # (B, T)

    ratio = torch.exp(logp - old_logp)  # (B, T)
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    per_token = -torch.min(ratio * adv, clipped * adv)  # (B, T)
    kl = None
    if beta != 0:
        kl = kl_estimate(logp, ref_logp, kind="k3")  # (B, T)
        per_token = per_token + beta * kl
    elif ref_logp is not None:
        with torch.no_grad():  # only reported: keep it out of the graph
            kl = kl_estimate(logp, ref_logp, kind="k3")

    if loss_type == "grpo":
        loss = ((per_token * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * m).sum() / m.sum().clamp(min=1)
    elif loss_type == "dr_grpo":
        loss = (per_token * m).sum() / (B * max_completion_length)
    else:  # dapo
        n = m.sum() if num_items_in_batch is None else torch.as_tensor(num_items_in_batch, dtype=logp.dtype)
        loss = (per_token * m).sum() / n.to(logp.device).clamp(min=1)

    return loss, _stats(loss, ratio, adv, kl, m, eps_low, eps_high)


@torch.no_grad()
def _stats(loss, ratio, adv, kl, m, eps_low, eps_high):
    n_tok = m.sum()
    token_mean = lambda x: (x * m).sum() / n_tok.clamp(min=1)  # noqa: E731  global masked mean
    low = ((ratio < 1 - eps_low) & (adv < 0)).to(m.dtype)  # (B, T)
    high = ((ratio > 1 + eps_high) & (adv > 0)).to(m.dtype)
    region = torch.maximum(low, high)

    # Per-row clip fractions over rows that have tokens (TRL skips the others as NaN).
    row_n = m.sum(dim=1)  # (B,)
    has = row_n > 0
    row_low = (low * m).sum(dim=1) / row_n.clamp(min=1)
    row_high = (high * m).sum(dim=1) / row_n.clamp(min=1)
    low_min = row_low[has].min() if has.any() else m.new_zeros(())
    high_max = row_high[has].max() if has.any() else m.new_zeros(())

    names = ["loss", "ratio_mean", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean",
             "clip_ratio/low_min", "clip_ratio/high_max", "num_tokens"]
    values = [loss.detach(), token_mean(ratio.detach()), token_mean(low), token_mean(high), token_mean(region),
              low_min, high_max, n_tok]
    if kl is not None:
        names.append("kl")
        values.append(token_mean(kl.detach()))
    dtype = torch.promote_types(m.dtype, torch.float32)  # float64 stays float64; half is widened
    return dict(zip(names, torch.stack([v.to(dtype) for v in values]).tolist()))


def _check_inputs(logp, old_logp, ref_logp, advantages, mask, beta, eps_low, eps_high, loss_type,
                  max_completion_length, num_items_in_batch):
    where = "policy_loss"
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"{where}: loss_type must be one of {LOSS_TYPES}, found {loss_type!r}")
    if not isinstance(logp, torch.Tensor) or logp.dim() != 2 or not logp.is_floating_point():
        raise ValueError(f"{where}: logp must be a floating (B, T) tensor, found {_describe(logp)}")
    B, T = logp.shape
    for name, t in (("old_logp", old_logp), ("ref_logp", ref_logp), ("mask", mask)):
        if t is None and name != "mask":
            continue
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (B, T):
            raise ValueError(f"{where}: {name} must be (B, T) = {(B, T)} like logp, found {_describe(t)}")
    if not isinstance(advantages, torch.Tensor) or tuple(advantages.shape) not in ((B,), (B, T)):
        raise ValueError(
            f"{where}: advantages must be (B,) = {(B,)} or (B, T) = {(B, T)}, found {_describe(advantages)}"
        )
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or beta < 0:
        raise ValueError(f"{where}: beta must be a number >= 0, found {beta!r}")
    if beta != 0 and ref_logp is None:
        raise ValueError(f"{where}: beta = {beta} needs ref_logp (log-probs under the reference policy), found None")
    if not 0 <= eps_low < 1:
        raise ValueError(f"{where}: eps_low must be in [0, 1), found {eps_low!r}")
    if eps_high is not None and not eps_high >= 0:
        raise ValueError(f"{where}: eps_high must be >= 0 or None, found {eps_high!r}")
    if loss_type == "dr_grpo":
        if max_completion_length is None:
            raise ValueError(f"{where}: loss_type 'dr_grpo' needs max_completion_length (its normalizer), found None")
        if not isinstance(max_completion_length, int) or max_completion_length < max(T, 1):
            raise ValueError(
                f"{where}: max_completion_length must be an int >= the completion width T = {T}, "
                f"found {max_completion_length!r}"
            )
    if num_items_in_batch is not None and loss_type == "dapo":
        n = num_items_in_batch.item() if isinstance(num_items_in_batch, torch.Tensor) else num_items_in_batch
        if not isinstance(n, (int, float)) or n < 0:
            raise ValueError(f"{where}: num_items_in_batch must be a token count >= 0, found {num_items_in_batch!r}")
    return B, T


def _describe(x):
    if isinstance(x, torch.Tensor):
        return f"shape {tuple(x.shape)} {x.dtype}"
    return type(x).__name__
