"""minigrpo/grpo/hacking_signals.py: the hacking/* keys of a metrics row, each worked out by hand."""

import math

import pytest

from minigrpo.data.formats import CompletionFormat
from minigrpo.data.mcq import MCQItem
from minigrpo.grpo.hacking_signals import batch_signals, copies_question, copy_flags, pearson, training_signals

FMT = CompletionFormat()
POLAND = MCQItem(id="cap-pl", question="What is the capital of Poland?", answer="D", subject="geography",
                 options={"A": "Tokyo", "B": "Madrid", "C": "Rome", "D": "Warsaw"},
                 explanations=("Warsaw is the city where the government of Poland sits.",))


def test_pearson_worked_by_hand():
    # x - 2 = (-1, 0, 1), y - 2 = (-1, 1, 0): sum products 1, sums of squares 2 and 2 -> 1 / 2
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5, abs=1e-15)
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([5, 5, 5], [1, 2, 3]) == 0.0 and pearson([1, 2, 3], [7, 7, 7]) == 0.0


def test_copies_question_is_rouge_l_recall_of_the_question():
    q = "What is the capital of Poland?"  # 6 tokens
    assert copies_question("The question asks what is the capital of Poland.", q)      # recall 6 / 6
    assert copies_question("what is capital of Poland", q)                             # 5 / 6 = 0.83
    assert not copies_question("what is the capital", q)                               # 4 / 6 = 0.67
    assert copies_question("what is the capital", q, min_recall=0.6)
    assert not copies_question("", q) and not copies_question(None, q)


def test_training_signals_on_a_hand_made_batch():
    completions = [FMT.render("r", "What is the capital of Poland? It is Warsaw.", "D"),
                   FMT.render("r", "Warsaw is the capital.", "D"),
                   "no explanation what is the capital of Poland"]
    items = [POLAND] * 3
    row = training_signals(completions, items, {"semantic": [0.5, 0.25, -1.0], "format": [1, 1, 0]},
                           total=[1.5, 1.25, -1.0], lengths=[1, 2, 3])
    assert row["hacking/semantic/mean"] == pytest.approx(-0.25 / 3)
    # sample std of (1, 1, 0): mean 2/3, squares 1/9 + 1/9 + 4/9 = 2/3, / (3 - 1) -> sqrt(1/3)
    assert row["hacking/format/std"] == pytest.approx(math.sqrt(1 / 3))
    # lengths (1, 2, 3) vs total (1.5, 1.25, -1): dx = (-1, 0, 1), dy = (0.917, 0.667, -1.583);
    # sum dx dy = -2.5, sum dx^2 = 2, sum dy^2 = 3.79167 -> -2.5 / sqrt(7.58333) = -0.90784
    assert row["hacking/len_reward_corr"] == pytest.approx(-0.9078413, abs=1e-7)
    assert row["hacking/copy_question_frac"] == pytest.approx(1 / 3)  # the third has no explanation section
    assert set(row) == {"hacking/semantic/mean", "hacking/semantic/std", "hacking/format/mean", "hacking/format/std",
                        "hacking/len_reward_corr", "hacking/copy_question_frac"}


def test_training_signals_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 completions, 2 items, 2 totals and 1 lengths"):
        training_signals(["a", "b"], [POLAND] * 2, {}, [0, 1], [3])


def test_items_without_a_question_are_left_out_of_the_copy_fraction():
    completions = [FMT.render("r", "What is the capital of Poland?", "D"), FMT.render("r", "Warsaw.", "D"), "x"]
    flags = copy_flags(completions, [POLAND, POLAND, "a plain prompt"], FMT)
    assert flags[:2] == [1.0, 0.0] and math.isnan(flags[2])  # recall 6 / 6 and 0 / 6; a prompt has no question
    assert batch_signals({}, [0.0, 1.0, 2.0], [1, 2, 3], flags)["hacking/copy_question_frac"] == 0.5
    assert batch_signals({}, [0.0], [1], [math.nan])["hacking/copy_question_frac"] is None


def test_a_reward_with_the_wrong_number_of_values_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"batch_signals: reward 'semantic' has 1 values for 2 completions"):
        batch_signals({"semantic": [0.5]}, [0.0, 1.0], [1, 2], [0.0, 0.0])
