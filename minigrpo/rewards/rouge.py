"""ROUGE-L F1 between the generated explanation and the reference explanation(s): the lexical baseline.

With LCS(x, y) the length of the longest common subsequence of the token lists x (generated, length m) and
y (reference, length n):

    P = LCS / m,   R = LCS / n,   F1 = 2 P R / (P + R)   (0 when LCS = 0)
    R_i = max over the item's references of F1

Scores come from the `rouge-score` package (rouge_scorer.RougeScorer(["rougeL"])), the implementation papers
report, with one change: its tokenizer. rouge-score lower-cases and splits on every character outside [a-z0-9],
so it drops every non-ASCII letter: two identical Chinese or Russian explanations score 0, and an Italian "perché"
becomes "perch". `UnicodeTokenizer` (the default here) keeps letters and digits of every script:

  - on ASCII text its tokens are exactly rouge-score's, stemming included, so English scores are unchanged;
  - a run of letters and digits of any other script is a token ("perché", "кошка");
  - each Chinese character, Hiragana and Katakana is a token by itself: those scripts write words without
    spaces, and character-level ROUGE is the usual choice for them.

Pass `tokenizer=` (an object with `.tokenize(text) -> list[str]`, e.g. rouge-score's DefaultTokenizer) to use
another. use_stemmer defaults to False because rouge-score's stemmer is the English Porter stemmer, wrong for other
languages; set it True for English data (it stems ASCII tokens only).

A completion without an explanation scores 0, the minimum of F1. An item without references also scores 0.
"""

import re
import unicodedata

import torch
from rouge_score import rouge_scorer

from minigrpo.data.formats import CompletionFormat

# Scripts written without spaces between words: CJK ideographs (with extensions A and B and the compatibility
# block), Hiragana and Katakana. Each of their characters is one token.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df"
_TOKEN = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])[^\W_])+")


class UnicodeTokenizer:
    """rouge-score's tokenizer for every script: `tokenize(text) -> list[str]` (rules in the module docstring).

    The text is NFC-normalised (so "é" typed as e + combining accent is one letter) and lower-cased; tokens are
    single CJK characters or runs of Unicode letters and digits. With use_stemmer, ASCII tokens longer than 3
    characters go through the Porter stemmer, as in rouge-score.
    """

    def __init__(self, use_stemmer=False):
        if use_stemmer:
            from nltk.stem import porter  # rouge-score's own dependency, and the stemmer it uses
            self._stemmer = porter.PorterStemmer()
        else:
            self._stemmer = None

    def tokenize(self, text):
        tokens = _TOKEN.findall(unicodedata.normalize("NFC", text).lower())
        if self._stemmer is not None:
            tokens = [self._stemmer.stem(t) if len(t) > 3 and t.isascii() else t for t in tokens]
        return tokens


class RougeLReward:
    """Batched ROUGE-L F1 reward: `reward(completions, items) -> (N,) float32` in [0, 1].

    Args:
        fmt: the completion format whose explanation section is scored.
        use_stemmer: apply the Porter stemmer to ASCII tokens (English only).
        tokenizer: optional tokenizer object with .tokenize(text); None uses UnicodeTokenizer(use_stemmer).
        name: key of this reward in logs and in the reward breakdown.
    """

    def __init__(self, fmt=CompletionFormat(), use_stemmer=False, tokenizer=None, name="rouge_l"):
        self.fmt = fmt
        self.use_stemmer = use_stemmer
        self.name = name
        tokenizer = tokenizer if tokenizer is not None else UnicodeTokenizer(use_stemmer)
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
