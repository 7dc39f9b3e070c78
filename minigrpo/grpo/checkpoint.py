"""Atomic training checkpoints: everything needed to continue a GRPO run as if it had never stopped.

Layout under run_dir:

    checkpoints/step-000100/adapter/          the LoRA adapter in PEFT format (save_adapter)
    checkpoints/step-000100/trainer_state.pt  optimizer, scheduler, step, RNG states, metadata
    checkpoints/step-000100/config.json       the GRPOConfig of the run, for people to read
    checkpoints/step-000100/manifest.json     size and SHA-256 of every file above; written last
    checkpoints/latest                        text file naming the newest saved folder, for people and scripts

Why a crash never leaves the run without a checkpoint. A checkpoint is written into a hidden folder
`checkpoints/.tmp-step-000100`; its manifest is written last, and only when every file is complete (and fsynced)
is the folder renamed to its final name (a rename within one filesystem is atomic). Re-saving a step that already
exists takes two renames: the old copy moves aside to `.old-step-000100`, then the new copy takes its place. A crash
between the two leaves both complete copies hidden; `latest_checkpoint` then reads the new one, and the next save
first finishes the swap (or, when the new copy is not intact, moves the old one back). Old checkpoints are pruned by
renaming them to `.trash-*` before deleting, so a half-deleted folder is never taken for a checkpoint. Half-written
`.tmp-*` folders are ignored and swept away by the next save.

"Intact" means: manifest.json is there, and every file it lists has the recorded size and SHA-256. The newest intact
checkpoint is the latest one; a newer one that is not intact (a disk error, a file overwritten or cut short) is
skipped with a warning that names the file and what is wrong with it. When checkpoints exist but none is intact,
latest_checkpoint raises rather than let a resume silently start again from step 0.

A checkpoint is the last good state of a run, so save_checkpoint refuses adapter weights that are not finite (the
error names the tensor) instead of writing them.

RNG states saved: Python's `random`, NumPy's global generator, torch's CPU (and every CUDA device's) default
generator, and a caller's own generator when one is passed. GRPOTrainer passes none: its sampling streams are
keyed by (seed, step, prompt, completion), so resuming samples the same tokens without any saved state.
"""

import hashlib
import json
import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from ..lora import load_adapter, lora_state_dict, save_adapter

POINTER = "latest"
PREFIX = "step-"
MANIFEST = "manifest.json"
STATE = "trainer_state.pt"
REQUIRED = ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", STATE)  # what a manifest must list
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
    Raises ValueError, writing nothing, when an adapter tensor holds NaN or inf.
    """
    _check_finite_adapter(policy, step)
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    _finish_interrupted_swaps(root)
    name = _name(step)
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
    _write_file(tmp / STATE, lambda f: torch.save(state, f))
    if config is not None:
        _write_file(tmp / "config.json", lambda f: f.write(json.dumps(config, indent=2).encode()))
    _write_manifest(tmp, step)  # last: a folder with a manifest is a complete copy
    _fsync_dir(tmp)
    if final.exists():  # re-saving a step: move the old copy aside, put the new one in place, delete the old one
        old = root / f".old-{name}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)  # a crash just before this line is what _finish_interrupted_swaps repairs
        _fsync_dir(root)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    _fsync_dir(root)
    _write_file(root / POINTER, lambda f: f.write(name.encode()), atomic=True)
    _prune(root, keep, protect=name)
    return final


def latest_checkpoint(run_dir):
    """Folder of the newest intact checkpoint under run_dir, or None when there is no checkpoint at all.

    Newer checkpoints that are not intact are skipped with a warning naming the file and the problem; when
    checkpoints exist but none is intact, ValueError lists them all. Reads only: nothing on disk is changed.
    """
    skipped = []
    for folder in _candidates(checkpoint_root(run_dir)):
        problem = verify_checkpoint(folder)
        if problem is None:
            if skipped:
                warnings.warn(f"latest_checkpoint: skipped {'; '.join(skipped)}; using {folder}", stacklevel=2)
            return folder
        skipped.append(f"{folder.name} ({problem})")
    if skipped:
        raise ValueError(f"latest_checkpoint: no intact checkpoint under {checkpoint_root(run_dir)}: "
                         f"{'; '.join(skipped)}")
    return None


def verify_checkpoint(path):
    """None when the checkpoint folder is intact, else one line naming the first bad file and what is wrong."""
    path = Path(path)
    manifest = path / MANIFEST
    if not manifest.is_file():
        return f"{manifest} is missing: the save did not finish"
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        listed = {rel: (int(meta["bytes"]), str(meta["sha256"])) for rel, meta in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # bad JSON, bad bytes, wrong layout
        return f"{manifest} cannot be read ({type(e).__name__}: {e})"
    for rel in REQUIRED:
        if rel not in listed:
            return f"{manifest} does not list {rel}"
    for rel, (size, digest) in listed.items():
        file = path / rel
        if not file.is_file():
            return f"{file} is missing"
        if file.stat().st_size != size:
            return f"{file} has {file.stat().st_size} bytes, expected {size} (cut short or overwritten)"
        if _sha256(file) != digest:
            return f"{file} does not match its SHA-256 in {MANIFEST} (corrupted)"
    return None


def load_checkpoint(path, policy, optimizer=None, scheduler=None, map_location="cpu"):
    """Load the adapter into `policy` (and optimizer / scheduler states if given); returns the state dict read.

    The folder is verified first (verify_checkpoint); a corrupt one raises ValueError naming the file.
    The returned dict holds "step", "rng" (for restore_rng) and "extra". RNG states are NOT restored here.
    """
    path = Path(path)
    if not (path / STATE).is_file() and not (path / MANIFEST).is_file():
        raise FileNotFoundError(f"load_checkpoint: {path} is not a checkpoint folder (no {STATE})")
    problem = verify_checkpoint(path)
    if problem is not None:
        raise ValueError(f"load_checkpoint: checkpoint {path} is not intact: {problem}")
    load_adapter(policy, path / "adapter")
    try:
        # weights_only=False: the file holds Python's random state (a tuple) and NumPy's; it is our own file.
        state = torch.load(path / STATE, map_location=map_location, weights_only=False)
    except Exception as e:  # pickle and zip errors come in many types; the point is to name the file
        raise ValueError(f"load_checkpoint: {path / STATE} cannot be read ({type(e).__name__}: {e})") from e
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    return state


# ---- helpers ----

def _name(step):
    return f"{PREFIX}{step:06d}"


def _step_of(name):
    """The step of a folder name "step-000100", or None for any other name."""
    digits = name[len(PREFIX):]
    return int(digits) if name.startswith(PREFIX) and digits.isdigit() else None


def _numbered(root):
    """Folders named step-N, oldest first (intact or not)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _step_of(p.name) is not None]
    return sorted(found, key=lambda p: _step_of(p.name))


