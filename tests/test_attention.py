"""Attention: the visibility mask by hand, the grouped-query head mapping, and no NaN on padded rows."""

import math

import pytest
import torch
import torch.nn.functional as F

from minigrpo.models import attention
from minigrpo.models.attention import Attention, build_attention_mask, grouped_attention
from minigrpo.models.config import ModelConfig


def test_left_padding_mask_visible_sets_by_hand():
    mask, is_causal = build_attention_mask(torch.tensor([[0, 1, 1], [1, 1, 1]]), 3, 0, "cpu")
    assert not is_causal
    assert mask.shape == (2, 1, 3, 3)
    # row 0: the pad query 0 sees only itself; query 1 sees {1}; query 2 sees {1, 2}
    assert mask[0, 0].int().tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    # row 1 (no pads): plain causal
    assert mask[1, 0].int().tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]


def test_mask_with_a_cache_offsets_the_queries_by_the_past():
    # 2 positions already cached, 2 new queries at absolute positions 2 and 3; key 0 is a pad
    mask, _ = build_attention_mask(torch.tensor([[0, 1, 1, 1]]), 2, 2, "cpu")
    assert mask[0, 0].int().tolist() == [[0, 1, 1, 0], [0, 1, 1, 1]]


def test_fast_paths_without_pads():
    assert build_attention_mask(None, 5, 0, "cpu") == (None, True)  # SDPA's causal kernel
    assert build_attention_mask(torch.ones(2, 5), 5, 0, "cpu") == (None, True)
    assert build_attention_mask(torch.ones(2, 6), 1, 5, "cpu") == (None, False)  # one new token sees every key
    mask, is_causal = build_attention_mask(None, 2, 3, "cpu")  # several new tokens after a past: offset causal
    assert not is_causal and mask[0, 0].int().tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]


def _reference_attention(q, k, v, kv_head_of):
    """Per query head h, plain softmax(q k^T / sqrt(D)) v with key/value head kv_head_of(h), causal."""
    H, T, D = q.shape[1], q.shape[2], q.shape[3]
    causal = torch.ones(T, T).tril().bool()
    outs = []
    for h in range(H):
        g = kv_head_of(h)
        scores = q[:, h] @ k[:, g].transpose(-1, -2) / math.sqrt(D)  # (B, T, T)
        scores = scores.masked_fill(~causal, float("-inf"))
        outs.append(scores.softmax(-1) @ v[:, g])
    return torch.stack(outs, dim=1)  # (B, H, T, D)


def test_query_head_h_uses_kv_head_h_floor_div_n_rep():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)  # H 4, Hkv 2, n_rep 2
    fast = grouped_attention(q, k, v, None, True)  # enable_gqa path
    mask = torch.ones(5, 5).tril().bool()[None, None]  # an explicit mask takes the folded path
    slow = grouped_attention(q, k, v, mask, False)
    expected = _reference_attention(q, k, v, lambda h: h // 2)  # heads 0,1 -> kv 0; heads 2,3 -> kv 1
    torch.testing.assert_close(fast, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(slow, expected, atol=1e-6, rtol=0)
    wrong = _reference_attention(q, k, v, lambda h: h % 2)  # the classic bug gives something else
    assert (fast - wrong).abs().max() > 1e-2


def _repeated_kv_attention(q, k, v, mask, is_causal):
    """The obvious grouped-query attention: copy key/value head g for each of its n_rep query heads."""
    n_rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)  # (B, H, S, D)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)


# (new queries T, cached positions): a padded prefill, one decoding step, several new tokens after a past
@pytest.mark.parametrize("T, past", [(5, 0), (1, 6), (3, 4)])
def test_folded_query_heads_equal_repeated_kv_heads_under_a_padding_mask(T, past):
    torch.manual_seed(0)
    S = past + T
    pads = torch.tensor([[0, 0] + [1] * (S - 2), [1] * S, [0] * (S - 1) + [1]])  # left pads in rows 0 and 2
    mask, _ = build_attention_mask(pads, T, past, "cpu")  # (3, 1, T, S)
    q, k, v = torch.randn(3, 6, T, 8), torch.randn(3, 2, S, 8), torch.randn(3, 2, S, 8)  # H 6, Hkv 2, n_rep 3
    # float32 SDPA over the same scores; only the grouping of query rows into kernel blocks differs
    torch.testing.assert_close(grouped_attention(q, k, v, mask, False), _repeated_kv_attention(q, k, v, mask, False),
                               atol=1e-6, rtol=0)


def test_folded_query_heads_take_a_mask_broadcast_over_the_batch():
    torch.manual_seed(0)
    mask, _ = build_attention_mask(None, 3, 4, "cpu")  # no pads, 3 new tokens after 4 cached: (1, 1, 3, 7)
    q, k, v = torch.randn(2, 4, 3, 8), torch.randn(2, 2, 7, 8), torch.randn(2, 2, 7, 8)
    torch.testing.assert_close(grouped_attention(q, k, v, mask, False), _repeated_kv_attention(q, k, v, mask, False),
                               atol=1e-6, rtol=0)


def test_without_sdpa_gqa_a_causal_prefill_folds_with_the_causal_mask_spelled_out(monkeypatch):
    monkeypatch.setattr(attention, "_SDPA_HAS_GQA", False)  # as on torch < 2.5
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    torch.testing.assert_close(grouped_attention(q, k, v, None, True),
                               _reference_attention(q, k, v, lambda h: h // 2), atol=1e-6, rtol=0)


def test_fully_padded_rows_stay_finite_and_real_tokens_ignore_pads():
    torch.manual_seed(0)
    config = ModelConfig(model_type="qwen3", vocab_size=10, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, qk_norm=True)
    attn = Attention(config, layer_idx=0)
    x = torch.randn(1, 4, 16)
    cos, sin = torch.ones(1, 4, 8), torch.zeros(1, 4, 8)  # no rotation: isolates the mask
    mask, _ = build_attention_mask(torch.tensor([[0, 0, 1, 1]]), 4, 0, "cpu")
    out = attn(x, cos, sin, mask)
    assert torch.isfinite(out).all()
    # changing what sits in the pad slots leaves the real positions unchanged
    x2 = x.clone()
    x2[:, :2] = 100 * torch.randn(1, 2, 16)
    torch.testing.assert_close(attn(x2, cos, sin, mask)[:, 2:], out[:, 2:])
