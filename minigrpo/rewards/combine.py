"""Combining reward functions into the scalar reward GRPO needs, keeping every component for logging.

    total_i = sum_k w_k * r_{k,i}        w_k = 1 for every k unless given (the paper's unweighted sum)

Every component must return N finite values for N completions, and so must the weighted total. This is the one
place rewards are checked: a reward that raises, returns NaN, inf or the wrong number of values raises
`RewardError`, whose `.component` names it ("total" for the sum), so the trainer can stop and say which. A silent
NaN would turn into NaN advantages and a NaN loss several steps later, far from its cause.
"""

import copy
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from minigrpo.data.formats import CompletionFormat
from minigrpo.rewards.answer import CorrectnessReward, CoTReward, FormatReward
from minigrpo.rewards.rouge import RougeLReward
from minigrpo.rewards.semantic import SemanticReward

VARIANTS = ("semantic", "rouge", "semantic+rouge")


class RewardError(ValueError):
    """A reward function failed or returned something GRPO cannot use. `.component` is its name."""

    def __init__(self, component, message):
        super().__init__(message)
        self.component = component


@dataclass
class RewardBreakdown:
    """The rewards of one batch of N completions.

    components: name -> (N,) float32, each reward function's own values, before weighting.
    total:      (N,) float32, sum_k w_k * components[k].
    """

    components: dict
    total: torch.Tensor

    def means(self):
        """{name: mean value} over the batch, plus "total", as python floats for a metrics row."""
        out = {name: values.mean().item() for name, values in self.components.items()}
        out["total"] = self.total.mean().item()
        return out


def combine_rewards(reward_fns, weights, completions, items):
    """Call every reward function on the batch and sum them, weighted.

    Args:
        reward_fns: name -> fn(completions, items) -> (N,) tensor (or anything torch.as_tensor accepts).
        weights: name -> w_k, or None for all 1; names missing from it get weight 1, unknown names are an error.
        completions: N completion texts.
        items: N items, items[i] being the question completions[i] answers.

    Returns:
        RewardBreakdown with components in the order of reward_fns, each (N,) float32 on the CPU.
    """
    n = len(completions)
    if len(items) != n:
        raise ValueError(f"combine_rewards: expected one item per completion, found {n} completions and "
                         f"{len(items)} items")
    if not reward_fns:
        raise ValueError("combine_rewards: expected at least one reward function, found none")
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(reward_fns))
    if unknown:
        raise ValueError(f"combine_rewards: weights name rewards that do not exist: {unknown}; "
                         f"the reward functions are {list(reward_fns)}")

    components = {}
    total = torch.zeros(n, dtype=torch.float32)  # (N,)
    for name, fn in reward_fns.items():
        try:
            values = torch.as_tensor(fn(completions, items), dtype=torch.float32).detach().cpu()
        except Exception as err:
            raise RewardError(name, f"reward {name!r} raised {type(err).__name__}: {err}") from err
        if values.shape != (n,):
            raise RewardError(name, f"reward {name!r} returned shape {tuple(values.shape)} for {n} completions; "
                                    f"expected ({n},)")
        _check_finite(name, values, completions)
        components[name] = values
        total = total + float(weights.get(name, 1.0)) * values
    _check_finite("total", total, completions)  # finite components with large weights can still overflow
    return RewardBreakdown(components=components, total=total)


def _check_finite(name, values, completions):
    bad = (~torch.isfinite(values)).nonzero().flatten().tolist()
    if bad:
        what = "the weighted sum of the rewards is non-finite" if name == "total" else \
            f"reward {name!r} returned non-finite values"
        raise RewardError(name, f"{what} at rows {bad[:10]} (e.g. {values[bad[0]].item()} for "
                                f"completion {bad[0]}: {completions[bad[0]][:80]!r})")


# ---- reward functions with running state: the protocol SemanticReward follows ----

