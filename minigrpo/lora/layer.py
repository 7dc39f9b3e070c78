"""LoRALinear: a low-rank adapter wrapped around an existing nn.Linear.

    y = W x + b + s * B A dropout(x)        s = alpha / r   (rsLoRA: s = alpha / sqrt(r))

W (out, in) and b are the frozen base weights; A (r, in) and B (out, r) are the only trained tensors.
The conventions are PEFT's, so an adapter trained here loads with PEFT and the other way round:

- names: the wrapped linear is `base_layer`, the adapter matrices are `lora_A.weight` and `lora_B.weight`;
- init: A ~ kaiming_uniform(a = sqrt(5)), i.e. U(-1/sqrt(in), +1/sqrt(in)), and B = 0, so a fresh adapter is a no-op;
- dropout acts on the input of the adapter branch only (never on the base path, never between A and B);
- dtype: on a bf16/fp16 base the adapter is kept in fp32; the input is cast to the adapter dtype and the sum
  cast back to the base output dtype, so small updates to A and B are not rounded away.

Two flags switch the layer between its three behaviours:
- `disabled` (torchtune's name): the adapter branch is skipped and the layer computes the base linear exactly.
  This is how the GRPO reference model is obtained without a second copy of any weight.
- `merged`: W holds W + s * B A, and the forward is the base linear alone (for inference or export).
  Merging changes W in place, so a merged layer cannot also be disabled: forward raises instead of
  silently returning the merged output.
"""

import math

import torch
from torch import nn


def lora_scaling(r: int, alpha: float, use_rslora: bool = False) -> float:
    """s = alpha / r, or alpha / sqrt(r) with rsLoRA (rank-stabilized LoRA, Kalajdzievski 2023)."""
    return alpha / math.sqrt(r) if use_rslora else alpha / r


class LoRALinear(nn.Module):
    """y = base_layer(x) + s * lora_B(lora_A(dropout(x))); see the module docstring for the conventions."""

    def __init__(self, base_layer: nn.Linear, r: int, alpha: float, dropout: float = 0.0, use_rslora: bool = False):
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, found {type(base_layer).__name__}")
        if not (isinstance(r, int) and r > 0):
            raise ValueError(f"LoRA rank r must be a positive int, found {r!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), found {dropout}")
        self.base_layer = base_layer
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features
        self.r = r
        self.alpha = alpha
        self.use_rslora = use_rslora
        self.scaling = lora_scaling(r, alpha, use_rslora)

        w = base_layer.weight
        # Half-precision adapters would round away the small updates an optimizer makes, so keep them in fp32.
        lora_dtype = torch.float32 if w.dtype in (torch.float16, torch.bfloat16) else w.dtype
        factory = dict(device=w.device, dtype=lora_dtype)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(self.in_features, r, bias=False, **factory)  # weight (r, in)
        self.lora_B = nn.Linear(r, self.out_features, bias=False, **factory)  # weight (out, r)
        self.reset_lora_parameters()

        self.disabled = False
        self.merged = False

    @torch.no_grad()
    def reset_lora_parameters(self) -> None:
        """PEFT's default init: A ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)); B = 0."""
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    # Code that reads `proj.weight` (a dtype, a device, a shape) keeps working after injection, as with PEFT.
    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def delta_weight(self) -> torch.Tensor:
        """Delta W = s * (B @ A), shape (out, in), computed in fp32 whatever the adapter dtype."""
        return (self.lora_B.weight.float() @ self.lora_A.weight.float()) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., in) -> (..., out)
        if self.disabled and self.merged:
            raise RuntimeError(
                "LoRALinear is both disabled and merged: its weight holds W + s*B*A, so it cannot compute "
                "the base layer; call unmerge_lora(model) before disable_adapters(model)"
            )
        result = self.base_layer(x)
        if self.disabled or self.merged:
            return result
        x = x.to(self.lora_A.weight.dtype)
        # Same order of operations as PEFT (scale after B), so fp32 outputs agree to rounding.
        delta = self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling
        return (result + delta).to(result.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + s * (B @ A), summed in fp32 and cast once to W's dtype. Idempotent."""
        if self.merged:
            return
        w = self.base_layer.weight
        w.copy_((w.float() + self.delta_weight()).to(w.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - s * (B @ A). Idempotent. Exact only up to rounding: in bf16 the restored W is not bit-identical."""
        if not self.merged:
            return
        w = self.base_layer.weight
        w.copy_((w.float() - self.delta_weight()).to(w.dtype))
        self.merged = False

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, alpha={self.alpha}, "
            f"scaling={self.scaling:g}, use_rslora={self.use_rslora}"
        )
