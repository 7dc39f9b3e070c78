"""policy_loss against losses and gradients worked out by hand for every clip branch and every loss_type.

The running example (eps_low = 0.2, eps_high = 0.3, so the band is [0.8, 1.3]), ratios w = exp(logp - old_logp):

    row 0, A = +1, 3 tokens + 1 pad:  w = 1.1 (inside)  -> L = -1.1, dL/dlogp = -A w = -1.1
                                       w = 1.5 (above)   -> min(1.5, 1.3) A: clipped, L = -1.3, grad 0
                                       w = 0.5 (below)   -> min(0.5, 0.8) A: L = -0.5, grad -0.5
    row 1, A = -2, 4 tokens:          w = 1.1 (inside)  -> L = 2.2, grad 2.2
                                       w = 1.5 (above)   -> min(-3.0, -2.6): unclipped, L = 3.0, grad 3.0
                                       w = 0.5 (below)   -> min(-1.0, -1.6): clipped, L = 1.6, grad 0
                                       w = 1.0           -> L = 2.0, grad 2.0
Token sums: row 0: -2.9 over 3 tokens, row 1: 8.8 over 4 tokens; 7 tokens in all.
"""

import math

import pytest
import torch

from minigrpo.grpo import policy_loss

DT = torch.float64
RATIOS = [[1.1, 1.5, 0.5, 1.0], [1.1, 1.5, 0.5, 1.0]]
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
ADV = torch.tensor([1.0, -2.0], dtype=DT)
# dL/dlogp per token before aggregation (0 where clipped or padded)
TOKEN_GRAD = torch.tensor([[-1.1, 0.0, -0.5, 0.0], [2.2, 3.0, 0.0, 2.0]], dtype=DT)


def running_example():
    old = torch.tensor([[-1.0, -2.0, -0.5, -3.0], [-0.7, -1.2, -2.2, -0.1]], dtype=DT)
    logp = (old + torch.tensor(RATIOS, dtype=DT).log()).requires_grad_()
    return logp, old


def run(loss_type, **kwargs):
    logp, old = running_example()
    loss, stats = policy_loss(logp, old, None, ADV, MASK, beta=0.0, eps_low=0.2, eps_high=0.3,
                              loss_type=loss_type, **kwargs)
    loss.backward()
    return loss.item(), logp.grad, stats


def test_grpo_is_mean_over_sequences_of_token_means():
    loss, grad, _ = run("grpo")
    assert loss == pytest.approx((-2.9 / 3 + 8.8 / 4) / 2, abs=1e-12)
    expected = TOKEN_GRAD / torch.tensor([[3 * 2], [4 * 2]], dtype=DT)  # 1 / (n_i * B)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)


def test_bnpo_is_token_mean_over_the_batch():
    loss, grad, _ = run("bnpo")
    assert loss == pytest.approx(5.9 / 7, abs=1e-12)
    torch.testing.assert_close(grad, TOKEN_GRAD / 7, rtol=0, atol=1e-12)


def test_dr_grpo_divides_by_rows_times_max_completion_length():
    loss, grad, _ = run("dr_grpo", max_completion_length=5)
    assert loss == pytest.approx(5.9 / (2 * 5), abs=1e-12)
    torch.testing.assert_close(grad, TOKEN_GRAD / 10, rtol=0, atol=1e-12)


def test_dapo_defaults_to_the_micro_batch_token_count():
    loss, grad, _ = run("dapo")
    assert loss == pytest.approx(5.9 / 7, abs=1e-12)
    torch.testing.assert_close(grad, TOKEN_GRAD / 7, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [20, torch.tensor(20)])
def test_dapo_divides_by_the_global_token_count(n):
    loss, grad, _ = run("dapo", num_items_in_batch=n)
    assert loss == pytest.approx(5.9 / 20, abs=1e-12)
    torch.testing.assert_close(grad, TOKEN_GRAD / 20, rtol=0, atol=1e-12)


