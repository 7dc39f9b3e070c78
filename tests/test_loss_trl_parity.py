"""policy_loss against TRL GRPOTrainer._compute_loss on the same tensors: loss, gradient w.r.t. logp, metrics.

TRL has no standalone GRPO loss function, so `_compute_loss` is called unbound with a namespace standing in
for the trainer: one process, no gradient accumulation, token-level importance sampling, no vLLM, no entropy
mask, and a `_get_per_token_logps_and_entropies` that returns our logp tensor, so the loss backpropagates into
it. The namespace's attributes are exactly those `_compute_loss` reads in trl 1.16.
"""

import types
from collections import defaultdict

import pytest
import torch

from minigrpo.grpo import policy_loss

GRPOTrainer = pytest.importorskip("trl").GRPOTrainer

EPS_LOW, EPS_HIGH, MAX_LEN = 0.2, 0.28, 9


def trl_compute_loss(logp, old_logp, ref_logp, advantages, mask, *, beta, loss_type, num_items_in_batch):
    """TRL's loss and logged metrics for these tensors (single process, gradient accumulation 1)."""
    B, T = logp.shape
    identity = lambda x, *args, **kwargs: x  # noqa: E731  gather / reduce over one process
    trainer = types.SimpleNamespace(
        loss_type=loss_type, beta=beta, epsilon_low=EPS_LOW, epsilon_high=EPS_HIGH,
        importance_sampling_level="token", top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        use_vllm=False, vllm_importance_sampling_correction=False, max_completion_length=MAX_LEN,
        current_gradient_accumulation_steps=1, _entropy_bonus_enabled=False, aux_loss_enabled=False,
        use_adaptive_entropy=False, _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        model=types.SimpleNamespace(training=True),
        args=types.SimpleNamespace(delta=None, use_bias_correction_kl=False, steps_per_generation=1,
                                   sapo_temperature_pos=1.0, sapo_temperature_neg=1.05),
        accelerator=types.SimpleNamespace(num_processes=1, gather=identity, gather_for_metrics=identity,
                                          reduce=identity, sync_gradients=True, is_main_process=True),
        _get_per_token_logps_and_entropies=lambda *args, **kwargs: (logp, torch.zeros_like(logp), None),
    )
    inputs = {
        "prompt_ids": torch.zeros(B, 2, dtype=torch.long), "prompt_mask": torch.ones(B, 2, dtype=torch.long),
        "completion_ids": torch.zeros(B, T, dtype=torch.long), "completion_mask": mask,
        "advantages": advantages, "old_per_token_logps": old_logp, "num_items_in_batch": num_items_in_batch,
    }
    if ref_logp is not None:
        inputs["ref_per_token_logps"] = ref_logp
    loss = GRPOTrainer._compute_loss(trainer, None, inputs)
    return loss, {k: v[-1] for k, v in trainer._metrics["train"].items()}


def make_batch(dtype, seed=0):
    """Ratios spread over all three clip regions, advantages of both signs, a short row and an empty row."""
    g = torch.Generator().manual_seed(seed)
    B, T = 6, 8
    logp = -3 * torch.rand(B, T, generator=g, dtype=dtype)
    old = logp + 0.4 * torch.randn(B, T, generator=g, dtype=dtype)
    ref = logp + 0.3 * torch.randn(B, T, generator=g, dtype=dtype)
    adv = torch.randn(B, generator=g, dtype=dtype)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 1:] = 0
    mask[3, :] = 0
    return logp, old, ref, adv, mask


def compare(loss_type, beta, with_old, dtype, num_items=None, seed=0):
    """Max |loss diff|, max |grad diff|, ours' stats, TRL's metrics."""
    logp, old, ref, adv, mask = make_batch(dtype, seed)
    old = old if with_old else None
    ref = ref if beta != 0 else None
    n = mask.sum() if num_items is None else torch.tensor(num_items)
    theirs_logp = logp.clone().requires_grad_()
    theirs, metrics = trl_compute_loss(theirs_logp, old, ref, adv, mask, beta=beta, loss_type=loss_type,
                                       num_items_in_batch=n)
    theirs.backward()
    ours_logp = logp.clone().requires_grad_()
    ours, stats = policy_loss(ours_logp, old, ref, adv, mask, beta=beta, eps_low=EPS_LOW, eps_high=EPS_HIGH,
                              loss_type=loss_type, max_completion_length=MAX_LEN, num_items_in_batch=num_items)
    ours.backward()
    loss_diff = (ours - theirs).abs().item()
    grad_diff = (ours_logp.grad - theirs_logp.grad).abs().max().item()
    return loss_diff, grad_diff, stats, metrics


TOL = {torch.float64: 1e-12, torch.float32: 1e-6}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("with_old", [True, False], ids=["old_logp", "old_none"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_loss_and_gradient_match_trl(loss_type, beta, with_old, dtype):
    loss_diff, grad_diff, _, _ = compare(loss_type, beta, with_old, dtype)
    assert loss_diff <= TOL[dtype]
    assert grad_diff <= TOL[dtype]


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_dapo_with_a_global_token_count_matches_trl(beta):
    # this micro-batch holds 31 of the generation batch's 100 tokens
    loss_diff, grad_diff, _, _ = compare("dapo", beta, True, torch.float64, num_items=100)
    assert loss_diff <= 1e-12 and grad_diff <= 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_clip_and_kl_statistics_match_trl_metrics(beta, seed):
    _, _, stats, metrics = compare("grpo", beta, True, torch.float64, seed=seed)
    assert stats["clip_ratio/region_mean"] > 0  # the batch does exercise clipping
    for key in ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean",
                "clip_ratio/low_min", "clip_ratio/high_max"):
        # TRL counts clipped tokens in float32 (`.float()`), so its fractions carry float32 rounding
        assert stats[key] == pytest.approx(metrics[key], abs=1e-7), key
    if beta != 0:
        assert stats["kl"] == pytest.approx(metrics["kl"], abs=1e-12)
