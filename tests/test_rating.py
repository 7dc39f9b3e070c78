"""rate_variants and the per-variant completion files (minigrpo/eval/rating.py), on hand-written completions."""

import pytest

from minigrpo.data import R1_FORMAT
from minigrpo.data.mcq import MCQItem
from minigrpo.eval import ReferenceJudge
from minigrpo.eval.rating import (completions_path, explanation_of, load_variant_completions, rate_variants,
                                  save_variant_completions)
from minigrpo.eval.tournament import elo_view, run_tournament

ITEMS = [MCQItem(id="q0", question="What is the capital of Poland?", options={"A": "Tokyo", "B": "Warsaw"},
                 answer="B", explanations=("The capital of Poland is Warsaw.",)),
         MCQItem(id="q1", question="What is 3 + 4?", options={"A": "7", "B": "8"}, answer="A",
                 explanations=("Adding 3 and 4 gives 7.",))]


def completion(reasoning, explanation, letter):
    return R1_FORMAT.render(reasoning, explanation, letter)


# The reasoning of "right" names a wrong option: a judge reading the whole text would count it against it.
TEXTS = {"right": [completion("Not Tokyo.", "Warsaw is the capital.", "B"), completion("Not 8.", "3 + 4 = 7.", "A")],
         "silent": [completion("Hm.", "I am not sure.", "B"), completion("Hm.", "Hard to say.", "A")],
         "wrong": [completion("Hm.", "Tokyo is the capital.", "A"), completion("Hm.", "It makes 8.", "B")]}


class CountingJudge(ReferenceJudge):
    """The reference judge, keeping what it was shown."""

    def __init__(self):
        super().__init__(name="reference")
        self.shown = []

    def compare(self, items, firsts, seconds):
        self.shown += list(firsts) + list(seconds)
        return super().compare(items, firsts, seconds)


def test_judges_read_the_explanations_and_the_ratings_follow_the_facts(tmp_path):
    judge = CountingJudge()
    rating = rate_variants(ITEMS, TEXTS, [judge], extract=explanation_of(R1_FORMAT), n_boot=50, orderings=5)
    assert set(judge.shown) == {R1_FORMAT.parse(t).explanation for texts in TEXTS.values() for t in texts}
    # fact scores: right 1, silent 0, wrong -1 on both items, so every match has a winner, in both orders
    wtl = rating["tournament"]["judges"]["reference"]["wins_ties_losses"]
    assert wtl["right"] == {"silent": [4, 0, 0], "wrong": [4, 0, 0]} and wtl["silent"]["wrong"] == [4, 0, 0]
    elo = rating["elo"]
    assert elo["right"]["rating"] > elo["silent"]["rating"] > elo["wrong"]["rating"]
    assert elo["silent"]["rating"] == pytest.approx(1500.0, abs=1e-6)  # the middle of a symmetric ladder
    assert elo == elo_view(rating["tournament"])
    # the same tournament called directly gives the same report: rate_variants adds nothing of its own
    direct = run_tournament(ITEMS, TEXTS, [ReferenceJudge()], extract=explanation_of(R1_FORMAT), n_boot=50,
                            orderings=5)
    assert direct == rating["tournament"]


def test_whole_completions_without_extract_let_the_reasoning_count():
    # "right" names Tokyo and 8 in its reasoning: read whole, it states a wrong option on each item as well as
    # the gold one (g - c = 0), and so ties with "silent" (0) instead of beating it
    rating = rate_variants(ITEMS, TEXTS, [ReferenceJudge()], n_boot=20, orderings=2)
    assert rating["tournament"]["judges"]["reference"]["wins_ties_losses"]["right"]["silent"] == [0, 4, 0]


def test_completion_files_round_trip_per_variant_and_check_the_items(tmp_path):
    for variant, texts in TEXTS.items():
        assert save_variant_completions(tmp_path, ITEMS, variant, texts) == tmp_path / f"{variant}.json"
    assert load_variant_completions(tmp_path, ITEMS, ["wrong", "right"]) == {"wrong": TEXTS["wrong"],
                                                                             "right": TEXTS["right"]}
    with pytest.raises(ValueError, match="other items"):
        load_variant_completions(tmp_path, ITEMS[::-1], ["right"])
    with pytest.raises(FileNotFoundError, match="'grpo_rouge'"):
        load_variant_completions(tmp_path, ITEMS, ["right", "grpo_rouge"])
    with pytest.raises(ValueError, match="one completion per item"):
        save_variant_completions(tmp_path, ITEMS, "short", TEXTS["right"][:1])


@pytest.mark.parametrize("name", ["../up", "a/b", "", ".."])
def test_a_variant_name_that_is_not_a_plain_file_name_is_refused(tmp_path, name):
    with pytest.raises(ValueError, match="names a file"):
        completions_path(tmp_path, name)


def test_plot_is_written_when_asked(tmp_path):
    pytest.importorskip("matplotlib")
    rate_variants(ITEMS, TEXTS, [ReferenceJudge()], extract=explanation_of(R1_FORMAT), n_boot=20, orderings=2,
                  plot=tmp_path / "elo.png")
    assert (tmp_path / "elo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