def test_clip_statistics_by_hand():
    _, _, stats = run("grpo")
    # low: w < 0.8 and A < 0 -> row 1 token 2; high: w > 1.3 and A > 0 -> row 0 token 1
    assert stats["clip_ratio/low_mean"] == pytest.approx(1 / 7, abs=1e-12)
    assert stats["clip_ratio/high_mean"] == pytest.approx(1 / 7, abs=1e-12)
    assert stats["clip_ratio/region_mean"] == pytest.approx(2 / 7, abs=1e-12)
    assert stats["clip_ratio/low_min"] == 0.0  # row 0 has no low-clipped token
    assert stats["clip_ratio/high_max"] == pytest.approx(1 / 3, abs=1e-12)
    assert stats["ratio_mean"] == pytest.approx((1.1 + 1.5 + 0.5 + 1.1 + 1.5 + 0.5 + 1.0) / 7, abs=1e-12)
    assert stats["num_tokens"] == 7.0
    assert stats["loss"] == pytest.approx((-2.9 / 3 + 8.8 / 4) / 2, abs=1e-12)
    assert "kl" not in stats  # no reference given
    assert all(type(v) is float for v in stats.values())


def test_symmetric_band_when_eps_high_is_none():
    # band [0.8, 1.2]: w = 1.25 with A > 0 is now clipped: L = -1.2 A, grad 0
    logp = torch.tensor([[math.log(1.25), math.log(1.15)]], dtype=DT, requires_grad=True)
    loss, stats = policy_loss(logp, torch.zeros(1, 2, dtype=DT), None, torch.tensor([0.5], dtype=DT),
                              torch.ones(1, 2), beta=0.0, eps_low=0.2, loss_type="bnpo")
    loss.backward()
    assert loss.item() == pytest.approx(-(1.2 * 0.5 + 1.15 * 0.5) / 2, abs=1e-12)
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -0.5 * 1.15 / 2]], dtype=DT), rtol=0, atol=1e-12)
    assert stats["clip_ratio/high_mean"] == 0.5


def test_on_policy_ratio_is_one_and_gradient_is_minus_advantage():
    # old_logp None means logp.detach(): w = 1 in value, dL/dlogp = -A / (n_i B) under grpo
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.2, -9.0]], dtype=DT, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    loss, stats = policy_loss(logp, None, None, torch.tensor([1.5, -0.5], dtype=DT), mask, beta=0.0)
    loss.backward()
    assert loss.item() == pytest.approx((-1.5 + 0.5) / 2, abs=1e-12)
    expected = torch.tensor([[-1.5 / 4, -1.5 / 4, 0.0], [0.5 / 6, 0.5 / 6, 0.5 / 6]], dtype=DT)
    torch.testing.assert_close(logp.grad, expected, rtol=0, atol=1e-12)
    assert stats["ratio_mean"] == 1.0 and stats["clip_ratio/region_mean"] == 0.0


def test_kl_term_is_beta_times_k3_per_token():
    # A = 0 isolates the KL: theta = 0.5, ref = 0.25 -> k3 = 0.5 + ln 2 - 1, dk3/dlogp = 1 - ref/theta = 0.5
    logp = torch.tensor([[math.log(0.5), math.log(0.5)]], dtype=DT, requires_grad=True)
    ref = torch.tensor([[math.log(0.25), math.log(0.25)]], dtype=DT)
    mask = torch.tensor([[1, 0]])
    loss, stats = policy_loss(logp, None, ref, torch.zeros(1, dtype=DT), mask, beta=0.04)
    loss.backward()
    k3 = 0.5 + math.log(2) - 1
    assert loss.item() == pytest.approx(0.04 * k3, abs=1e-12)
    torch.testing.assert_close(logp.grad, torch.tensor([[0.04 * 0.5, 0.0]], dtype=DT), rtol=0, atol=1e-12)
    assert stats["kl"] == pytest.approx(k3, abs=1e-12)


def test_kl_is_reported_but_not_added_when_beta_is_zero():
    logp = torch.tensor([[math.log(0.5)]], dtype=DT, requires_grad=True)
    ref = torch.tensor([[math.log(0.25)]], dtype=DT)
    loss, stats = policy_loss(logp, None, ref, torch.ones(1, dtype=DT), torch.ones(1, 1), beta=0.0)
    assert loss.item() == pytest.approx(-1.0, abs=1e-12)
    assert stats["kl"] == pytest.approx(0.5 + math.log(2) - 1, abs=1e-12)


