"""group_advantages against values worked by hand: A_i = (r_i - mean_g) / (max(std_g, floor) + eps), Bessel std."""

import math

import pytest
import torch

from minigrpo.grpo import group_advantages

EPS = 1e-4


def test_two_groups_of_two_by_hand():
    # groups [1, 2] and [3, 4]: mean 1.5 and 3.5, Bessel std sqrt((0.25 + 0.25) / 1) = sqrt(0.5)
    A, stats = group_advantages(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64), group_size=2)
    a = 0.5 / (math.sqrt(0.5) + EPS)
    torch.testing.assert_close(A, torch.tensor([-a, a, -a, a], dtype=torch.float64), rtol=0, atol=1e-12)
    assert stats["reward_mean"] == pytest.approx(2.5, abs=1e-12)
    assert stats["reward_std"] == pytest.approx(math.sqrt(5 / 3), abs=1e-12)  # Bessel over all four
    assert stats["group_std_mean"] == pytest.approx(math.sqrt(0.5), abs=1e-12)
    assert stats["frac_zero_std"] == 0.0


def test_group_of_three_uneven_by_hand_float32():
    # [0, 0, 3]: mean 1, deviations (-1, -1, 2), Bessel var (1 + 1 + 4) / 2 = 3
    A, _ = group_advantages(torch.tensor([0.0, 0.0, 3.0]), group_size=3)
    s = math.sqrt(3) + EPS
    torch.testing.assert_close(A, torch.tensor([-1 / s, -1 / s, 2 / s]), rtol=0, atol=1e-6)
    assert A.dtype == torch.float32


def test_groups_are_contiguous_rows_prompt_major():
    # prompt-major: [p0, p0, p1, p1]; both groups are constant, so every advantage is 0
    A, stats = group_advantages(torch.tensor([0.0, 0.0, 1.0, 1.0]), group_size=2)
    assert torch.equal(A, torch.zeros(4))
    assert stats["frac_zero_std"] == 1.0


def test_zero_variance_group_gives_exactly_zero_not_a_rounding_residue():
    # the float32 mean of 6 x 0.9 is not 0.9: r - mean leaves 6e-8, and the std 6.5e-8, so without the constant
    # group rule A would be 6e-8 / (6.5e-8 + 1e-4) ~ 6e-4 instead of 0
    constant = torch.full((6,), 0.9)
    assert (constant - constant.mean()).abs().max() > 0  # the residue this test is about exists
    rewards = torch.cat([constant, torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])])
    A, stats = group_advantages(rewards, group_size=6)
    assert torch.equal(A[:6], torch.zeros(6))
    assert torch.isfinite(A).all()
    assert stats["frac_zero_std"] == 0.5
    # the second group by hand: mean 1/6, Bessel std sqrt((25/36 + 5 / 36) / 5) = sqrt(1/6)
    s = math.sqrt(1 / 6) + EPS
    expected = torch.tensor([5 / 6 / s] + [-1 / 6 / s] * 5)
    torch.testing.assert_close(A[6:], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_of_one_gives_zero_in_every_scale(scale):
    A, stats = group_advantages(torch.tensor([0.3, 0.9, 0.5]), group_size=1, scale=scale)
    assert torch.equal(A, torch.zeros(3))
    assert stats["frac_zero_std"] == 1.0  # one sample has no spread
    assert stats["group_std_mean"] == 0.0


def test_batch_scale_uses_batch_std_and_group_mean():
    # batch Bessel std of [1, 2, 3, 4] = sqrt(5/3); means still per group (1.5, 3.5)
    A, _ = group_advantages(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64), 2, scale="batch")
    a = 0.5 / (math.sqrt(5 / 3) + EPS)
    torch.testing.assert_close(A, torch.tensor([-a, a, -a, a], dtype=torch.float64), rtol=0, atol=1e-12)


def test_none_scale_only_centres():
    A, _ = group_advantages(torch.tensor([1.0, 2.0, 3.0, 7.0]), 2, scale="none", std_floor=10.0)
    torch.testing.assert_close(A, torch.tensor([-0.5, 0.5, -2.0, 2.0]), rtol=0, atol=1e-7)


def test_std_floor_caps_the_blow_up_of_a_tight_group():
    rewards = torch.tensor([0.80, 0.81, 0.5, 1.0], dtype=torch.float64)
    A, stats = group_advantages(rewards, 2, std_floor=0.05)
    # group 1: std 0.01 / sqrt(2) ~ 0.007 < 0.05, so divide by 0.05 + eps; group 2: std 0.25 sqrt(2) ~ 0.354 > floor
    a1 = 0.005 / (0.05 + EPS)
    a2 = 0.25 / (0.25 * math.sqrt(2) + EPS)
    torch.testing.assert_close(A, torch.tensor([-a1, a1, -a2, a2], dtype=torch.float64), rtol=0, atol=1e-12)
    assert stats["frac_std_floored"] == 0.5


