"""KL estimators k1, k2, k3 on hand-worked values, and their defining properties."""

import math

import pytest
import torch

from minigrpo.grpo import kl_estimate


def test_three_estimators_by_hand():
    # pi_theta(y) = 0.5, pi_ref(y) = 0.25: d = log(ref / theta) = -log 2
    logp = torch.tensor([math.log(0.5)], dtype=torch.float64)
    ref = torch.tensor([math.log(0.25)], dtype=torch.float64)
    ln2 = math.log(2)
    assert kl_estimate(logp, ref, "k1").item() == pytest.approx(ln2, abs=1e-12)
    assert kl_estimate(logp, ref, "k2").item() == pytest.approx(0.5 * ln2**2, abs=1e-12)
    # k3 = ref/theta - log(ref/theta) - 1 = 0.5 + ln 2 - 1
    assert kl_estimate(logp, ref, "k3").item() == pytest.approx(0.5 + ln2 - 1, abs=1e-12)
    assert kl_estimate(logp, ref).item() == pytest.approx(0.5 + ln2 - 1, abs=1e-12)  # k3 is the default


def test_k3_when_reference_is_more_likely_by_hand():
    # theta = 0.25, ref = 0.5: d = ln 2, k3 = 2 - ln 2 - 1
    k3 = kl_estimate(torch.tensor([math.log(0.25)]), torch.tensor([math.log(0.5)]))
    assert k3.item() == pytest.approx(1 - math.log(2), abs=1e-6)


def test_all_estimators_are_zero_when_policies_agree():
    logp = torch.tensor([-0.3, -2.0, -7.5])
    for kind in ("k1", "k2", "k3"):
        assert torch.equal(kl_estimate(logp, logp.clone(), kind), torch.zeros(3))


def test_k3_and_k2_are_never_negative_even_for_tiny_differences():
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(10_000, generator=g) * 5
    for scale in (1e-7, 1e-4, 1e-1, 3.0):
        ref = logp + scale * torch.randn(10_000, generator=g)
        assert (kl_estimate(logp, ref, "k3") >= 0).all()
        assert (kl_estimate(logp, ref, "k2") >= 0).all()


def test_k3_equals_exp_form_used_by_trl():
    g = torch.Generator().manual_seed(1)
    logp = -torch.rand(1000, generator=g, dtype=torch.float64) * 5
    ref = logp + torch.randn(1000, generator=g, dtype=torch.float64)
    trl = torch.exp(ref - logp) - (ref - logp) - 1
    torch.testing.assert_close(kl_estimate(logp, ref), trl, rtol=0, atol=1e-13)
    # in float32 the two forms differ only by rounding (exp(d) - 1 - d loses bits near d = 0)
    d32 = ref.float() - logp.float()
    trl32 = torch.exp(d32) - d32 - 1
    torch.testing.assert_close(kl_estimate(logp.float(), ref.float()), trl32, rtol=1e-6, atol=1e-6)


def test_k3_gradient_is_one_minus_ref_over_theta():
    logp = torch.tensor([math.log(0.5), math.log(0.1)], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([math.log(0.25), math.log(0.3)], dtype=torch.float64)
    kl_estimate(logp, ref).sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([1 - 0.5, 1 - 3.0], dtype=torch.float64), rtol=0, atol=1e-12)


def test_k1_and_k3_are_unbiased_estimates_of_the_exact_kl():
    # sample tokens from theta; the average of k1 and of k3 approaches sum_v theta log(theta / ref)
    theta = torch.tensor([0.5, 0.2, 0.2, 0.1], dtype=torch.float64)
    ref = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    exact = (theta * (theta / ref).log()).sum().item()
    y = torch.multinomial(theta, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    logp, ref_logp = theta.log()[y], ref.log()[y]
    assert kl_estimate(logp, ref_logp, "k1").mean().item() == pytest.approx(exact, abs=3e-3)
    assert kl_estimate(logp, ref_logp, "k3").mean().item() == pytest.approx(exact, abs=3e-3)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="kind must be one of"):
        kl_estimate(torch.zeros(2), torch.zeros(2), "k4")
    with pytest.raises(ValueError, match=r"same shape, found \(2,\) and \(3,\)"):
        kl_estimate(torch.zeros(2), torch.zeros(3))
