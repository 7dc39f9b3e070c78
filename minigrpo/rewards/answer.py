"""Rewards read off the parsed completion: correctness of the answer, format compliance, presence of reasoning.

All three are batched reward functions with the common signature

    fn(completions: list[str], items: list[MCQItem]) -> torch.Tensor (N,) float32

where items[i] is the question that completions[i] answers (already repeated once per completion). They share the
parser `CompletionFormat.parse`, so the three rewards agree on where each section starts and ends.
"""

import re
from dataclasses import dataclass, field

import torch

from minigrpo.data.formats import CompletionFormat

# "B", "b", " B ", "(B)", "B)", "B.", "B:" -- an option letter with the punctuation models put around it.
# A parenthesis that opens must close: "(B" is no answer. "B)" stays, because it is how the prompt labels options.
_CHOICE = re.compile(r"\(\s*([A-Za-z])\s*\)|([A-Za-z])\s*[).:]?")


def answer_letter(answer):
    """The option letter of an answer string, upper-cased, or None when it is not a single letter.

    Tolerant of case, surrounding whitespace and the forms "(B)", "B)", "B.", "B:"; anything longer ("B and C",
    "Paris") is no letter at all, and neither is a parenthesis left open ("(B", "(B." ): a reply cut off or
    garbled there is not read as a choice.
    """
    if not isinstance(answer, str):
        return None
    match = _CHOICE.fullmatch(answer.strip())
    return (match.group(1) or match.group(2)).upper() if match else None


def _check_lengths(name, completions, items):
    if len(completions) != len(items):
        raise ValueError(f"{name} reward: expected one item per completion, found {len(completions)} completions "
                         f"and {len(items)} items")


@dataclass(frozen=True)
class CorrectnessReward:
    """r_i = 1 if the letter in the (last) answer block equals the gold letter, else 0.

    The gold letter item.answer is compared after the same normalisation (upper case, no punctuation).
    """

    fmt: CompletionFormat = field(default_factory=CompletionFormat)
    name: str = "correctness"

    def __call__(self, completions, items):
        _check_lengths(self.name, completions, items)
        values = []
        for text, item in zip(completions, items):
            predicted = answer_letter(self.fmt.parse(text).answer)
            values.append(float(predicted is not None and predicted == answer_letter(item.answer)))
        return torch.tensor(values, dtype=torch.float32)  # (N,)


@dataclass(frozen=True)
class FormatReward:
    """Format compliance.

    partial=False (the paper's binary reward):  r_i = 1 if parse(c_i).well_formed and the letter is one of the
        item's options, else 0; i.e. all three sections exactly once, in order, nothing but whitespace outside
        them, and a bare letter (either case) that names an option: "<answer>F</answer>" on a question with options
        A to D does not follow the format, whose answer section is defined as one option letter.
    partial=True:  r_i = k_i / 3, where k_i = CompletionFormat.count_sections(c_i) is the number of sections that
        appear closed and in order (reasoning, explanation, answer); a well-formed completion scores 1.
        This gives a gradient to a policy that has learned some of the tags but not all, at the price of
        rewarding stray text outside the tags. It counts tags only: what the answer section holds is not checked
        here (correctness, and the binary reward, judge the letter).
    """

    fmt: CompletionFormat = field(default_factory=CompletionFormat)
    partial: bool = False
    name: str = "format"

    def __call__(self, completions, items):
        _check_lengths(self.name, completions, items)
        if self.partial:
            values = [self.fmt.count_sections(text) / 3.0 for text in completions]
        else:
            values = [float(self._well_formed(text, item)) for text, item in zip(completions, items)]
        return torch.tensor(values, dtype=torch.float32)  # (N,)

    def _well_formed(self, text, item):
        parsed = self.fmt.parse(text)
        return parsed.well_formed and parsed.answer.upper() in dict(item.options or {})


@dataclass(frozen=True)
class CoTReward:
    """Chain-of-thought presence: r_i = 1 if the reasoning section has at least `min_words` words, else 0.

    Words are whitespace-separated pieces (str.split). A reasoning block that was never closed (a completion cut
    off by the token budget) does not count as reasoning.
    """

    fmt: CompletionFormat = field(default_factory=CompletionFormat)
    min_words: int = 5
    name: str = "cot"

    def __post_init__(self):
        if self.min_words < 0:
            raise ValueError(f"CoTReward.min_words: expected a number of words >= 0, found {self.min_words}")

    def __call__(self, completions, items):
        _check_lengths(self.name, completions, items)
        values = []
        for text in completions:
            reasoning = self.fmt.parse(text).reasoning
            values.append(float(reasoning is not None and len(reasoning.split()) >= self.min_words))
        return torch.tensor(values, dtype=torch.float32)  # (N,)
