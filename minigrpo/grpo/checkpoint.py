"""Atomic training checkpoints: everything needed to continue a GRPO run as if it had never stopped.

Layout under run_dir:

    checkpoints/step-000100/adapter/        the LoRA adapter in PEFT format (save_adapter)
    checkpoints/step-000100/trainer_state.pt  optimizer, scheduler, step, RNG states, metadata
    checkpoints/step-000100/config.json     the GRPOConfig of the run, for people to read
    checkpoints/latest                      text file naming the newest complete checkpoint folder

Why a crash never leaves a broken checkpoint. A checkpoint is written into a hidden folder
`checkpoints/.tmp-step-000100`, and only when every file in it is complete (and fsynced) is the folder renamed
to its final name; a rename within one filesystem is atomic. The `latest` pointer is then replaced the same way
(write a temporary file, os.replace). A crash at any point leaves either the previous checkpoint as the latest,
or the new one complete; half-written `.tmp-*` folders are ignored and swept away by the next save. When the
pointer is missing or names a folder that is gone, the newest `step-*` folder is used.

RNG states saved: Python's `random`, NumPy's global generator, torch's CPU (and every CUDA device's) default
generator, and a caller's own generator when one is passed. GRPOTrainer passes none: its sampling streams are
keyed by (seed, step, prompt, completion), so resuming samples the same tokens without any saved state.
"""

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from ..lora import load_adapter, save_adapter

POINTER = "latest"
PREFIX = "step-"


def capture_rng(generator=None):
    """Snapshot of every random number generator a GRPO step draws from, as a dict of plain objects / tensors."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "generator": generator.get_state() if generator is not None else None,
    }
    return state


def restore_rng(state, generator=None):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"])


def checkpoint_root(run_dir):
    return Path(run_dir) / "checkpoints"


def save_checkpoint(run_dir, step, policy, optimizer, scheduler, rng_state, *, config=None, extra=None, keep=2):
    """Write checkpoint `step` atomically (see the module docstring), update `latest`, keep the newest `keep`.

    Returns the checkpoint folder. Saving a step that already exists replaces it (after the new copy is complete).
    """
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = f"{PREFIX}{step:06d}"
    final, tmp = root / name, root / f".tmp-{name}"
    if tmp.exists():
        shutil.rmtree(tmp)  # left by an earlier crash
    tmp.mkdir()
    save_adapter(policy, tmp / "adapter")
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state,
        "extra": extra or {},
    }
    _write_file(tmp / "trainer_state.pt", lambda f: torch.save(state, f))
    if config is not None:
        _write_file(tmp / "config.json", lambda f: f.write(json.dumps(config, indent=2).encode()))
    _fsync_dir(tmp)
    if final.exists():  # re-saving a step: move the old copy aside first, delete it once the new one is in place
        old = root / f".old-{name}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    _fsync_dir(root)
    _write_file(root / POINTER, lambda f: f.write(name.encode()), atomic=True)
    _prune(root, keep, protect=name)
    return final


def latest_checkpoint(run_dir):
    """Folder of the newest complete checkpoint under run_dir, or None."""
    root = checkpoint_root(run_dir)
    pointer = root / POINTER
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / "trainer_state.pt").is_file():
            return candidate
    done = _numbered(root)
    return done[-1] if done else None


def load_checkpoint(path, policy, optimizer=None, scheduler=None, map_location="cpu"):
    """Load the adapter into `policy` (and optimizer / scheduler states if given); returns the state dict read.

    The returned dict holds "step", "rng" (for restore_rng) and "extra". RNG states are NOT restored here.
    """
    path = Path(path)
    if not (path / "trainer_state.pt").is_file():
        raise FileNotFoundError(f"load_checkpoint: {path} is not a checkpoint folder (no trainer_state.pt)")
    load_adapter(policy, path / "adapter")
    # weights_only=False: the file holds Python's random state (a tuple) and NumPy's; it is our own file.
    state = torch.load(path / "trainer_state.pt", map_location=map_location, weights_only=False)
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    return state


# ---- helpers ----

def _numbered(root):
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "trainer_state.pt").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def _prune(root, keep, protect):
    for p in root.iterdir():  # sweep what an earlier crash left behind
        if p.is_dir() and (p.name.startswith(".tmp-") or p.name.startswith(".old-")):
            shutil.rmtree(p, ignore_errors=True)
    done = [p for p in _numbered(root) if p.name != protect]
    for p in done[: max(0, len(done) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)


def _write_file(path, write, atomic=False):
    """Write bytes through `write(fileobj)` and fsync; with atomic=True via a temporary file and os.replace."""
    target = path.with_name(path.name + ".tmp") if atomic else path
    with open(target, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    if atomic:
        os.replace(target, path)


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
