"""minigrpo/grpo/microbatch.py: micro-batch bookkeeping, checked on values worked by hand."""

import pytest
import torch
from torch import nn

from minigrpo.grpo.microbatch import Accumulator, enable_gradient_checkpointing, micro_batches, trim_padding


def test_micro_batches_are_equal_consecutive_row_slices():
    assert micro_batches(12, 3) == [slice(0, 4), slice(4, 8), slice(8, 12)]
    assert micro_batches(6, 1) == [slice(0, 6)]


def test_trim_padding_drops_columns_that_are_padding_in_every_row():
    p_ids = torch.tensor([[0, 0, 5, 6], [0, 7, 8, 9]])
    p_mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])  # column 0 is a pad in both rows
    c_ids = torch.tensor([[1, 2, 0, 0], [3, 0, 0, 0]])
    c_mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])  # at most 2 real completion tokens
    p_ids2, p_mask2, c_ids2, c_mask2 = trim_padding(p_ids, p_mask, c_ids, c_mask)
    assert p_ids2.tolist() == [[0, 5, 6], [7, 8, 9]] and p_mask2.tolist() == [[0, 1, 1], [1, 1, 1]]
    assert c_ids2.tolist() == [[1, 2], [3, 0]] and c_mask2.tolist() == [[1, 1], [1, 0]]


def test_accumulator_weights_means_by_tokens_and_sums_losses():
    acc = Accumulator()
    acc.add({"ratio_mean": 1.0, "kl": 0.2}, scaled_loss=0.25, tokens=3, entropy_sum=6.0)
    acc.add({"ratio_mean": 2.0, "kl": 0.6}, scaled_loss=0.5, tokens=1, entropy_sum=2.0)
    out = acc.result()
    assert out["loss"] == 0.75
    assert abs(out["ratio_mean"] - (1.0 * 3 + 2.0 * 1) / 4) < 1e-12  # 1.25
    assert abs(out["kl"] - (0.2 * 3 + 0.6 * 1) / 4) < 1e-12  # 0.3
    assert out["entropy"] == 2.0  # (6 + 2) / 4 tokens
    assert out["clip_ratio/low_mean"] == 0.0  # missing stats count as 0


def test_gradient_checkpointing_needs_the_transformers_flag():
    class Body(nn.Module):
        gradient_checkpointing = False

    model = nn.Module()
    model.model = Body()
    enable_gradient_checkpointing(model)
    assert model.model.gradient_checkpointing is True
    with pytest.raises(TypeError, match="expected a minigrpo CausalLM"):
        enable_gradient_checkpointing(nn.Linear(2, 2))
