"""Training-time signs of reward hacking: a few numbers per GRPO step, in every metrics.jsonl row.

    hacking/<name>/mean, hacking/<name>/std   per reward component (sample std, n - 1; 0 for one value)
    hacking/len_reward_corr                   pearson(completion lengths, total reward) over the batch, 0 when
                                              either is constant: a reward that pays for length shows up here
    hacking/copy_question_frac                fraction of completions whose explanation (fmt.parse) restates the
                                              question (`copies_question`: ROUGE-L recall of it >= min_recall);
                                              None when no item has a question (items that are plain prompts)

The trainer computes them over the GLOBAL batch: the copy test runs where each completion lives (`copy_flags`),
and the per-completion values are gathered across data-parallel ranks before `batch_signals` summarises them.
`training_signals` does both at once for one batch in one process. The held-out side, adversarial explanations
scored by each reward, is minigrpo.eval.hacking.
"""

import math

import numpy as np
from rouge_score import rouge_scorer

from ..data.formats import CompletionFormat

_ROUGE = rouge_scorer.RougeScorer(["rougeL"])


def copies_question(explanation, question, min_recall=0.8):
    """True when ROUGE-L recall of the question by the explanation, LCS / (question tokens), is >= min_recall.

    Tokens are rouge-score's (lower-cased runs of [a-z0-9]). An empty explanation copies nothing.
    """
    if not explanation or not explanation.strip():
        return False
    return _ROUGE.score(question, explanation)["rougeL"].recall >= min_recall  # score(target, prediction)


def pearson(x, y):
    """Pearson correlation sum (x - mx)(y - my) / sqrt(sum (x - mx)^2 sum (y - my)^2); 0 when x or y is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((dx * dx).sum() * (dy * dy).sum()))
    return float((dx * dy).sum() / denom) if denom > 0 else 0.0


def copy_flags(completions, items, fmt=CompletionFormat(), min_recall=0.8):
    """Per completion: 1.0 when its explanation `copies_question` of its item, 0.0 when not, nan when the item has
    no `question` (e.g. a plain prompt string)."""
    return [math.nan if getattr(it, "question", None) is None
            else float(copies_question(fmt.parse(c).explanation, it.question, min_recall))
            for c, it in zip(completions, items)]


def batch_signals(rewards_by_component, total, lengths, copies):
    """The hacking/* keys (module docstring) from per-completion values: {name: N values}, N totals, N lengths and
    N copy flags (`copy_flags`)."""
    n = len(total)
    if not len(lengths) == len(copies) == n:
        raise ValueError(f"batch_signals: expected N values everywhere, found {n} totals, {len(lengths)} lengths "
                         f"and {len(copies)} copy flags")
    row = {}
    for name, values in rewards_by_component.items():
        v = np.asarray([float(x) for x in values], dtype=np.float64)
        if len(v) != n:
            raise ValueError(f"batch_signals: reward {name!r} has {len(v)} values for {n} completions")
        row[f"hacking/{name}/mean"] = float(v.mean())
        row[f"hacking/{name}/std"] = float(v.std(ddof=1)) if n > 1 else 0.0
    row["hacking/len_reward_corr"] = pearson([float(x) for x in lengths], [float(x) for x in total])
    flags = np.asarray([float(x) for x in copies], dtype=np.float64)
    known = flags[~np.isnan(flags)]
    row["hacking/copy_question_frac"] = float(known.mean()) if known.size else None
    return row


def training_signals(completions, items, rewards_by_component, total, lengths, *, fmt=CompletionFormat(),
                     min_recall=0.8):
    """The hacking/* keys (module docstring) of one batch.

    Args: completions (N texts), items (N items), rewards_by_component {name: N values}, total (N values),
    lengths (N completion lengths, e.g. tokens).
    """
    n = len(completions)
    if not len(items) == len(total) == len(lengths) == n:
        raise ValueError(f"training_signals: expected N values everywhere, found {n} completions, {len(items)} "
                         f"items, {len(total)} totals and {len(lengths)} lengths")
    return batch_signals(rewards_by_component, total, lengths, copy_flags(completions, items, fmt, min_recall))
