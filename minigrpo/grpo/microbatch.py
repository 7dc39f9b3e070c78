"""Micro-batches: a GRPO update computed gradient_accumulation_steps slices of rows at a time, adding up to the batch.

- `micro_batches`: the row slices of the gradient_accumulation_steps equal micro-batches of a batch.
- `no_grad_logprobs`: each micro-batch's log-probs under the policy as it is, no grad: the reference (adapters
  disabled) and the old policy of mu > 1.
- `accumulate_gradients`: forward and backward of every micro-batch, each loss times loss.micro_batch_weight, so
  the gradients add up to the whole batch's (under torchrun, the global batch's).
- `trim_padding`: drops the columns that are padding in every row of a micro-batch before its forward.
- `Accumulator`: adds micro-batch statistics into full-batch ones (token-weighted means, the summed scaled loss),
  so a step logs the same numbers however many micro-batches (and data-parallel ranks) it was split into.
- `enable_gradient_checkpointing`: recompute each decoder block in backward instead of storing its activations.
"""

import contextlib

import torch

from .distributed import all_sum, raise_together
from .lifecycle import NonFinite
from .logprobs import completion_logprobs
from .loss import micro_batch_weight, policy_loss


def micro_batches(n_rows, gradient_accumulation_steps):
    """Row slices of gradient_accumulation_steps equal micro-batches of n_rows rows (GRPOConfig checks they divide)."""
    rows = n_rows // gradient_accumulation_steps
    return [slice(i, i + rows) for i in range(0, n_rows, rows)]


def no_grad_logprobs(policy, batch, slices, config, autocast=None):
    """Per micro-batch (B_mb, N_mb) log-probs under the policy as it is (adapters on or off), no grad.

    `autocast` is a zero-argument callable returning the forward's autocast context (or None for none).
    """
    out = []
    policy.eval()  # same numbers the update's forward computes (no adapter dropout)
    with torch.no_grad(), (autocast() if autocast else contextlib.nullcontext()):
        for sl in slices:
            logp, _ = completion_logprobs(policy, *trim_padding(*batch.rows(sl)), temperature=config.temperature,
                                          chunk_size=config.logprob_chunk_size)
            out.append(logp)
    return out


def accumulate_gradients(policy, batch, advantages, slices, config, ref=None, old=None, *, autocast=None,
                         with_entropy=False, iteration=0):
    """Forward and backward every micro-batch, gradients adding up to the full batch's (loss.micro_batch_weight).

    advantages: (B*G,) on the device. ref / old: lists of per-micro-batch log-probs, or None (beta = 0 / mu = 1).
    Does not step the optimizer. Returns full-batch stats: loss (sum of the weighted micro-batch losses), token
    means of ratio, clip fractions, kl and entropy. Under torchrun the weights divide by the rows and tokens of
    the global batch (all_sum), so the ranks' gradients add up to its gradient, and the stats are its. A
    non-finite loss on any rank raises NonFinite on every rank, before its backward.
    """
    c = config
    n_rows, total_tokens = all_sum(torch.tensor([len(batch), int(batch.completion_mask.sum())])).tolist()
    policy.train()
    acc, failure = Accumulator(), None
    for j, sl in enumerate(slices):
        p_ids, p_mask, c_ids, c_mask = trim_padding(*batch.rows(sl))
        with (autocast() if autocast else contextlib.nullcontext()):
            logp, entropy = completion_logprobs(policy, p_ids, p_mask, c_ids, c_mask, temperature=c.temperature,
                                                chunk_size=c.logprob_chunk_size, with_entropy=with_entropy)
        loss, stats = policy_loss(
            logp, None if old is None else old[j], None if ref is None else ref[j], advantages[sl], c_mask,
            beta=c.beta, eps_low=c.eps_low, eps_high=c.eps_high, loss_type=c.loss_type,
            max_completion_length=c.max_completion_length,
            num_items_in_batch=total_tokens if c.loss_type == "dapo" else None)
        if not torch.isfinite(loss):
            failure = NonFinite("loss", f"loss is {loss.item()} (iteration {iteration}, micro-batch {j})")
            break
        tokens = int(c_mask.sum())
        weight = micro_batch_weight(c.loss_type, len(c_ids), n_rows, tokens, total_tokens)
        (loss * weight).backward()
        ent = None if entropy is None else float((entropy.detach() * c_mask).sum())
        acc.add(stats, weight * stats["loss"], tokens, ent)
    raise_together(failure)  # a non-finite loss on any rank stops every rank
    return acc.result(all_sum)


def trim_padding(p_ids, p_mask, c_ids, c_mask):
    """Drop columns that are padding in every row of a micro-batch: leading prompt pads, trailing completion pads."""
    first = int(p_mask.any(dim=0).nonzero()[0])
    width = max(int(c_mask.sum(dim=1).max()), 1)
    return p_ids[:, first:], p_mask[:, first:], c_ids[:, :width], c_mask[:, :width]


class Accumulator:
    """Sums micro-batch stats into full-batch ones: token-weighted means, and the scaled losses' sum."""

    def __init__(self):
        self.loss, self.tokens, self.sums, self.entropy = 0.0, 0, {}, 0.0

    def add(self, stats, scaled_loss, tokens, entropy_sum):
        self.loss += scaled_loss
        self.tokens += tokens
        for k in ("ratio_mean", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "kl"):
            self.sums[k] = self.sums.get(k, 0.0) + stats.get(k, 0.0) * tokens
        if entropy_sum is not None:
            self.entropy += entropy_sum

    def result(self, all_sum=None):
        """{loss, entropy, and the token means}. all_sum (distributed.all_sum) first adds every rank's sums, so the
        means are the global batch's; the loss is the sum of the ranks' losses, each already a share of it."""
        keys = list(self.sums)
        totals = torch.tensor([self.loss, self.tokens, self.entropy] + [self.sums[k] for k in keys],
                              dtype=torch.float64)
        if all_sum is not None:
            totals = all_sum(totals)
        loss, tokens, entropy, *sums = totals.tolist()
        n = max(tokens, 1)
        out = {k: v / n for k, v in zip(keys, sums)}
        out.update(loss=loss, entropy=entropy / n)
        return out


def enable_gradient_checkpointing(model):
    """Recompute each decoder block in backward (checkpointing in train mode only); idempotent.

    Switches on the hand-written Transformer's own `gradient_checkpointing` flag (model.model); any other model
    is an error, since the trainer trains only minigrpo's CausalLM.
    """
    body = getattr(model, "model", None)
    if not hasattr(body, "gradient_checkpointing"):
        raise TypeError(f"enable_gradient_checkpointing: expected a minigrpo CausalLM, whose body (model.model) has "
                        f"a gradient_checkpointing flag; found {type(model).__name__}")
    body.gradient_checkpointing = True
