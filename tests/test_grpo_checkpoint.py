"""Atomic GRPO checkpoints (minigrpo/grpo/checkpoint.py): round trip, crash safety, pruning, RNG restore."""

import random
import re
from pathlib import Path

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


# ---- crash at every point of a save ----

class Crash(BaseException):
    """A simulated power cut: BaseException, so no `except Exception` in the code under test can swallow it."""


def _crash_points(monkeypatch, crash_at):
    """Make the crash_at-th call (1-based) of any file-system step of a save raise Crash; returns the call counter.

    The steps are every rename (os.replace, also inside save_adapter), every fsync, every deletion and every
    tensor write, so the crash lands between any two of them. crash_at=None only counts.
    """
    import os
    import shutil

    from minigrpo.lora import peft_format

    calls = [0]

    def wrap(fn):
        def wrapped(*args, **kwargs):
            calls[0] += 1
            if calls[0] == crash_at:
                raise Crash(f"crash at call {calls[0]} ({fn.__name__})")
            return fn(*args, **kwargs)
        return wrapped

    for owner, attr in ((os, "replace"), (os, "fsync"), (shutil, "rmtree"), (torch, "save"),
                        (peft_format, "save_file")):
        monkeypatch.setattr(owner, attr, wrap(getattr(owner, attr)))
    return calls


def _adapter(params):
    return [p.detach().clone() for p in params]


def _loads_one_of(run_dir, step_states, latest=None):
    """latest_checkpoint finds a checkpoint, it loads, and it holds one of the expected (step, weights) states."""
    latest = latest or ckpt.latest_checkpoint(run_dir)
    assert latest is not None, "no checkpoint left after the crash: a resume would restart at step 1"
    model2, params2, opt2, sched2 = make_state(seed=9)
    state = ckpt.load_checkpoint(latest, model2, opt2, sched2)
    loaded = _adapter(params2)
    assert any(state["step"] == step and all(torch.equal(a, b) for a, b in zip(loaded, weights))
               for step, weights in step_states), f"{latest} holds step {state['step']} with unexpected weights"
    return state["step"]


@pytest.mark.parametrize("resave", [False, True], ids=["new-step", "re-save"])
def test_a_crash_at_any_point_of_a_save_leaves_a_resumable_checkpoint(tmp_path, monkeypatch, resave):
    # save_total_limit = 1: only one checkpoint on disk, the case where a lost copy means starting over.
    def scenario(run_dir, crash_at):
        model, params, opt, sched = make_state()
        ckpt.save_checkpoint(run_dir, 1, model, opt, sched, ckpt.capture_rng(), keep=1)
        before = _adapter(params)
        take_a_step(params, opt, sched)
        with monkeypatch.context() as m:
            calls = _crash_points(m, crash_at)
            try:
                ckpt.save_checkpoint(run_dir, 1 if resave else 2, model, opt, sched, ckpt.capture_rng(), keep=1)
            except Crash:
                pass
        return calls[0], before, _adapter(params), (model, params, opt, sched)

    n_calls, *_ = scenario(tmp_path / "count", None)
    assert n_calls >= 8  # renames, fsyncs, writes and deletions: every one of them is a crash point below
    for k in range(1, n_calls + 1):
        run_dir = tmp_path / f"crash-{k}"
        _, before, after, (model, params, opt, sched) = scenario(run_dir, k)
        new_step = 1 if resave else 2
        _loads_one_of(run_dir, [(1, before), (new_step, after)])
        # The run goes on: the next save succeeds and leaves exactly one intact checkpoint, no debris.
        take_a_step(params, opt, sched)
        ckpt.save_checkpoint(run_dir, 3, model, opt, sched, ckpt.capture_rng(), keep=1)
        assert _loads_one_of(run_dir, [(3, _adapter(params))]) == 3
        assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["latest", "step-000003"]


def test_resave_cut_between_its_renames_is_read_and_then_repaired(tmp_path, monkeypatch):
    model, params, opt, sched = make_state()
    ckpt.save_checkpoint(tmp_path, 1, model, opt, sched, ckpt.capture_rng(), keep=1)
    take_a_step(params, opt, sched)
    new = _adapter(params)
    real_replace, seen = ckpt.os.replace, []

    def replace(src, dst):  # the folder renames are the ones whose destination is a checkpoint folder
        if Path(dst).name == "step-000001" and Path(src).name.startswith(".tmp-"):
            raise Crash("between the two renames")
        seen.append(Path(dst).name)
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", replace)
    with pytest.raises(Crash):
        ckpt.save_checkpoint(tmp_path, 1, model, opt, sched, ckpt.capture_rng(), keep=1)
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    root = tmp_path / "checkpoints"
    assert ".old-step-000001" in seen and not (root / "step-000001").exists()  # the window the test is about
    assert ckpt.latest_checkpoint(tmp_path) == root / ".tmp-step-000001"  # the new copy, read in place
    assert _loads_one_of(tmp_path, [(1, new)]) == 1
    take_a_step(params, opt, sched)
    ckpt.save_checkpoint(tmp_path, 2, model, opt, sched, ckpt.capture_rng(), keep=2)  # repairs first, then saves
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-000001", "step-000002"]
    model2, params2, opt2, sched2 = make_state(seed=4)
    ckpt.load_checkpoint(root / "step-000001", model2, opt2, sched2)
    assert all(torch.equal(a, b) for a, b in zip(new, params2))


