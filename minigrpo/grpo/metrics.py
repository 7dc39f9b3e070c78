"""JSON-lines logs of a GRPO run: one row per step in metrics.jsonl, a few read-worthy completions in samples.jsonl.

One JSON object per line, appended and flushed after every step, so a run that dies keeps every step it finished
and `pandas.read_json(path, lines=True)` (or a four-line loop) reads it back. On resume the files are cut back to
the checkpoint's step, so the log reads as if the run had never stopped. A crash while a row is written can leave
the last line cut off: reading skips that line with a warning; a bad line anywhere else is an error naming the
file and the line. Under torchrun only rank 0 writes, and its rows describe the global batch: the per-completion
values (`completion_values`) of every rank are gathered before `step_metrics` summarises them.

metrics.jsonl keys (all floats unless noted):
    step (int), loss, reward, reward_std, rewards/<name>/mean, rewards/<name>/std, frac_reward_zero_std,
    adv/group_std_mean, adv/frac_std_floored, kl (null when beta = 0), entropy, ratio_mean, clip_ratio/low_mean,
    clip_ratio/high_mean, clip_ratio/region_mean, completion_length/mean, /min, /max, /frac_truncated,
    frac_prompt_truncated, grad_norm, learning_rate, num_tokens (completion tokens in the batch), the hacking/*
    signals (hacking_signals.py), world_size (int, data-parallel processes), the timing fields in TIMING_KEYS,
    and with mu > 1 `updates`, the list of each update's statistics.
"""

import json
import math
import warnings
from pathlib import Path

import torch

from .hacking_signals import batch_signals, copy_flags

# Fields that depend on the machine's speed, not on the computation: excluded when comparing two runs.
TIMING_KEYS = ("step_time", "generation_time", "tokens_per_second")


class JsonlLog:
    """Append-only JSON-lines file with a `truncate_after(step)` for resuming.

    write=False (a data-parallel rank other than 0): append and truncate_after do nothing; read still reads.
    """

    def __init__(self, path, write=True):
        self.path, self.write = Path(path), write
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, row):
        if not self.write:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(_plain(row)) + "\n")
            f.flush()

    def read(self):
        """Every row, in order (module docstring: a cut-off last line is skipped, a bad line elsewhere raises)."""
        return [row for row, _ in self._lines()]

    def truncate_after(self, step):
        """Keep rows whose step <= step (a last line cut off by a crash is dropped too, with a warning)."""
        if not self.write or not self.path.is_file():
            return
        kept = [line + "\n" for row, line in self._lines() if row.get("step", 0) <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        tmp.replace(self.path)

    def _lines(self):
        """[(row, line text)] of every non-blank line. The last line may be cut off by a crash mid-write: it is
        skipped with a warning. A bad line before it is damage, not a crash: ValueError naming file and line."""
        if not self.path.is_file():
            return []
        numbered = [(i, raw) for i, raw in enumerate(self.path.read_bytes().split(b"\n"), start=1) if raw.strip()]
        out = []
        for k, (lineno, raw) in enumerate(numbered):
            try:
                line = raw.decode("utf-8").rstrip("\r")
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError(f"expected a JSON object, found {type(row).__name__}")
            except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                if k == len(numbered) - 1:
                    warnings.warn(f"{self.path}:{lineno}: skipped the last line, which is not a whole JSON object "
                                  f"(cut off by a crash while it was written?): {e}", stacklevel=3)
                    break
                raise ValueError(f"{self.path}:{lineno}: expected one JSON object per line, found a line that "
                                 f"cannot be read: {e}") from None
            out.append((row, line))
        return out


def completion_values(batch, scores, fmt):
    """The per-completion numbers a metrics row summarises, {name: (N,) float64 tensor}: "total" reward,
    "reward/<name>" per component, "length" (completion tokens), "truncated" (1 when max_completion_length cut it),
    "copies_question" (hacking_signals.copy_flags; fmt parses the explanation). Under torchrun the trainer gathers
    them over the ranks before step_metrics."""
    values = {"total": scores.total, "length": batch.completion_mask.sum(dim=1), "truncated": batch.truncated,
              **{f"reward/{name}": r for name, r in scores.components.items()},
              "copies_question": torch.tensor(copy_flags(batch.completions, batch.items, fmt))}
    return {k: v.detach().to("cpu", torch.float64) for k, v in values.items()}


def step_metrics(step, values, adv_stats, update_stats, config, *, prompt_truncated, world_size, step_time,
                 gen_time, lr):
    """One metrics.jsonl row (keys in the module docstring) from a step's records.

    values: `completion_values` of the whole batch (every rank's); prompt_truncated: prompts of the batch that lost
    tokens to max_prompt_length; adv_stats: group_advantages' statistics. update_stats: one dict per policy update
    of the step (mu of them); losses, ratios, clip fractions and grad norms are averaged over them, KL and entropy
    come from the first (the one on the freshly sampled batch).
    """
    us, n_upd = update_stats, len(update_stats)
    mean_over_updates = lambda k: sum(u[k] for u in us) / n_upd  # noqa: E731
    total, lengths = values["total"], values["length"]
    components = {k.removeprefix("reward/"): v for k, v in values.items() if k.startswith("reward/")}
    row = {"step": step, "loss": mean_over_updates("loss"), "reward": total.mean().item(), "reward_std": _std(total)}
    for name, r in components.items():
        row[f"rewards/{name}/mean"], row[f"rewards/{name}/std"] = r.mean().item(), _std(r)
    row.update({
        "frac_reward_zero_std": adv_stats["frac_zero_std"],
        "adv/group_std_mean": adv_stats["group_std_mean"],
        "adv/frac_std_floored": adv_stats["frac_std_floored"],
        "kl": us[0]["kl"] if config.beta != 0 else None, "entropy": us[0]["entropy"],
        "ratio_mean": mean_over_updates("ratio_mean"),
        **{k: mean_over_updates(k) for k in ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean")},
        "completion_length/mean": lengths.mean().item(), "completion_length/min": lengths.min().item(),
        "completion_length/max": lengths.max().item(),
        "completion_length/frac_truncated": values["truncated"].mean().item(),
        "frac_prompt_truncated": prompt_truncated / config.prompts_per_step,
        "grad_norm": mean_over_updates("grad_norm"), "learning_rate": lr, "num_tokens": lengths.sum().item(),
        **batch_signals(components, total.tolist(), lengths.tolist(), values["copies_question"].tolist()),
        "world_size": world_size,
        "step_time": step_time, "generation_time": gen_time,
        "tokens_per_second": lengths.sum().item() / max(step_time, 1e-9),
    })
    if n_upd > 1:
        row["updates"] = us
    return row


def _std(x):  # sample std (n - 1), 0 for a single value
    return x.double().std().item() if x.numel() > 1 else 0.0


def read_metrics(run_dir):
    """Rows of run_dir/metrics.jsonl as a list of dicts; a last line cut off by a crash is skipped with a warning."""
    return JsonlLog(Path(run_dir) / "metrics.jsonl").read()


def _plain(x):
    """JSON-safe copy: non-finite floats become strings ("nan", "inf") rather than invalid JSON."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x
