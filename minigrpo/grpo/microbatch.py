"""Training-side helpers of the GRPO update, kept out of the loop so it reads like the algorithm.

- `Accumulator`: adds micro-batch statistics into full-batch ones (token-weighted means, the summed scaled loss),
  so a step logs the same numbers however many micro-batches it was split into.
- `trim_padding`: drops the columns that are padding in every row of a micro-batch before its forward.
- `enable_gradient_checkpointing`: recompute each decoder block in backward instead of storing its activations.
"""

import torch
from torch.utils.checkpoint import checkpoint as activation_checkpoint


def enable_gradient_checkpointing(model):
    """Recompute each decoder block in backward (see the module docstring); idempotent.

    The hand-written Transformer has a `gradient_checkpointing` flag (checkpointing in train mode only); for any
    other model each block of model.model.layers gets its forward wrapped while grad is enabled.
    """
    body = getattr(model, "model", None)
    if hasattr(body, "gradient_checkpointing"):
        body.gradient_checkpointing = True
        return
    for block in body.layers:
        if getattr(block, "_checkpointed", False):
            continue
        inner = block.forward

        def forward(*args, _inner=inner, **kwargs):
            if torch.is_grad_enabled() and kwargs.get("kv_cache") is None:
                return activation_checkpoint(_inner, *args, use_reentrant=False, **kwargs)
            return _inner(*args, **kwargs)

        block.forward, block._checkpointed = forward, True


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

    def result(self):
        n = max(self.tokens, 1)
        out = {k: v / n for k, v in self.sums.items()}
        out.update(loss=self.loss, entropy=self.entropy / n)
        return out


def trim_padding(p_ids, p_mask, c_ids, c_mask, adv):
    """Drop columns that are padding in every row of a micro-batch: leading prompt pads, trailing completion pads."""
    first = int(p_mask.any(dim=0).nonzero()[0])
    width = max(int(c_mask.sum(dim=1).max()), 1)
    return p_ids[:, first:], p_mask[:, first:], c_ids[:, :width], c_mask[:, :width], adv
