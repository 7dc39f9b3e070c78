"""Training-side helpers of the GRPO update, kept out of the loop so it reads like the algorithm.

- `micro_batches`: the row slices of the gradient_accumulation_steps equal micro-batches of a batch.
- `trim_padding`: drops the columns that are padding in every row of a micro-batch before its forward.
- `Accumulator`: adds micro-batch statistics into full-batch ones (token-weighted means, the summed scaled loss),
  so a step logs the same numbers however many micro-batches (and data-parallel ranks) it was split into.
- `enable_gradient_checkpointing`: recompute each decoder block in backward instead of storing its activations.
"""

import torch


def micro_batches(n_rows, gradient_accumulation_steps):
    """Row slices of gradient_accumulation_steps equal micro-batches of n_rows rows (GRPOConfig checks they divide)."""
    rows = n_rows // gradient_accumulation_steps
    return [slice(i, i + rows) for i in range(0, n_rows, rows)]


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
