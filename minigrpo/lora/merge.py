"""Folding LoRA into the weights it wraps: the matrix a layer applies, a temporary merge, a permanent one.

    effective_weight(layer)   W + s * B @ A while the adapter is active, W otherwise (differentiable in A and B)
    merged(model)             a block in which every wrapped W holds W + s * B @ A; on exit W is restored bit for bit
    merge_and_unload(model)   W <- W + s * B @ A for good, and each LoRALinear replaced by its nn.Linear

Why `merged` copies W instead of calling unmerge_lora: subtracting s * B @ A again is exact only up to rounding
(in bf16 the restored W is visibly not the original), and GRPO's KL reference, the model with its adapters
disabled, must stay the base model exactly.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from minigrpo.lora.inject import lora_layers, merge_lora
from minigrpo.lora.layer import LoRALinear


def effective_weight(layer: nn.Module) -> torch.Tensor:
    """The (out, in) matrix `layer` applies: W + s * B @ A for an active, unmerged LoRALinear, else its weight.

    The sum is cast to W's dtype, as the merged layer would hold it; gradients reach A and B.
    """
    if isinstance(layer, LoRALinear) and not (layer.disabled or layer.merged):
        return layer.weight + layer.delta_weight().to(layer.weight.dtype)
    return layer.weight


@contextmanager
def merged(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block every LoRALinear's base weight holds W + s * B @ A (and forward skips the adapter
    branch); on exit, also when the block raises, the saved W is copied back and the layers are unmerged.

    Costs one copy of every wrapped base weight while the block runs.
    """
    layers = [m for _, m in lora_layers(model)]
    if any(m.merged for m in layers):
        raise RuntimeError("merged: the model's LoRA layers are already merged; their weights no longer hold W")
    saved = [m.base_layer.weight.detach().clone() for m in layers]
    merge_lora(model)
    try:
        yield model
    finally:
        with torch.no_grad():
            for m, w in zip(layers, saved):
                m.base_layer.weight.copy_(w)
                m.merged = False  # W is the original again: the adapter branch is live, as before the block


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge every adapter into its base weight and put the plain nn.Linear back in place of the LoRALinear.

    Afterwards the model holds no adapters (no LoRALinear, no model.lora_config) and computes what the adapted
    model computed, up to the rounding of W + s * B @ A to W's dtype. Used to continue from a LoRA stage (SFT)
    with fresh adapters, whose reference model is then the merged one. Returns the model.
    """
    merge_lora(model)
    for name, m in lora_layers(model):
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, m.base_layer)
    del model.lora_config
    return model
