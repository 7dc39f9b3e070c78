"""Rotary embedding: split halves, fp32 frequencies, and llama3 frequency bands, checked by hand."""

import math

import torch

from minigrpo.models.rope import RotaryEmbedding, apply_rotary, rope_inv_freq, rotate_half

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}


def test_rotate_half_pairs_dimension_i_with_i_plus_half():
    # (x1, x2) halves -> (-x2, x1): dims (0, 2) and (1, 3) are the rotated pairs
    assert rotate_half(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist() == [-3.0, -4.0, 1.0, 2.0]


def test_inv_freq_hand_values():
    # theta 100, D 4: 1 / 100^(0/4), 1 / 100^(2/4)
    torch.testing.assert_close(rope_inv_freq(4, 100.0), torch.tensor([1.0, 0.1]))


def test_rotation_of_a_unit_vector_by_hand():
    rope = RotaryEmbedding(4, 100.0)
    cos, sin = rope(torch.tensor([[1]]), torch.float32)  # position 1: angles (1, 0.1, 1, 0.1)
    q = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 1, 4)  # (B, H, T, D)
    k = torch.tensor([0.0, 1.0, 0.0, 0.0]).view(1, 1, 1, 4)
    q2, k2 = apply_rotary(q, k, cos, sin)
    # dim 0 rotates with dim 2 by angle 1; dim 1 with dim 3 by angle 0.1
    torch.testing.assert_close(q2.flatten(), torch.tensor([math.cos(1), 0, math.sin(1), 0]))
    torch.testing.assert_close(k2.flatten(), torch.tensor([0, math.cos(0.1), 0, math.sin(0.1)]))


def _rotated(rope, x, position):
    cos, sin = rope(torch.tensor([[position]]), torch.float32)
    out, _ = apply_rotary(x.view(1, 1, 1, -1), x.view(1, 1, 1, -1), cos, sin)
    return out.flatten()


def test_rotation_preserves_the_norm():
    torch.manual_seed(0)
    rope, x = RotaryEmbedding(16, 10000.0), torch.randn(16)
    for p in (0, 1, 7, 1000):
        torch.testing.assert_close(_rotated(rope, x, p).norm(), x.norm())


def test_query_key_product_depends_only_on_relative_position():
    torch.manual_seed(0)
    rope, q, k = RotaryEmbedding(16, 10000.0, LLAMA3), torch.randn(16), torch.randn(16)
    dot = [_rotated(rope, q, m) @ _rotated(rope, k, m - 3) for m in (3, 10, 50)]
    torch.testing.assert_close(dot[0], dot[1])
    torch.testing.assert_close(dot[0], dot[2])


def test_llama3_bands_for_theta_500000_head_dim_128():
    plain, scaled = rope_inv_freq(128, 500000.0), rope_inv_freq(128, 500000.0, LLAMA3)
    unchanged = torch.isclose(scaled, plain, rtol=1e-7, atol=0)
    divided = torch.isclose(scaled, plain / 8, rtol=1e-7, atol=0)
    assert int(unchanged.sum()) == 29 and int(divided.sum()) == 29
    assert int((~unchanged & ~divided).sum()) == 6
    assert unchanged[:29].all() and divided[35:].all()  # high frequencies first, low last


def test_llama3_interpolated_frequency_by_hand():
    # i = 32: inv = 500000^(-64/128) = 1/sqrt(500000); wavelength 2*pi*sqrt(500000) ~ 4442.9 lies in [2048, 8192]
    inv = 1 / math.sqrt(500000)
    s = (8192 / (2 * math.pi / inv) - 1) / (4 - 1)  # smooth = (L / wavelen - lf) / (hf - lf) ~ 0.2813
    expected = (1 - s) * inv / 8 + s * inv  # ~ 5.2485e-4
    assert math.isclose(rope_inv_freq(128, 500000.0, LLAMA3)[32].item(), expected, rel_tol=1e-6)


def test_tables_are_computed_in_fp32_and_cast_at_the_end():
    rope = RotaryEmbedding(8, 10000.0).to(torch.bfloat16)
    assert rope.inv_freq.dtype == torch.float32  # a model-wide cast does not round the frequencies
    positions = torch.tensor([[5000]])
    cos, _ = rope(positions, torch.bfloat16)
    angles = positions.double() * rope_inv_freq(8, 10000.0).double()
    assert cos.dtype == torch.bfloat16
    torch.testing.assert_close(cos[0, 0, :4].float(), angles.cos().flatten().float(), atol=4e-3, rtol=0)
