"""effective_weight / merged / merge_and_unload (minigrpo/lora/merge.py), by hand and on a toy network."""

import pytest
import torch
from torch import nn

from minigrpo.lora import (LoRALinear, effective_weight, inject_lora, lora_layers,
                           merge_and_unload, merged)


class Toy(nn.Module):
    """ids (B, T) -> logits (B, T, V) through two LoRA targets and a frozen layer in between."""

    def __init__(self, v=11, c=8):
        super().__init__()
        self.embed = nn.Embedding(v, c)
        self.q_proj = nn.Linear(c, c, bias=False)
        self.mlp = nn.Linear(c, c)
        self.o_proj = nn.Linear(c, v)

    def forward(self, ids):
        return self.o_proj(torch.tanh(self.mlp(self.q_proj(self.embed(ids)))))


def randomize_b(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in lora_layers(model):
            m.lora_B.weight.copy_(torch.randn(m.lora_B.weight.shape, generator=g) * 0.1)


def test_effective_weight_is_w_plus_s_b_a_by_hand_and_differentiable():
    # W = [[1, 2], [3, 4]], r = 1, alpha = 2 (s = 2), A = [[1, -1]], B = [[2], [0.5]]:
    # s B A = 2 [[2, -2], [0.5, -0.5]] = [[4, -4], [1, -1]]  ->  W + s B A = [[5, -2], [4, 3]]
    base = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        base.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    layer = LoRALinear(base, r=1, alpha=2)
    with torch.no_grad():
        layer.lora_A.weight.copy_(torch.tensor([[1.0, -1.0]]))
        layer.lora_B.weight.copy_(torch.tensor([[2.0], [0.5]]))
    w = effective_weight(layer)
    assert torch.equal(w, torch.tensor([[5.0, -2.0], [4.0, 3.0]]))
    w.sum().backward()  # d sum(s B A) / d A = s * B^T 1 = 2 * [2.5, 2.5]
    assert torch.equal(layer.lora_A.weight.grad, torch.tensor([[5.0, 5.0]]))
    layer.disabled = True
    assert effective_weight(layer) is base.weight  # disabled: the base weight alone
    assert effective_weight(base) is base.weight  # a plain linear


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merged_block_computes_the_adapted_model_and_restores_w_bit_for_bit(dtype):
    torch.manual_seed(0)
    model = Toy().to(dtype)
    inject_lora(model, r=2, alpha=4, targets=("q_proj", "o_proj"))
    randomize_b(model)
    ids = torch.tensor([[1, 2, 3, 4]])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        adapted = model(ids)
        with merged(model):
            assert all(m.merged for _, m in lora_layers(model))
            inside = model(ids)
    tol = 1e-5 if dtype == torch.float32 else 5e-2  # W + s B A rounded once to the weights' dtype
    torch.testing.assert_close(inside.float(), adapted.float(), rtol=0, atol=tol)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n  # bit for bit, also in bf16 where unmerge_lora is not
    assert not any(m.merged for _, m in lora_layers(model))


def test_merged_restores_w_when_the_block_raises():
    model = Toy()
    inject_lora(model, r=2, alpha=4, targets=("q_proj", "o_proj"))
    randomize_b(model)
    w = model.q_proj.base_layer.weight
    w0 = w.detach().clone()
    with pytest.raises(RuntimeError, match="boom"), merged(model):
        assert not torch.equal(w, w0)
        raise RuntimeError("boom")
    assert torch.equal(w, w0) and not model.q_proj.merged


def test_merge_and_unload_leaves_plain_linears_computing_the_adapted_model():
    torch.manual_seed(0)
    model = Toy()
    inject_lora(model, r=2, alpha=4, targets=("q_proj", "o_proj"))
    randomize_b(model)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        adapted = model(ids)
    assert merge_and_unload(model) is model
    assert not lora_layers(model) and not hasattr(model, "lora_config")
    assert type(model.q_proj) is nn.Linear
    with torch.no_grad():
        torch.testing.assert_close(model(ids), adapted, rtol=0, atol=1e-5)
    inject_lora(model, r=2, alpha=4, targets=("q_proj", "o_proj"))  # fresh adapters on the merged weights, as before GRPO
    assert all(torch.count_nonzero(m.lora_B.weight) == 0 for _, m in lora_layers(model))