@contextmanager
def eval_mode(reward_fns):
    """Inside the block, reward functions that keep running state (those with train() / eval(), such as
    SemanticReward) only read it: scoring held-out items must not change how training is rewarded. Each one's
    previous mode is restored on exit."""
    stateful = [fn for fn in reward_fns.values() if callable(getattr(fn, "eval", None)) and hasattr(fn, "training")]
    previous = [fn.training for fn in stateful]
    for fn in stateful:
        fn.eval()
    try:
        yield reward_fns
    finally:
        for fn, mode in zip(stateful, previous):
            fn.train(mode)


@contextmanager
def global_batch(reward_fns, items, all_sum):
    """Inside the block, rewards that depend on the whole batch see a data-parallel step's global batch, not the
    rank's share of it: each reward function with a `global_batch` attribute (SemanticReward, whose off-target
    baseline averages over the batch's other questions) gets `items`, the step's items on every rank (those of
    the calls' completions among them). On leaving, each one's `merge_batch_state(all_sum)` adds up over the ranks
    the running state the calls changed; all_sum sums a tensor over the ranks (distributed.all_sum). That is a
    collective, so every rank leaves the block, also when one of its rewards raised. With one process (items the
    batch's own, all_sum the identity) the rewards are the same as without the block.
    """
    aware = [fn for fn in reward_fns.values() if hasattr(fn, "global_batch")]
    for fn in aware:
        fn.global_batch = list(items)
    try:
        yield reward_fns
    finally:
        for fn in aware:
            fn.global_batch = None
            fn.merge_batch_state(all_sum)


def reward_state(reward_fns):
    """{name: state} of the reward functions that keep running state (those with state_dict(), such as
    SemanticReward's off-target mean), copied, for a checkpoint."""
    return {name: copy.deepcopy(fn.state_dict()) for name, fn in reward_fns.items()
            if callable(getattr(fn, "state_dict", None))}


def load_reward_state(reward_fns, states):
    """Put back what reward_state returned (on resume, or when a failed step is rolled back)."""
    for name, state in states.items():
        reward_fns[name].load_state_dict(state)


def paper_rewards(encoder=None, fmt=CompletionFormat(), *, variant="semantic", min_cot_words=5,
                  partial_format=False, rouge_use_stemmer=False, **semantic_kwargs):
    """The paper's reward functions, as an ordered dict name -> fn for `combine_rewards`.

    variant="semantic":        semantic, correctness, format, cot          (the paper's method)
    variant="rouge":           rouge_l, correctness, format, cot           (lexical instead of semantic)
    variant="semantic+rouge":  semantic, rouge_l, correctness, format, cot (lexical added to semantic)

    Args:
        encoder: object with .embed(texts) -> (N, C) L2-normalised; needed unless variant="rouge".
        fmt: the completion format every reward parses.
        min_cot_words: words the reasoning needs for the CoT reward.
        partial_format: use the 1/3-per-section format reward instead of the binary one.
        rouge_use_stemmer: rouge-score's English Porter stemmer for ROUGE-L.
        **semantic_kwargs: passed to SemanticReward (baseline, constant, rescale, reduce, instruction).
    """
    if variant not in VARIANTS:
        raise ValueError(f"paper_rewards: expected variant in {VARIANTS}, found {variant!r}")
    fns = OrderedDict()
    if "semantic" in variant:
        if encoder is None:
            raise ValueError(f"paper_rewards: variant {variant!r} needs an encoder, found None")
        fns["semantic"] = SemanticReward(encoder, fmt=fmt, **semantic_kwargs)
    if "rouge" in variant:
        fns["rouge_l"] = RougeLReward(fmt=fmt, use_stemmer=rouge_use_stemmer)
    fns["correctness"] = CorrectnessReward(fmt=fmt)
    fns["format"] = FormatReward(fmt=fmt, partial=partial_format)
    fns["cot"] = CoTReward(fmt=fmt, min_words=min_cot_words)
    return fns