def _interrupted_swaps(root):
    """(final, old, tmp) of each re-save cut between its two renames: .old-step-N exists and step-N does not."""
    if not root.is_dir():
        return []
    out = []
    for old in root.iterdir():
        name = old.name[len(".old-"):]
        if old.is_dir() and old.name.startswith(".old-") and _step_of(name) is not None and not (root / name).exists():
            out.append((root / name, old, root / f".tmp-{name}"))
    return out


def _candidates(root):
    """Checkpoint folders newest step first; an interrupted swap offers its new copy, then its old one."""
    found = [(_step_of(p.name), 0, p) for p in _numbered(root)]
    for final, old, tmp in _interrupted_swaps(root):
        if tmp.is_dir():
            found.append((_step_of(final.name), 0, tmp))
        found.append((_step_of(final.name), 1, old))
    return [p for _, _, p in sorted(found, key=lambda t: (-t[0], t[1]))]


def _finish_interrupted_swaps(root):
    """Give each interrupted re-save its final folder back: the new copy when intact, else the old one."""
    for final, old, tmp in _interrupted_swaps(root):
        os.replace(tmp if tmp.is_dir() and verify_checkpoint(tmp) is None else old, final)
    _fsync_dir(root)


def _prune(root, keep, protect):
    for p in root.iterdir():  # sweep what an earlier crash left behind
        if p.is_dir() and p.name.startswith((".tmp-", ".old-", ".trash-")):
            shutil.rmtree(p, ignore_errors=True)
    done = [p for p in _numbered(root) if p.name != protect]
    for p in done[: max(0, len(done) - (keep - 1))]:
        trash = root / f".trash-{p.name}"
        os.replace(p, trash)  # gone from the candidates at once, however far the deletion gets
        shutil.rmtree(trash, ignore_errors=True)


def _check_finite_adapter(policy, step):
    for key, tensor in lora_state_dict(policy).items():
        bad = int((~torch.isfinite(tensor.detach())).sum())
        if bad:
            raise ValueError(f"save_checkpoint: refusing to save step {step}: adapter tensor {key!r} holds {bad} "
                             f"non-finite value(s) of {tensor.numel()}; a checkpoint must be a state training can "
                             f"continue from")


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_manifest(folder, step):
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    listed = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    text = json.dumps({"step": step, "files": listed}, indent=2)
    _write_file(folder / MANIFEST, lambda f: f.write(text.encode()))


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
