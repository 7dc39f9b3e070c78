"""Atomic GRPO checkpoints (minigrpo/grpo/checkpoint.py): round trip, crash safety, pruning, RNG restore."""

import random

import numpy as np
import pytest
import torch
from torch import nn

from minigrpo.grpo import checkpoint as ckpt
from minigrpo.lora import inject_lora, lora_parameters


class TwoProj(nn.Module):
    """The smallest thing LoRA can be injected into: one attention-like block with q_proj and v_proj."""

    def __init__(self):
        super().__init__()
        self.block = nn.Module()
        self.block.q_proj = nn.Linear(4, 4, bias=False)
        self.block.v_proj = nn.Linear(4, 4, bias=False)


def make_state(seed=0):
    torch.manual_seed(seed)
    model = TwoProj()
    inject_lora(model, r=2, alpha=4, targets=("q_proj", "v_proj"))
    params = lora_parameters(model)
    opt = torch.optim.AdamW(params, lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    return model, params, opt, sched


def take_a_step(params, opt, sched):
    loss = sum((p ** 2).sum() for p in params) + sum(p.sum() for p in params)
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def test_round_trip_restores_adapter_optimizer_scheduler_and_rng(tmp_path):
    model, params, opt, sched = make_state()
    take_a_step(params, opt, sched)
    gen = torch.Generator().manual_seed(7)
    torch.rand(3, generator=gen)
    path = ckpt.save_checkpoint(tmp_path, 1, model, opt, sched, ckpt.capture_rng(gen))
    expected_next = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item())
    saved = [p.detach().clone() for p in params]

    model2, params2, opt2, sched2 = make_state(seed=1)  # different init: everything must come from the file
    gen2 = torch.Generator()
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path), model2, opt2, sched2)
    assert ckpt.latest_checkpoint(tmp_path) == path and state["step"] == 1
    for a, b in zip(saved, params2):
        assert torch.equal(a, b)
    assert sched2.last_epoch == sched.last_epoch and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    ckpt.restore_rng(state["rng"], gen2)
    assert (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen2).item()) == expected_next

    take_a_step(params, opt, sched)  # the optimizer's moments were restored: the next step is identical
    take_a_step(params2, opt2, sched2)
    for a, b in zip(params, params2):
        assert torch.equal(a, b)


def test_crash_mid_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    model, params, opt, sched = make_state()
    ckpt.save_checkpoint(tmp_path, 1, model, opt, sched, ckpt.capture_rng())
    good = [p.detach().clone() for p in params]
    take_a_step(params, opt, sched)

    real_save = torch.save

    def crash(obj, f, *a, **k):  # the trainer state is half-written when the process dies
        real_save({"half": True}, f)
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, 2, model, opt, sched, ckpt.capture_rng())
    monkeypatch.setattr(ckpt.torch, "save", real_save)

    latest = ckpt.latest_checkpoint(tmp_path)
    assert latest.name == "step-000001"
    assert (tmp_path / "checkpoints" / ".tmp-step-000002").exists()  # the debris is hidden, never loaded
    model2, params2, opt2, sched2 = make_state(seed=3)
    assert ckpt.load_checkpoint(latest, model2, opt2, sched2)["step"] == 1
    for a, b in zip(good, params2):
        assert torch.equal(a, b)

    ckpt.save_checkpoint(tmp_path, 2, model, opt, sched, ckpt.capture_rng())  # the next save sweeps the debris
    assert not (tmp_path / "checkpoints" / ".tmp-step-000002").exists()
    assert ckpt.latest_checkpoint(tmp_path).name == "step-000002"


def test_keeps_the_newest_checkpoints_and_survives_a_lost_pointer(tmp_path):
    model, params, opt, sched = make_state()
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, step, model, opt, sched, ckpt.capture_rng(), keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert names == ["step-000002", "step-000003"]
    (tmp_path / "checkpoints" / "latest").unlink()
    assert ckpt.latest_checkpoint(tmp_path).name == "step-000003"


def test_resaving_a_step_replaces_it(tmp_path):
    model, params, opt, sched = make_state()
    ckpt.save_checkpoint(tmp_path, 1, model, opt, sched, ckpt.capture_rng())
    take_a_step(params, opt, sched)
    ckpt.save_checkpoint(tmp_path, 1, model, opt, sched, ckpt.capture_rng())
    model2, params2, opt2, sched2 = make_state(seed=5)
    ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path), model2, opt2, sched2)
    for a, b in zip(params, params2):
        assert torch.equal(a, b)


def test_missing_checkpoint_is_reported(tmp_path):
    assert ckpt.latest_checkpoint(tmp_path) is None
    model, _, opt, sched = make_state()
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        ckpt.load_checkpoint(tmp_path, model, opt, sched)
