"""examples/answer_skills_probe.py: its two tasks are what they claim, its scoring is a plain token accuracy."""

import json
import random

import pytest
import torch

from minigrpo.miniature.bpe import write_tiny_tokenizer

WORDS = ["red", "blue", "green", "apple", "river", "stone", "cloud", "seven"]


@pytest.fixture(scope="module")
def probe(load_example):
    return load_example("answer_skills_probe")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return write_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def test_copy_example_repeats_the_sequence_and_trains_on_the_repeat_only(probe, tok):
    ids, mask = probe.copy_example(tok, WORDS, 5, random.Random(0))
    half = len(ids) // 2
    assert ids[:half] == ids[half:] and len(ids) == 2 * half
    assert mask == [0] * half + [1] * half
    assert len(tok.decode(ids[:half]).split()) == 5


def test_lookup_example_trains_on_the_letter_of_the_recalled_option(probe, tok):
    rng = random.Random(3)
    for _ in range(20):
        ids, mask = probe.lookup_example(tok, WORDS, rng)
        first = mask.index(1)
        assert all(mask[first:]) and not any(mask[:first])
        prompt, answer = tok.decode(ids[:first]), tok.decode(ids[first:])
        options = dict(line.split(") ") for line in prompt.split("\n")[1:5])  # letter -> word
        recalled = prompt.split("Recall: ")[1].removesuffix(". Option")
        assert answer == " " + next(letter for letter, word in options.items() if word == recalled)
        assert sorted(options) == list("ABCD") and len(set(options.values())) == 4


class _Fixed(torch.nn.Module):
    """Returns the given logits whatever the input."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, input_ids, attention_mask=None):
        return self.logits


def test_token_accuracy_counts_argmax_hits_on_masked_targets_only(probe):
    # ids 0 1 2 3: targets (positions 1..3) are 1, 2, 3; only positions 2 and 3 carry loss.
    data = probe.batch([([0, 1, 2, 3], [0, 0, 1, 1])], pad_id=0)
    logits = torch.zeros(1, 4, 5)
    logits[0, 0, 1] = 1.0  # predicts target 1: right, but position 1 is not scored
    logits[0, 1, 2] = 1.0  # predicts target 2: right, scored
    logits[0, 2, 4] = 1.0  # predicts 4 for target 3: wrong, scored
    assert probe.token_accuracy(_Fixed(logits), data) == pytest.approx(1 / 2)


def test_probe_runs_and_writes_results(probe, tmp_path):
    results = probe.main(["--out", str(tmp_path), "--steps", "2", "--vocab-size", "300", "--hidden", "32",
                          "--layers", "1", "--copy-length", "3", "--test-items", "4", "--threads", "1"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["lookup"]["accuracy"]) == {"training words", "held-out words"}
    assert set(saved["copy"]["accuracy"]) == {"new sequences"}
    for task in ("copy", "lookup"):
        assert saved[task]["accuracy"] == pytest.approx(results[task]["accuracy"])
        assert all(0.0 <= a <= 1.0 for a in saved[task]["accuracy"].values())
        assert list(saved[task]["loss"]) == ["1", "2"]
