"""GRPO runs for tests/test_distributed.py, on a tiny random Llama: the same function runs in one plain process
(the reference) and in each of the processes torchrun starts:

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/distributed_worker.py TINY OUT NAME...

Each scenario NAME writes OUT/NAME/rank<r>.pt: the metrics rows the trainer returned, the LoRA tensors after
training, the reward state, and what stopped the run (if anything).
"""

import dataclasses
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist

from minigrpo.grpo import GRPOConfig, GRPOTrainer, TrainingStopped
from minigrpo.grpo.metrics import read_metrics
from minigrpo.grpo.prompt_sampler import PromptSampler
from minigrpo.lora import lora_parameters
from minigrpo.models import load_causal_lm, load_tokenizer
from minigrpo.rewards import SemanticReward


@dataclasses.dataclass(frozen=True)
class Item:
    id: str
    question: str
    explanations: tuple


ITEMS = [Item(f"q{i}", q, (e,)) for i, (q, e) in enumerate([
    ("the cat sat", "a cat sits on the mat"), ("hello", "a greeting to someone"),
    ("one two three four five", "counting up to five"), ("a", "the first letter"),
    ("red green blue", "three colours of light"), ("why is the sky blue", "light scatters off the air"),
    ("rain", "water falling from clouds"), ("big dogs bark loudly at night", "dogs make noise in the dark")])]


class WholeText:
    """A completion format whose explanation is the whole completion (a random tiny model writes no tags)."""

    def parse(self, text):
        return SimpleNamespace(explanation=text.strip() or None)


class LetterCounts:
    """embed(texts): L2-normalised counts of each letter a-z, plus one for anything else: (N, 27)."""

    def embed(self, texts, instruction=None):
        out = torch.zeros(len(texts), 27)
        for i, text in enumerate(texts):
            for ch in text.lower():
                out[i, ord(ch) - 97 if "a" <= ch <= "z" else 26] += 1
        return out / out.norm(dim=1, keepdim=True).clamp_min(1e-6)


class ManyStops:
    """The tiny tokenizer, except that every fourth token id ends a completion: a random model then writes
    completions of every length, and the loss types (row, token and constant normalisers) differ."""

    def __init__(self, tokenizer):
        self.tokenizer, self.eos_token_id = tokenizer, list(range(1, tokenizer.vocab_size, 4))

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def noise(completions, items):
    """A deterministic function of the text with spread inside every group."""
    return torch.tensor([(sum(map(ord, c)) % 97) / 97 for c in completions])


class Crash(BaseException):
    """Stands for a process dying: not an Exception, so nothing catches it."""


class Faulty:
    """noise, except at training step `at`: NaN for completions of item `item` (on whichever rank holds them), a
    Crash on rank `crash_rank` (that process dies), or a stall of 600 s on rank `stall_rank`."""

    def __init__(self, at, item=None, crash_rank=None, stall_rank=None):
        self.at, self.item, self.crash_rank, self.stall_rank, self.calls = at, item, crash_rank, stall_rank, 0

    def __call__(self, completions, items):
        self.calls += 1
        rank = dist.get_rank() if dist.is_initialized() else 0
        if self.calls == self.at and self.crash_rank in (rank, "all"):
            raise Crash(f"rank {rank} dies")
        if self.calls == self.at and self.stall_rank == rank:
            time.sleep(600)
        out = noise(completions, items)
        if self.calls == self.at and self.item is not None:
            out[[i for i, it in enumerate(items) if it.id == self.item]] = float("nan")
        return out


BASE = dict(prompts_per_step=4, num_generations=3, max_prompt_length=16, max_completion_length=6, max_steps=3,
            learning_rate=1e-2, warmup_steps=0, lr_schedule="constant", lora_r=4, lora_alpha=8.0, beta=0.04,
            gradient_accumulation_steps=3, device="cpu", progress=False, save_interval=0, sample_interval=1,
            num_samples=8, dist_timeout=120)
SCENARIOS = {
    "grpo": dict(loss_type="grpo"),
    "bnpo": dict(loss_type="bnpo"),
    "dr_grpo": dict(loss_type="dr_grpo"),
    "dapo": dict(loss_type="dapo"),
    "batch_scale_mu2": dict(loss_type="bnpo", scale_rewards="batch", num_iterations=2),
}


def rewards(faulty=None):
    return {"noise": faulty or noise, "semantic": SemanticReward(LetterCounts(), fmt=WholeText())}


def make_trainer(tiny, run_dir, reward_fns, **overrides):
    config = GRPOConfig(**{**BASE, "run_dir": str(run_dir), **overrides})
    return GRPOTrainer(load_causal_lm(tiny), ManyStops(load_tokenizer(tiny)), reward_fns, ITEMS, lambda it: it.question,
                       config)


def result(trainer, rows, **extra):
    return {"rows": rows, "adapter": [p.detach().clone() for p in lora_parameters(trainer.policy)],
            "reward_state": trainer.reward_fns["semantic"].state_dict(), **extra}


def run(name, tiny, out):
    """Run scenario `name`; returns what rank<r>.pt holds."""
    run_dir = Path(out) / name / "run"
    if name in SCENARIOS:
        t = make_trainer(tiny, run_dir, rewards(), **SCENARIOS[name])
        return result(t, t.train())
    if name == "resume":  # checkpoint at step 2, a crash in step 4 (after step 3 was logged), then resume
        kw = dict(max_steps=4, save_interval=2)
        straight = make_trainer(tiny, Path(out) / name / "straight", rewards(), **kw)
        straight_rows = straight.train()
        try:
            make_trainer(tiny, run_dir, rewards(Faulty(at=4, crash_rank="all")), **kw).train()
        except Crash:
            pass
        logged_before = [r["step"] for r in read_metrics(run_dir)]
        resumed = make_trainer(tiny, run_dir, rewards(), resume=True, **kw)
        resumed.train()
        return result(resumed, read_metrics(run_dir), straight=result(straight, straight_rows),
                      logged_before=logged_before)
    if name == "stop":  # a NaN reward at step 2 for the completions of one prompt, on the rank that holds it
        t = make_trainer(tiny, run_dir, rewards(Faulty(at=2, item=step_item_ids(2)[-1])))
        try:
            t.train()
        except TrainingStopped as e:
            return result(t, read_metrics(run_dir), stopped=(e.step, e.component, str(e), e.checkpoint.name))
        raise AssertionError("the NaN reward did not stop the run")
    if name == "crash":  # rank 1 dies in step 2
        make_trainer(tiny, run_dir, rewards(Faulty(at=2, crash_rank=1))).train()
    if name == "stall":  # rank 1 stalls in step 2; rank 0 waits dist_timeout = 10 s for it, then fails
        make_trainer(tiny, run_dir, rewards(Faulty(at=2, stall_rank=1)), dist_timeout=10).train()
    raise ValueError(f"unknown scenario {name!r}")


def step_item_ids(step):
    """The ids of a step's prompts, in order: the last one lives on the last rank."""
    return [it.id for it in PromptSampler(ITEMS, BASE["prompts_per_step"], GRPOConfig().seed).items_for_step(step)]


def main(tiny, out, *names):
    torch.set_num_threads(1)
    for name in names:
        res = run(name, tiny, out)
        rank = dist.get_rank() if dist.is_initialized() else 0
        torch.save(res, Path(out) / name / f"rank{rank}.pt")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
