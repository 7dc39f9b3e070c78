"""ROUGE-L F1 between the generated explanation and the reference explanation(s): the lexical baseline.

With LCS(x, y) the length of the longest common subsequence of the token lists x (generated, length m) and
y (reference, length n):

    P = LCS / m,   R = LCS / n,   F1 = 2 P R / (P + R)   (0 when LCS = 0)
    R_i = max over the item's references of F1

Scores come from the `rouge-score` package (rouge_scorer.RougeScorer(["rougeL"])), the implementation papers
report. Its default tokenizer lower-cases and splits on every character outside [a-z0-9], so accented letters
("perché", "è") act as separators; pass `tokenizer=` (an object with `.tokenize(text) -> list[str]`) to change
that. use_stemmer defaults to False because rouge-score's stemmer is the English Porter stemmer, wrong for other
languages; set it True for English data.

A completion without an explanation scores 0, the minimum of F1. An item without references also scores 0.
"""

import torch
from rouge_score import rouge_scorer

from minigrpo.data.formats import CompletionFormat


class RougeLReward:
    """Batched ROUGE-L F1 reward: `reward(completions, items) -> (N,) float32` in [0, 1].

    Args:
        fmt: the completion format whose explanation section is scored.
        use_stemmer: apply rouge-score's Porter stemmer (English only).
        tokenizer: optional rouge-score tokenizer object; None uses rouge-score's default.
        name: key of this reward in logs and in the reward breakdown.
    """

    def __init__(self, fmt=CompletionFormat(), use_stemmer=False, tokenizer=None, name="rouge_l"):
        self.fmt = fmt
        self.use_stemmer = use_stemmer
        self.name = name
        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer, tokenizer=tokenizer)

    def score(self, candidate, references):
        """max over references of ROUGE-L F1(candidate, reference); 0 for an empty candidate or no references."""
        if not candidate or not references:
            return 0.0
        # rouge-score's signature is score(target, prediction): the reference comes first.
        return max(self._scorer.score(ref, candidate)["rougeL"].fmeasure for ref in references)

    def __call__(self, completions, items):
        if len(completions) != len(items):
            raise ValueError(f"{self.name} reward: expected one item per completion, found {len(completions)} "
                             f"completions and {len(items)} items")
        values = [self.score(self.fmt.parse(text).explanation, tuple(item.explanations or ()))
                  for text, item in zip(completions, items)]
        return torch.tensor(values, dtype=torch.float32)  # (N,)
