"""RMSNorm, as Llama and Qwen3 compute it.

    y = weight * cast_to_input_dtype( x / sqrt(mean(x^2 over the last dim) + eps) )

The mean of squares is taken in float32 whatever the input dtype, and the result is cast back to the input dtype
BEFORE the weight multiply, so in a bf16 model the multiply itself happens in bf16 (exactly as transformers does;
multiplying in fp32 and casting afterwards rounds differently). No mean subtraction, no bias.
"""

import torch
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6, *, device=None, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        self.eps = eps

    def forward(self, x):  # x (..., dim)
        input_dtype = x.dtype
        x32 = x.to(torch.float32)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(input_dtype)

    def extra_repr(self):
        return f"{self.weight.shape[0]}, eps={self.eps}"
