"""LoRALinear (minigrpo/lora/layer.py): y = W x + b + s * B A dropout(x), against values worked by hand."""

import math

import pytest
import torch
from torch import nn

from minigrpo.lora import LoRALinear, lora_scaling


def hand_linear():
    """W = [[1, 2], [3, 4]], b = [0.5, -0.5]: for x = [1, 3], W x + b = [7.5, 14.5]."""
    base = nn.Linear(2, 2)
    with torch.no_grad():
        base.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        base.bias.copy_(torch.tensor([0.5, -0.5]))
    return base


def set_ab(layer, a, b):
    with torch.no_grad():
        layer.lora_A.weight.copy_(torch.tensor(a))
        layer.lora_B.weight.copy_(torch.tensor(b))


def test_fresh_adapter_gives_base_output_exactly():
    torch.manual_seed(0)
    base = nn.Linear(8, 5)
    layer = LoRALinear(base, r=4, alpha=8)
    x = torch.randn(3, 7, 8)
    assert torch.count_nonzero(layer.lora_B.weight) == 0  # B = 0 at init
    assert torch.equal(layer(x), base(x))


def test_forward_matches_hand_worked_value():
    # r = 1, alpha = 2 -> s = 2.  A = [[1, -1]], B = [[2], [0.5]], x = [1, 3]
    # A x = 1 - 3 = -2;  B A x = [-4, -1];  s B A x = [-8, -2];  y = [7.5, 14.5] + [-8, -2] = [-0.5, 12.5]
    layer = LoRALinear(hand_linear(), r=1, alpha=2)
    set_ab(layer, [[1.0, -1.0]], [[2.0], [0.5]])
    y = layer(torch.tensor([[1.0, 3.0]]))
    torch.testing.assert_close(y, torch.tensor([[-0.5, 12.5]]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("use_rslora, scaling, expected", [(False, 2.0, [9.5, 18.5]), (True, 4.0, [11.5, 22.5])])
def test_rslora_scales_by_alpha_over_sqrt_r(use_rslora, scaling, expected):
    # r = 4, alpha = 8: plain s = 8 / 4 = 2; rsLoRA s = 8 / sqrt(4) = 4.
    # A rows [1,0], [0,1], [1,1], [0,0]; x = [1, 3] -> A x = [1, 3, 4, 0]
    # B = [[1,0,0,0], [0,0,0.5,1]] -> B A x = [1, 2];  y = [7.5, 14.5] + s * [1, 2]
    layer = LoRALinear(hand_linear(), r=4, alpha=8, use_rslora=use_rslora)
    assert layer.scaling == scaling == lora_scaling(4, 8, use_rslora)
    set_ab(layer, [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]], [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.5, 1.0]])
    torch.testing.assert_close(layer(torch.tensor([[1.0, 3.0]])), torch.tensor([expected]), rtol=0, atol=1e-6)


def test_init_matches_peft_bound_a_uniform_b_zero():
    # kaiming_uniform(a = sqrt(5)): gain = sqrt(2 / (1 + 5)), bound = gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in)
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(256, 64), r=16, alpha=32)
    a = layer.lora_A.weight
    assert a.shape == (16, 256) and layer.lora_B.weight.shape == (64, 16)
    bound = 1 / math.sqrt(256)
    assert a.abs().max().item() <= bound
    assert a.abs().max().item() > 0.95 * bound  # fills the interval, not a narrower one
    assert abs(a.mean().item()) < 0.05 * bound
    assert torch.count_nonzero(layer.lora_B.weight) == 0


def test_bf16_base_keeps_fp32_adapters_and_returns_bf16():
    torch.manual_seed(0)
    base = nn.Linear(8, 6).to(torch.bfloat16)
    layer = LoRALinear(base, r=2, alpha=4)
    nn.init.normal_(layer.lora_B.weight)
    assert layer.lora_A.weight.dtype == layer.lora_B.weight.dtype == torch.float32
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    y = layer(x)
    assert y.dtype == torch.bfloat16
    # the adapter branch runs in fp32 on the fp32 view of x; the sum is cast back once
    delta = (x.float() @ layer.lora_A.weight.T @ layer.lora_B.weight.T) * 2.0
    assert torch.equal(y, (base(x) + delta).to(torch.bfloat16))


def test_dropout_acts_on_adapter_input_only():
    torch.manual_seed(0)
    base = nn.Linear(8, 6)
    layer = LoRALinear(base, r=2, alpha=2, dropout=0.5)
    nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(4, 8)
    torch.manual_seed(123)
    y = layer(x)
    torch.manual_seed(123)
    dropped = nn.functional.dropout(x, 0.5, training=True)
    expected = base(x) + layer.lora_B(layer.lora_A(dropped)) * 1.0
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-6)
    layer.eval()  # no dropout in eval mode
    torch.testing.assert_close(layer(x), base(x) + layer.lora_B(layer.lora_A(x)), rtol=0, atol=1e-6)


def test_disabled_flag_computes_base_layer_exactly():
    torch.manual_seed(0)
    base = nn.Linear(8, 6)
    layer = LoRALinear(base, r=2, alpha=4)
    nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(5, 8)
    assert not torch.equal(layer(x), base(x))
    layer.disabled = True
    assert torch.equal(layer(x), base(x))


def test_merge_then_unmerge_restores_weight_and_merged_equals_unmerged():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(8, 6), r=2, alpha=4)
    nn.init.normal_(layer.lora_B.weight)
    w0 = layer.base_layer.weight.detach().clone()
    x = torch.randn(5, 8)
    y_unmerged = layer(x)
    layer.merge()
    layer.merge()  # idempotent: merging twice adds the delta once
    torch.testing.assert_close(layer.base_layer.weight, w0 + 2.0 * layer.lora_B.weight @ layer.lora_A.weight)
    torch.testing.assert_close(layer(x), y_unmerged, rtol=1e-5, atol=1e-6)
    layer.unmerge()
    layer.unmerge()
    assert not layer.merged
    torch.testing.assert_close(layer.base_layer.weight, w0, rtol=0, atol=1e-6)


def test_disabled_and_merged_layer_refuses_to_run():
    layer = LoRALinear(nn.Linear(4, 4), r=2, alpha=2)
    layer.merge()
    layer.disabled = True
    with pytest.raises(RuntimeError, match="unmerge"):
        layer(torch.randn(1, 4))


def test_only_a_and_b_receive_gradients_when_base_is_frozen():
    torch.manual_seed(0)
    base = nn.Linear(8, 6)
    base.requires_grad_(False)
    layer = LoRALinear(base, r=2, alpha=4)
    nn.init.normal_(layer.lora_B.weight)
    layer(torch.randn(3, 8)).sum().backward()
    assert base.weight.grad is None and base.bias.grad is None
    assert layer.lora_A.weight.grad is not None and layer.lora_B.weight.grad is not None


def test_parameter_names_follow_peft():
    layer = LoRALinear(nn.Linear(4, 3), r=2, alpha=2)
    assert set(layer.state_dict()) == {"base_layer.weight", "base_layer.bias", "lora_A.weight", "lora_B.weight"}
    assert layer.weight is layer.base_layer.weight  # readers of `proj.weight` see the base weight


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(nn.Linear(4, 4), r=0, alpha=1)
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(nn.Conv1d(4, 4, 1), r=2, alpha=1)
