"""Optimizers and the learning-rate schedule shared by the CPT and SFT stages.

`make_optimizer(model, kind="adamw")` returns AdamW over every trainable parameter. `kind="muon"` follows the
paper's CPT ablation: `torch.optim.Muon` (momentum orthogonalised by Newton-Schulz iterations) for the 2-D weight
matrices inside the decoder blocks, and AdamW for everything Muon is not meant for: embeddings, the output head
(Muon's authors keep both on AdamW) and the 1-D norm weights.
"""

import math

import torch


class _Chain(torch.optim.Optimizer):
    """Two optimizers stepped together, so callers hold one object (zero_grad, step, state_dict)."""

    def __init__(self, *optimizers):
        self.optimizers = optimizers
        groups = [g for opt in optimizers for g in opt.param_groups]
        self.param_groups = groups  # a scheduler sees every group and sets their lr
        self.defaults = {}
        self.state = {}

    def zero_grad(self, set_to_none=True):
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        for opt in self.optimizers:
            opt.step()

    def state_dict(self):
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state):
        for opt, s in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(s)


def make_optimizer(model, kind="adamw", lr=1e-3, weight_decay=0.0, betas=(0.9, 0.95)):
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("make_optimizer: the model has no trainable parameters")
    if kind == "adamw":
        return torch.optim.AdamW([p for _, p in named], lr=lr, weight_decay=weight_decay, betas=betas)
    if kind == "muon":
        is_matrix = lambda n, p: p.ndim == 2 and ".layers." in f".{n}"  # noqa: E731  (block weights only)
        matrices = [p for n, p in named if is_matrix(n, p)]
        others = [p for n, p in named if not is_matrix(n, p)]
        # adjust_lr_fn="match_rms_adamw" rescales Muon's update to AdamW's RMS, so one lr serves both.
        muon = torch.optim.Muon(matrices, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
        adamw = torch.optim.AdamW(others, lr=lr, weight_decay=weight_decay, betas=betas)
        return _Chain(muon, adamw)
    raise ValueError(f"unknown optimizer kind {kind!r}: expected 'adamw' or 'muon'")


def warmup_cosine(step, total_steps, warmup_steps, min_ratio=0.1):
    """Learning-rate multiplier: linear warmup to 1 over `warmup_steps`, then cosine decay to `min_ratio`.

    m(s) = (s + 1) / warmup                                            for s < warmup
    m(s) = min_ratio + (1 - min_ratio) * 0.5 * (1 + cos(pi * p))       p = (s - warmup) / max(1, total - warmup)
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
