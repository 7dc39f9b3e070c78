"""Resuming a GRPO run: which config fields may differ from the run being continued, and which may not.

A resumed run must compute what the uninterrupted run would have computed. The checkpoint holds the adapter,
the optimizer and scheduler states, the RNG states and the config it was written with (its config.json). A field
that says *what* a step computes (learning rate, seed, prompts_per_step, loss, rewards, ...) cannot change
halfway without the log and the checkpoints describing a run that never happened: the optimizer state would keep
the old learning rate while config.json recorded the new one, a new seed would draw another prompt order, a new
prompts_per_step would shift every later step's items. Such a difference is refused, naming the field; to change
it, start a new run_dir (from the saved adapter if wanted).

Fields that only say how, where or how visibly the same steps are computed may change:

    progress, sample_interval, num_samples, save_interval, save_total_limit, resume, run_dir, dist_timeout
    device, gradient_checkpointing, logprob_chunk_size, gradient_accumulation_steps
        (memory and speed only: micro-batches add up to the full batch, loss.micro_batch_weight)
    the number of data-parallel processes (not a config field): each takes a share of the same global batch
    max_steps: the run stops earlier or goes on. With lr_schedule "cosine" the schedule spans
        max_steps * num_iterations updates, so the remaining updates follow the new schedule from where the
        old one stood: applied, with a warning that says so.
"""

import json
import warnings

FREE_FIELDS = ("progress", "sample_interval", "num_samples", "save_interval", "save_total_limit", "resume", "run_dir",
               "dist_timeout", "device", "gradient_checkpointing", "logprob_chunk_size", "gradient_accumulation_steps",
               "max_steps")


def resume_conflicts(saved, config):
    """One message per field that differs between a checkpoint's config (a dict read from its config.json) and the
    config of the run resuming it, among the fields that change the run (module docstring)."""
    now = json.loads(json.dumps(config.to_dict()))  # tuples as lists, as config.json stores them
    return [f"{name}: {saved[name]!r} in the checkpoint, {now[name]!r} now" for name in now
            if name in saved and name not in FREE_FIELDS and saved[name] != now[name]]


def check_config(checkpoint, config):
    """Raise a ValueError listing every run-changing difference between the config `checkpoint` (a folder) was
    written with and `config`; warn when a new max_steps stretches or shortens a cosine schedule."""
    path = checkpoint / "config.json"
    if not path.is_file():
        return  # nothing recorded to compare with
    saved = json.loads(path.read_text(encoding="utf-8"))
    _refuse(checkpoint, resume_conflicts(saved, config))
    if config.lr_schedule == "cosine" and saved.get("max_steps", config.max_steps) != config.max_steps:
        warnings.warn(f"GRPOTrainer: resuming {checkpoint} with max_steps {config.max_steps} instead of "
                      f"{saved['max_steps']}: the cosine learning-rate schedule now spans {config.total_updates} "
                      f"updates, so the remaining steps use another learning rate than the first run would have",
                      stacklevel=5)  # the caller of GRPOTrainer.train


def check_rewards(checkpoint, saved_weights, weights):
    """Raise a ValueError when the effective reward weights {name: w} differ from the checkpoint's: a reward added,
    removed or reweighted changes the run. saved_weights None (not recorded) skips the check."""
    if saved_weights is not None and dict(saved_weights) != dict(weights):
        _refuse(checkpoint, [f"reward functions and weights: {dict(saved_weights)!r} in the checkpoint, "
                             f"{dict(weights)!r} now"])


def _refuse(checkpoint, conflicts):
    if conflicts:
        raise ValueError(
            f"GRPOTrainer: cannot resume {checkpoint} with a config that changes the run: " + "; ".join(conflicts)
            + ". Resume with the checkpoint's values, or start a new run_dir. Fields that may change on resume: "
            + ", ".join(FREE_FIELDS) + ".")
