import json
import random

import pytest
import torch

from minigrpo.data.formats import CompletionFormat
from minigrpo.data.mcq import MCQItem
from minigrpo.eval.hacking import (DEFAULT_FILLER, KINDS, adversarial_explanations, copies_question, fact_swap,
                                   format_hacking_table, hacking_report, pearson, ranking_summary, training_signals)
from minigrpo.grpo import hacking_signals
from minigrpo.rewards import RougeLReward, SemanticReward

FMT = CompletionFormat()
POLAND = MCQItem(id="cap-pl", question="What is the capital of Poland?", answer="D", subject="geography",
                 options={"A": "Tokyo", "B": "Madrid", "C": "Rome", "D": "Warsaw"},
                 explanations=("Warsaw is the city where the government of Poland sits.",))
JAPAN = MCQItem(id="cap-jp", question="What is the capital of Japan?", answer="A", subject="geography",
                options={"A": "Tokyo", "B": "Madrid", "C": "Rome", "D": "Warsaw"},
                explanations=("The capital of Japan is Tokyo.",))
SUB = MCQItem(id="sub", question="What is 8 - 4?", options={"A": "4", "B": "3", "C": "6", "D": "2"}, answer="A",
              explanations=("The difference between 8 and 4 is 4.",), subject="arithmetic")
ODD = MCQItem(id="odd", question="Which is a fish?", options={"A": "shark", "B": "frog"}, answer="A",
              explanations=("It lives in the sea and breathes through gills.",))
ITEMS = [POLAND, JAPAN, SUB, ODD]
PARAPHRASES = {"cap-pl": "Poland is run from its capital city, Warsaw.", "cap-jp": "Tokyo is the capital of Japan.",
               "sub": "Taking 4 away from 8 leaves 4."}


def test_each_kind_is_built_as_documented():
    texts = adversarial_explanations(ITEMS, paraphrases=PARAPHRASES, seed=0)
    assert list(texts) == list(KINDS)
    assert texts["reference"] == [it.explanation for it in ITEMS]
    assert texts["paraphrase"] == [PARAPHRASES["cap-pl"], PARAPHRASES["cap-jp"], PARAPHRASES["sub"], None]
    assert texts["empty"] == [""] * 4
    assert texts["question"] == [it.question for it in ITEMS]
    assert texts["options"][0] == "A) Tokyo B) Madrid C) Rome D) Warsaw"
    assert texts["filler"] == [DEFAULT_FILLER] * 4
    # shuffled: the same words, in the order random.Random("0:<id>") gives
    words = POLAND.explanation.split()
    random.Random("0:cap-pl").shuffle(words)
    assert texts["shuffled"][0] == " ".join(words)
    assert sorted(texts["shuffled"][0].split()) == sorted(POLAND.explanation.split())
    assert adversarial_explanations(ITEMS, seed=1)["shuffled"][0] != texts["shuffled"][0]
    # fact swap: gold text -> first wrong option the reference does not state; every whole-word occurrence
    assert texts["fact_swap"][0] == "Tokyo is the city where the government of Poland sits."
    assert texts["fact_swap"][1] == "The capital of Japan is Madrid."
    assert texts["fact_swap"][2] == "The difference between 8 and 3 is 3."
    assert texts["fact_swap"][3] is None  # the reference never names "shark"
    # another question of the same subject; none for the only arithmetic item and the item without a subject
    assert texts["other_reference"] == [JAPAN.explanation, POLAND.explanation, None, None]
    # padded: the reference's 10 words, then 20 filler words
    padded = texts["padded"][0].split()
    assert len(padded) == 3 * 10 and padded[:10] == words_of(POLAND) and padded[10:] == DEFAULT_FILLER.split()[:20]


def test_fact_swap_replaces_a_plural_mention_whole():
    dolphin = MCQItem(id="d", question="To which animal group does the dolphin belong?", answer="B",
                      options={"A": "fish", "B": "mammal", "C": "reptile"},
                      explanations=("The dolphin belongs to the group of mammals.",))
    assert fact_swap(dolphin.explanation, dolphin) == "The dolphin belongs to the group of fish."


def words_of(item):
    return item.explanation.split()


def test_padding_cycles_the_filler():
    texts = adversarial_explanations([SUB], filler="um ah")  # 8 words, then 16 filler words
    assert texts["padded"][0] == SUB.explanation + " um ah um ah um ah um ah um ah um ah um ah um ah"


def test_no_paraphrases_gives_none():
    assert adversarial_explanations(ITEMS)["paraphrase"] == [None] * 4
    with pytest.raises(ValueError, match="one per item \\(4\\), found 1"):
        adversarial_explanations(ITEMS, paraphrases=["x"])