def test_cosine_reward_hazard_without_floor():
    # cosine similarities the encoder can barely tell apart still get advantages of about +-1 without a floor:
    # [0.812, 0.815, 0.809] has mean 0.812, deviations (0, 0.003, -0.003), Bessel std sqrt(18e-6 / 2) = 0.003
    rewards = torch.tensor([0.812, 0.815, 0.809], dtype=torch.float64)
    A, _ = group_advantages(rewards, 3)
    a = 0.003 / (0.003 + EPS)  # 0.9677; the population std (0.00245) would give 1.18
    torch.testing.assert_close(A, torch.tensor([0.0, a, -a], dtype=torch.float64), rtol=0, atol=1e-9)
    A_floor, _ = group_advantages(rewards, 3, std_floor=0.1)
    a = 0.003 / (0.1 + EPS)  # 0.02997: divided by the floor plus eps, not by the floor alone (0.03)
    torch.testing.assert_close(A_floor, torch.tensor([0.0, a, -a], dtype=torch.float64), rtol=0, atol=1e-9)


def test_integer_rewards_become_float32():
    A, _ = group_advantages(torch.tensor([0, 1, 1, 1]), 2)
    a = 0.5 / (math.sqrt(0.5) + EPS)
    torch.testing.assert_close(A, torch.tensor([-a, a, 0.0, 0.0]), rtol=0, atol=1e-6)


def test_matches_trl_inline_advantages():
    # TRL computes advantages inline in _generate_and_score_completions; restate it with its own nanstd
    nanstd = pytest.importorskip("trl.trainer.utils").nanstd
    g = torch.Generator().manual_seed(0)
    rewards = torch.rand(24, generator=g)
    rewards[6:12] = 0.5  # one constant group
    G = 6
    mean = rewards.view(-1, G).mean(dim=1).repeat_interleave(G)
    for scale in ("group", "batch", "none"):
        std = nanstd(rewards.view(-1, G), dim=1).repeat_interleave(G) if scale != "batch" else nanstd(rewards)
        trl = rewards - mean if scale == "none" else (rewards - mean) / (std + 1e-4)
        ours, stats = group_advantages(rewards, G, scale=scale)
        torch.testing.assert_close(ours, trl, rtol=0, atol=1e-6)
    trl_frac = torch.isclose(std, torch.zeros_like(std)).float().mean().item()  # std of the last ("none") pass
    assert stats["frac_zero_std"] == pytest.approx(trl_frac)


@pytest.mark.parametrize(
    "rewards, group_size, kwargs, message",
    [
        (torch.zeros(5), 2, {}, "5 rewards do not split into groups of 2"),
        (torch.zeros(0), 2, {}, "0 rewards do not split"),
        (torch.zeros(2, 3), 3, {}, "must be 1-D"),
        (torch.zeros(4), 0, {}, "group_size must be an int >= 1"),
        (torch.zeros(4), 2, {"scale": "global"}, "scale must be one of"),
        (torch.zeros(4), 2, {"std_floor": -1.0}, "must be >= 0"),
        (torch.tensor([0.0, float("nan"), 1.0, 2.0]), 2, {}, "found nan at index 1"),
    ],
)
def test_bad_inputs_are_clear_errors(rewards, group_size, kwargs, message):
    with pytest.raises(ValueError, match=message):
        group_advantages(rewards, group_size, **kwargs)


def test_frac_std_floored_under_batch_scale_tests_the_batch_std_not_the_group_stds():
    # Two tight groups far apart: std_g = 0.01 / sqrt(2) ~ 0.0071 < floor 0.05 in both groups, but the batch std
    # of [0, 0.01, 1, 1.01] is sqrt(((0.505)^2 + (0.495)^2) * 2 / 3) ~ 0.5774 > 0.05: no division used the floor.
    rewards = torch.tensor([0.0, 0.01, 1.0, 1.01], dtype=torch.float64)
    A, stats = group_advantages(rewards, 2, scale="batch", std_floor=0.05)
    std_b = math.sqrt((0.505 ** 2 + 0.495 ** 2) * 2 / 3)
    a = 0.005 / (std_b + EPS)
    torch.testing.assert_close(A, torch.tensor([-a, a, -a, a], dtype=torch.float64), rtol=0, atol=1e-12)
    assert stats["frac_std_floored"] == 0.0
    # Groups [0, 1] twice: std_g = 1 / sqrt(2) ~ 0.707 > floor 0.6, batch std = sqrt(1/3) ~ 0.577 < 0.6: every
    # group is divided by the floor.
    A, stats = group_advantages(torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64), 2, scale="batch",
                                std_floor=0.6)
    a = 0.5 / (0.6 + EPS)
    torch.testing.assert_close(A, torch.tensor([-a, a, -a, a], dtype=torch.float64), rtol=0, atol=1e-12)
    assert stats["frac_std_floored"] == 1.0


def test_frac_std_floored_is_zero_when_nothing_is_divided():
    _, stats = group_advantages(torch.tensor([0.80, 0.81, 0.5, 1.0]), 2, scale="none", std_floor=0.05)
    assert stats["frac_std_floored"] == 0.0
    _, stats = group_advantages(torch.tensor([0.80, 0.81, 0.5, 1.0]), 2, scale="group", std_floor=0.0)
    assert stats["frac_std_floored"] == 0.0