# ---- corrupt checkpoints ----

def _flip_a_byte(path, offset=-20):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
@pytest.mark.parametrize("file", ["trainer_state.pt", "adapter/adapter_model.safetensors",
                                  "adapter/adapter_config.json"])
def test_corrupt_newest_checkpoint_falls_back_to_the_previous_with_a_warning(tmp_path, file, damage):
    model, params, opt, sched = make_state()
    ckpt.save_checkpoint(tmp_path, 1, model, opt, sched, ckpt.capture_rng())
    good = _adapter(params)
    take_a_step(params, opt, sched)
    newest = ckpt.save_checkpoint(tmp_path, 2, model, opt, sched, ckpt.capture_rng())
    target = newest / file
    if damage == "flip":
        _flip_a_byte(target)
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:-7])
    else:
        target.unlink()

    with pytest.warns(UserWarning, match=rf"step-000002 \(.*{Path(file).name}"):
        latest = ckpt.latest_checkpoint(tmp_path)
    assert latest.name == "step-000001"
    assert _loads_one_of(tmp_path, [(1, good)], latest) == 1
    model2, _, opt2, sched2 = make_state(seed=2)
    with pytest.raises(ValueError, match=re.escape(str(target))):  # loading it directly names the file
        ckpt.load_checkpoint(newest, model2, opt2, sched2)


def test_no_intact_checkpoint_is_an_error_naming_each_file(tmp_path):
    model, params, opt, sched = make_state()
    for step in (1, 2):
        ckpt.save_checkpoint(tmp_path, step, model, opt, sched, ckpt.capture_rng())
    root = tmp_path / "checkpoints"
    _flip_a_byte(root / "step-000001" / "trainer_state.pt")
    (root / "step-000002" / "adapter" / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="no intact checkpoint") as err:
        ckpt.latest_checkpoint(tmp_path)
    assert "step-000001" in str(err.value) and "trainer_state.pt" in str(err.value)
    assert "step-000002" in str(err.value) and "adapter_model.safetensors" in str(err.value)


# ---- non-finite weights ----

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_adapter_is_refused_naming_the_tensor(tmp_path, bad):
    model, params, opt, sched = make_state()
    ckpt.save_checkpoint(tmp_path, 1, model, opt, sched, ckpt.capture_rng())
    with torch.no_grad():
        model.block.v_proj.lora_B.weight[1, 0] = bad
    with pytest.raises(ValueError, match=r"'block\.v_proj\.lora_B\.weight' holds 1 non-finite"):
        ckpt.save_checkpoint(tmp_path, 2, model, opt, sched, ckpt.capture_rng())
    assert ckpt.latest_checkpoint(tmp_path).name == "step-000001"  # nothing written, the last good state stands
    assert not any(p.name.endswith("step-000002") for p in (tmp_path / "checkpoints").iterdir())


def test_trainer_resume_falls_back_to_the_newest_intact_checkpoint_with_a_warning(tmp_path):
    from minigrpo.grpo.config import GRPOConfig
    from minigrpo.grpo.metrics import read_metrics
    from minigrpo.grpo.trainer import GRPOTrainer
    from minigrpo.miniature import make_tiny_checkpoint
    from minigrpo.models import load_causal_lm, load_tokenizer

    make_tiny_checkpoint(tmp_path / "tiny", arch="llama", seed=0)

    def trainer(**kw):
        config = GRPOConfig(prompts_per_step=2, num_generations=2, max_prompt_length=16, max_completion_length=4,
                            learning_rate=1e-2, warmup_steps=0, lr_schedule="constant", lora_r=2, lora_alpha=4.0,
                            device="cpu", run_dir=str(tmp_path / "run"), progress=False, save_interval=1,
                            sample_interval=0, **kw)
        reward = {"length": lambda completions, items: torch.tensor([len(c) / 10 for c in completions])}
        return GRPOTrainer(load_causal_lm(tmp_path / "tiny"), load_tokenizer(tmp_path / "tiny"), reward,
                           ["a b", "c", "d e f"], lambda p: p, config)

    trainer(max_steps=2).train()
    _flip_a_byte(tmp_path / "run" / "checkpoints" / "step-000002" / "trainer_state.pt")
    resumed = trainer(max_steps=3, resume=True)
    with pytest.warns(UserWarning, match=r"skipped step-000002 \(.*trainer_state\.pt does not match its SHA-256"):
        resumed.train()
    assert resumed.step == 3
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2, 3]  # step 2 was run again from step 1
    assert ckpt.latest_checkpoint(tmp_path / "run").name == "step-000003"
