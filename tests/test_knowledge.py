"""The cloze knowledge probe (minigrpo/miniature/knowledge.py): sentences, summed log-likelihoods, accuracy by hand."""

import math

import pytest
import torch
from torch import nn

from minigrpo.data import MCQItem
from minigrpo.miniature import cloze_accuracy, make_tiny_checkpoint
from minigrpo.miniature.knowledge import cloze_sentences, sentence_logprobs
from minigrpo.models import load_causal_lm, load_tokenizer


def item(gold, options, explanation="the sky is blue", answer="A"):
    return MCQItem(id=gold, question="?", options=options, answer=answer, explanations=(explanation,))


def test_cloze_sentences_substitute_each_option_for_the_gold_text():
    sentences, gold = cloze_sentences(item("q", {"A": "red", "B": "blue"}, answer="B"))
    assert sentences == ["the sky is red", "the sky is blue"] and gold == 1
    assert cloze_sentences(item("q", {"A": "green", "B": "red"})) is None  # the explanation never says "green"


class WordTokenizer:
    """One id per word of a fixed vocabulary, BOS = 0 first, right padding with 0."""

    vocab = {"<s>": 0, "sky": 1, "is": 2, "blue": 3, "red": 4, "grass": 5, "green": 6}

    def batch_encode(self, texts, padding_side="left", add_special_tokens=True):
        rows = [[0] + [self.vocab[w] for w in t.split()] for t in texts]
        width = max(map(len, rows))
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        return ids, mask


class Bigram(nn.Module):
    """logits[t] = table[token t]: after "is", "red" has logit log 3 and every other token 0."""

    def __init__(self):
        super().__init__()
        self.lm_head = nn.Linear(1, 7, bias=False)
        self.table = torch.zeros(7, 7)
        self.table[2, 4] = math.log(3.0)

    def forward(self, ids, mask=None):
        return self.table[ids]


def test_accuracy_counts_items_whose_true_sentence_scores_highest():
    # "sky is X": every token before X has the same uniform log-prob log(1/7) whatever X is, and after "is" the
    # model gives red 3/9 = 1/3 and each other token 1/9. So "red" wins every item: the item whose gold is red
    # is known, the one whose gold is blue is not, and the third cannot be probed.
    items = [item("red-is-gold", {"A": "red", "B": "blue"}, "sky is red"),
             item("blue-is-gold", {"A": "blue", "B": "red"}, "sky is blue"),
             item("no-probe", {"A": "green", "B": "red"}, "grass is blue")]
    scores = sentence_logprobs(Bigram(), WordTokenizer(), ["sky is red", "sky is blue", "sky"])
    torch.testing.assert_close(scores, torch.tensor([2 * math.log(1 / 7) + math.log(1 / 3),
                                                     2 * math.log(1 / 7) + math.log(1 / 9), math.log(1 / 7)]))
    assert cloze_accuracy(Bigram(), WordTokenizer(), items) == (0.5, 2)
    acc, n = cloze_accuracy(Bigram(), WordTokenizer(), items[2:])
    assert math.isnan(acc) and n == 0


def test_batched_scores_equal_one_sentence_at_a_time(tmp_path):
    path = make_tiny_checkpoint(tmp_path, arch="llama", seed=0)
    model, tok = load_causal_lm(path).eval(), load_tokenizer(path)
    sentences = ["a b c", "hello there, how are you today", "x"]
    batched = sentence_logprobs(model, tok, sentences, batch_size=2)
    for s, got in zip(sentences, batched):
        ids = torch.tensor([tok.encode(s)])
        logp = torch.log_softmax(model(ids)[0, :-1], dim=-1)
        want = sum(logp[t, ids[0, t + 1]].item() for t in range(ids.shape[1] - 1))
        assert got.item() == pytest.approx(want, abs=1e-4)