def test_ranking_summary_on_a_hand_made_score_table():
    table = {"reference": [1.0, 1.0, 1.0, 1.0],
             "paraphrase": [0.8, 0.6, 0.5, None],
             "empty": [0.0, 0.0, 0.0, 0.0],         # paraphrase wins 3 of 3
             "padded": [0.9, 0.6, 0.4, 0.9],        # 0.8 < 0.9, 0.6 = 0.6 (a tie is not a win), 0.5 > 0.4: 1 of 3
             "fact_swap": [0.85, 0.7, None, 0.2]}   # swap above paraphrase on 2 of the 2 items with both
    out = ranking_summary(table)
    assert out["paraphrase_beats"] == {"empty": 1.0, "padded": pytest.approx(1 / 3), "fact_swap": 0.0}
    assert out["n_compared"] == {"empty": 3, "padded": 3, "fact_swap": 2}
    assert out["swap_beats_paraphrase"] == 1.0
    assert out["mean"]["paraphrase"] == pytest.approx(1.9 / 3)
    assert out["mean"]["fact_swap"] == pytest.approx(1.75 / 3)


def test_hacking_report_scores_each_kind_through_the_reward_call_signature():
    calls = []

    def words_reward(completions, items):  # explanation length in words, read as the training rewards read it
        calls.append((completions, items))
        return torch.tensor([float(len((FMT.parse(c).explanation or "").split())) for c in completions])

    report = hacking_report(ITEMS, {"words": words_reward, "rouge_l": RougeLReward(FMT)}, paraphrases=PARAPHRASES)
    assert len(calls) == 1  # one call with every kind of every item
    n_texts = 4 * len(KINDS) - 1 - 1 - 2  # no paraphrase for ODD, no swap for ODD, no other reference for SUB, ODD
    assert len(calls[0][0]) == n_texts
    assert report["skipped"] == {**dict.fromkeys(KINDS, 0), "paraphrase": 1, "fact_swap": 1, "other_reference": 2}
    words = report["rewards"]["words"]
    assert words["mean"]["empty"] == 0.0
    assert words["mean"]["padded"] == pytest.approx(3 * words["mean"]["reference"])
    rouge = report["rewards"]["rouge_l"]
    assert rouge["mean"]["reference"] == pytest.approx(1.0)
    assert rouge["mean"]["shuffled"] < 1.0 and rouge["mean"]["empty"] == 0.0
    # ROUGE-L follows words: the fluent wrong explanation beats the true paraphrase on every item
    assert rouge["swap_beats_paraphrase"] == 1.0
    assert json.loads(json.dumps(report)) == report
    table = format_hacking_table(report)
    assert "swap > paraphrase" in table and "fact_swap" in table and "rouge_l" in table


def test_hacking_report_without_paraphrases_skips_that_kind():
    report = hacking_report(ITEMS, {"rouge_l": RougeLReward(FMT)})
    assert "paraphrase" not in report["kinds"]
    assert report["rewards"]["rouge_l"]["paraphrase_beats"] == {}
    assert "mean reward per kind" in format_hacking_table(report)


def test_training_signals_are_the_trainers_own_re_exported():
    assert (training_signals, copies_question, pearson) == (hacking_signals.training_signals,
                                                            hacking_signals.copies_question, hacking_signals.pearson)


class BagOfWordsEncoder:
    """embed(texts): L2-normalised counts of each lower-cased word, hashed by a fixed table into 64 dims."""

    def embed(self, texts, instruction=None):
        out = torch.zeros(len(texts), 64)
        for row, text in enumerate(texts):
            for word in text.lower().replace(".", " ").replace(",", " ").split():
                out[row, sum(map(ord, word)) % 64] += 1.0
        return torch.nn.functional.normalize(out, dim=-1)


def test_hacking_report_with_the_semantic_reward_under_two_baselines():
    rewards = {f"semantic/{b}": SemanticReward(BagOfWordsEncoder(), baseline=b, fmt=FMT)
               for b in ("none", "off_target")}
    report = hacking_report(ITEMS, rewards, paraphrases=PARAPHRASES)
    for name in rewards:
        mean = report["rewards"][name]["mean"]
        assert mean["empty"] == -1.0  # no explanation: the semantic reward's minimum, never embedded
        assert mean["reference"] == max(mean.values())
    # the off-target baseline subtracts each text's mean cosine to the other questions' references
    assert report["rewards"]["semantic/off_target"]["mean"]["reference"] < 1.0
    assert report["rewards"]["semantic/none"]["mean"]["reference"] == pytest.approx(1.0)