def test_kl_and_clipped_surrogate_add_up_under_grpo():
    # running example plus beta = 0.1 with pi_ref = pi_theta / 2 on every token: k3 = 1/2 + ln 2 - 1 each
    logp, old = running_example()
    ref = (logp - math.log(2)).detach()
    loss, _ = policy_loss(logp, old, ref, ADV, MASK, beta=0.1, eps_low=0.2, eps_high=0.3)
    loss.backward()
    k3 = 0.5 + math.log(2) - 1
    assert loss.item() == pytest.approx((-2.9 / 3 + 8.8 / 4) / 2 + 0.1 * k3, abs=1e-12)
    # dk3/dlogp = 1 - exp(ref - logp) = 1 - 1/2 on every token
    expected = (TOKEN_GRAD + 0.1 * 0.5 * MASK.to(DT)) / torch.tensor([[6.0], [8.0]], dtype=DT)
    torch.testing.assert_close(logp.grad, expected, rtol=0, atol=1e-12)


def test_empty_row_counts_as_a_row_with_zero_loss_in_grpo():
    logp = torch.tensor([[-1.0, -1.0], [-1.0, -1.0]], dtype=DT, requires_grad=True)
    mask = torch.tensor([[1, 1], [0, 0]])
    loss, stats = policy_loss(logp, None, None, torch.tensor([2.0, 5.0], dtype=DT), mask, beta=0.0)
    assert loss.item() == pytest.approx(-2.0 / 2, abs=1e-12)  # (row mean -2 + empty row 0) / 2 rows
    assert stats["num_tokens"] == 2.0


def test_per_token_advantages_are_accepted():
    logp = torch.tensor([[-1.0, -1.0]], dtype=DT, requires_grad=True)
    loss, _ = policy_loss(logp, None, None, torch.tensor([[1.0, 3.0]], dtype=DT), torch.ones(1, 2),
                          beta=0.0, loss_type="bnpo")
    assert loss.item() == pytest.approx(-2.0, abs=1e-12)


def test_dapo_micro_batches_sum_to_the_whole_batch():
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(6, 5, generator=g, dtype=DT)
    old = logp + 0.3 * torch.randn(6, 5, generator=g, dtype=DT)
    adv = torch.randn(6, generator=g, dtype=DT)
    mask = (torch.rand(6, 5, generator=g) > 0.3).long()
    whole = logp.clone().requires_grad_()
    policy_loss(whole, old, None, adv, mask, beta=0.0, loss_type="dapo")[0].backward()
    split = logp.clone().requires_grad_()
    n = mask.sum()
    total = sum(policy_loss(split[i:i + 2], old[i:i + 2], None, adv[i:i + 2], mask[i:i + 2], beta=0.0,
                            loss_type="dapo", num_items_in_batch=n)[0] for i in range(0, 6, 2))
    total.backward()
    torch.testing.assert_close(split.grad, whole.grad, rtol=0, atol=1e-12)


def test_loss_keeps_the_dtype_of_logp():
    logp = torch.zeros(2, 3, requires_grad=True)
    loss, _ = policy_loss(logp, None, None, torch.ones(2, dtype=DT), torch.ones(2, 3, dtype=torch.bool), beta=0.0)
    assert loss.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"loss_type": "ppo"}, "loss_type must be one of"),
        ({"loss_type": "dr_grpo"}, "needs max_completion_length"),
        ({"loss_type": "dr_grpo", "max_completion_length": 2}, r"at least|>= the completion width T = 3"),
        ({"beta": 0.1}, "needs ref_logp"),
        ({"beta": -0.1}, "beta must be a number >= 0"),
        ({"eps_low": 1.0}, r"eps_low must be in \[0, 1\)"),
        ({"eps_high": -0.1}, "eps_high must be >= 0"),
        ({"loss_type": "dapo", "num_items_in_batch": -1}, "num_items_in_batch must be a token count"),
        ({"mask": torch.ones(2, 4)}, r"mask must be \(B, T\) = \(2, 3\) like logp, found shape \(2, 4\)"),
        ({"old_logp": torch.zeros(3, 3)}, r"old_logp must be \(B, T\)"),
        ({"advantages": torch.zeros(3)}, r"advantages must be \(B,\) = \(2,\)"),
        ({"logp": torch.zeros(2)}, "logp must be a floating"),
    ],
)
def test_bad_inputs_are_clear_errors(kwargs, message):
    args = {"logp": torch.zeros(2, 3), "old_logp": None, "ref_logp": None, "advantages": torch.zeros(2),
            "mask": torch.ones(2, 3), "beta": 0.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        policy_loss(args.pop("logp"), args.pop("old_logp"), args.pop("ref_logp"), args.pop("advantages"),
                    args.pop("mask"), **args)
