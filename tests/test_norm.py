"""RMSNorm: y = weight * cast(x / sqrt(mean(x^2) + eps)), mean of squares in fp32, cast before the multiply."""

import math

import torch

from minigrpo.models.norm import RMSNorm


def test_rmsnorm_hand_values():
    norm = RMSNorm(2, eps=0.0)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0]))
    x = torch.tensor([[3.0, 4.0], [1.0, -1.0]])
    # row 0: mean(9, 16) = 12.5; row 1: mean(1, 1) = 1
    expected = torch.tensor([[3 / math.sqrt(12.5), 2 * 4 / math.sqrt(12.5)], [1.0, -2.0]])
    torch.testing.assert_close(norm(x), expected, rtol=0, atol=1e-6)


def test_rmsnorm_eps_is_added_inside_the_root():
    norm = RMSNorm(1, eps=3.0)
    # x = 1: 1 / sqrt(1 + 3) = 0.5
    torch.testing.assert_close(norm(torch.tensor([1.0])), torch.tensor([0.5]))


def test_rmsnorm_bf16_casts_back_before_the_weight_multiply():
    torch.manual_seed(0)
    norm = RMSNorm(8, eps=1e-6).to(torch.bfloat16)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(8))
    x = torch.randn(4, 8).to(torch.bfloat16)
    x32 = x.float()
    normalized = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6)).to(torch.bfloat16)
    y = norm(x)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, norm.weight * normalized)  # bit-exact: the multiply happens in bf16


def test_rmsnorm_squares_in_fp32_so_fp16_inputs_do_not_overflow():
    x = torch.full((1, 4), 300.0, dtype=torch.float16)  # 300^2 = 90000 > 65504, the fp16 maximum
    y = RMSNorm(4).to(torch.float16)(x)
    assert y.dtype == torch.float16
    torch.testing.assert_close(y, torch.ones(1, 4, dtype=torch.float16))
