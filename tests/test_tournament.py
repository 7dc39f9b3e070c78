import json
import math

import pytest

from minigrpo.data.mcq import MCQItem
from minigrpo.eval.elo import bradley_terry
from minigrpo.eval.tournament import (collect_judgements, elo_view, format_report, load_completions, matches_by_item,
                                      position_bias, run_tournament, save_completions, win_tie_loss)

ITEMS = [MCQItem(id=f"q{i}", question=f"Question {i}?", options={"A": "x", "B": "y"}, answer="A",
                 explanations=(f"Because x {i}.",)) for i in range(2)]
COMPLETIONS = {"long": ["a long long answer", "the longest answer here"],
               "mid": ["a mid answer", "mid length one"],
               "short": ["short", "tiny"]}


class LongerJudge:
    """Prefers the longer text, whatever the order: a consistent judge. Records what it was asked."""

    name, circular = "longer", False

    def __init__(self):
        self.asked = []

    def compare(self, items, firsts, seconds):
        self.asked += [(it.id, a, b) for it, a, b in zip(items, firsts, seconds)]
        return [1.0 if len(a) > len(b) else 0.0 if len(b) > len(a) else 0.5 for a, b in zip(firsts, seconds)]


class FirstJudge:
    """Always prefers the text shown first: pure position bias."""

    name, circular = "first", False

    def compare(self, items, firsts, seconds):
        return [1.0] * len(items)


class TieJudge:
    name, circular = "tie", True

    def compare(self, items, firsts, seconds):
        return [0.5] * len(items)


def test_every_pair_is_asked_in_both_orders_on_every_item():
    judge = LongerJudge()
    records = collect_judgements(ITEMS, COMPLETIONS, [judge])
    assert len(judge.asked) == 3 * 2 * 2  # 3 pairs x 2 items x 2 orders, in one compare call
    asked = set(judge.asked)
    for i, item in enumerate(ITEMS):
        for a in COMPLETIONS:
            for b in COMPLETIONS:
                if a != b:
                    assert (item.id, COMPLETIONS[a][i], COMPLETIONS[b][i]) in asked
    assert {(r["first"], r["second"]) for r in records} == {(a, b) for a in COMPLETIONS for b in COMPLETIONS if a != b}


def test_extract_is_what_the_judge_sees():
    judge = LongerJudge()
    collect_judgements(ITEMS, COMPLETIONS, [judge], extract=str.upper)
    assert ("q0", "A LONG LONG ANSWER", "A MID ANSWER") in judge.asked


def test_consistent_judge_win_tie_loss_matrix_and_no_position_bias():
    report = run_tournament(ITEMS, COMPLETIONS, [LongerJudge()], n_boot=50, orderings=5)
    section = report["judges"]["longer"]
    # 2 items x 2 orders = 4 matches per pair, all won by the longer text
    assert section["wins_ties_losses"]["long"] == {"mid": [4, 0, 0], "short": [4, 0, 0]}
    assert section["wins_ties_losses"]["short"] == {"long": [0, 0, 4], "mid": [0, 0, 4]}
    assert section["position_bias_rate"] == 0.0
    assert section["consistency_rate"] == 1.0
    assert section["first_preferred_rate"] == 0.5
    bt = section["bradley_terry"]
    assert bt["long"] > bt["mid"] > bt["short"]
    assert section["online_elo"]["long"] > section["online_elo"]["mid"] > section["online_elo"]["short"]
    for v in COMPLETIONS:
        lo, hi = section["ci"][v]
        assert lo <= bt[v] + 1e-9 and bt[v] <= hi + 1e-9


def test_bradley_terry_of_the_report_is_the_fit_with_one_virtual_tie_per_pair():
    report = run_tournament(ITEMS, COMPLETIONS, [LongerJudge()], n_boot=10, orderings=1)
    matches = [("long", "mid", 1)] * 4 + [("long", "short", 1)] * 4 + [("mid", "short", 1)] * 4
    expected = bradley_terry(matches, prior=1.0)
    for v in COMPLETIONS:
        assert report["judges"]["longer"]["bradley_terry"][v] == pytest.approx(expected[v], abs=1e-9)


def test_always_first_judge_has_position_bias_one_and_equal_ratings():
    report = run_tournament(ITEMS, COMPLETIONS, [FirstJudge()], n_boot=20, orderings=3)
    section = report["judges"]["first"]
    assert section["position_bias_rate"] == 1.0
    assert section["consistency_rate"] == 0.0
    assert section["first_preferred_rate"] == 1.0
    assert section["wins_ties_losses"]["long"]["mid"] == [2, 0, 2]  # the two orders cancel
    for v in COMPLETIONS:
        assert section["bradley_terry"][v] == pytest.approx(1500.0, abs=1e-9)


def test_agree_combination_turns_an_order_flip_into_a_tie():
    report = run_tournament(ITEMS, COMPLETIONS, [FirstJudge(), LongerJudge()], combine="agree", n_boot=10)
    assert report["judges"]["first"]["wins_ties_losses"]["long"]["mid"] == [0, 2, 0]   # one match per (pair, item)
    assert report["judges"]["longer"]["wins_ties_losses"]["long"]["mid"] == [2, 0, 0]
    assert report["pooled"]["wins_ties_losses"]["long"]["mid"] == [2, 2, 0]


def test_position_bias_rates_on_hand_made_judgements():
    # four (pair, item) units with (x, y) = score of the first-shown text in each order:
    # (1, 1) same position twice: biased; (1, 0) consistent; (0.5, 1) neither; (0, 0) biased
    units = [(1.0, 1.0), (1.0, 0.0), (0.5, 1.0), (0.0, 0.0)]
    records = []
    for i, (x, y) in enumerate(units):
        records += [{"judge": "j", "item": i, "first": "a", "second": "b", "score_first": x},
                    {"judge": "j", "item": i, "first": "b", "second": "a", "score_first": y}]
    stats = position_bias(records)
    assert stats == {"position_bias_rate": 0.5, "consistency_rate": 0.25, "first_preferred_rate": 4 / 8, "units": 4}
    # "agree": a's score when shown second is 1 - y; a win needs x == 1 - y, else a tie
    assert matches_by_item(records, 4, "agree") == [[("a", "b", 0.5)], [("a", "b", 1.0)], [("a", "b", 0.5)],
                                                    [("a", "b", 0.5)]]
    assert matches_by_item(records, 4, "separate")[1] == [("a", "b", 1.0), ("b", "a", 0.0)]


def test_win_tie_loss_counts_both_sides():
    table = win_tie_loss([("a", "b", 1), ("b", "a", 1), ("a", "b", 0.5)], ["a", "b"])
    assert table == {"a": {"b": [1, 1, 1]}, "b": {"a": [1, 1, 1]}}


def test_circular_judge_is_labelled_and_left_out_of_the_pool():
    report = run_tournament(ITEMS, COMPLETIONS, [LongerJudge(), TieJudge()], n_boot=10)
    assert report["judges"]["tie"]["circular"] and not report["judges"]["longer"]["circular"]
    assert report["pooled"]["judges"] == ["longer"] and report["pooled"]["circular"] is False
    assert report["pooled"]["n_matches"] == 12
    assert report["judges"]["tie"]["wins_ties_losses"]["long"]["mid"] == [0, 4, 0]
    assert "[CIRCULAR]" in format_report(report)
    forced = run_tournament(ITEMS, COMPLETIONS, [LongerJudge(), TieJudge()], n_boot=10, pool=["longer", "tie"])
    assert forced["pooled"]["circular"] is True and forced["pooled"]["n_matches"] == 24


def test_pooled_ratings_are_one_fit_on_all_pooled_matches():
    report = run_tournament(ITEMS, COMPLETIONS, [LongerJudge(), FirstJudge()], n_boot=10)
    # longer: 4 wins per pair for the longer text; first: each pair splits 2 / 2
    union = ([("long", "mid", 1)] * 6 + [("long", "mid", 0)] * 2 + [("long", "short", 1)] * 6
             + [("long", "short", 0)] * 2 + [("mid", "short", 1)] * 6 + [("mid", "short", 0)] * 2)
    expected = bradley_terry(union, prior=1.0)
    for v in COMPLETIONS:
        assert report["pooled"]["bradley_terry"][v] == pytest.approx(expected[v], abs=1e-9)


def test_report_round_trips_through_json_and_gives_the_results_view():
    report = run_tournament(ITEMS, COMPLETIONS, [LongerJudge(), FirstJudge()], n_boot=20)
    assert json.loads(json.dumps(report)) == report
    view = elo_view(report)
    assert set(view) == set(COMPLETIONS)
    for v, entry in view.items():
        assert set(entry) == {"rating", "ci"} and len(entry["ci"]) == 2
        assert entry["rating"] == report["pooled"]["bradley_terry"][v]
    assert elo_view(report, "first")["long"]["rating"] == pytest.approx(1500.0)
    assert not math.isnan(sum(e["rating"] for e in view.values()))


def test_completions_cache_round_trip_and_item_check(tmp_path):
    path = tmp_path / "cache" / "completions.json"
    save_completions(path, ITEMS, {**COMPLETIONS, "uni": ["perché è così", "ok"]})
    loaded = load_completions(path, ITEMS)
    assert loaded["uni"] == ["perché è così", "ok"] and loaded["long"] == COMPLETIONS["long"]
    with pytest.raises(ValueError, match="other items than the ones given: first difference at position 0"):
        load_completions(path, ITEMS[::-1])


def test_bad_inputs_are_errors_for_people():
    with pytest.raises(ValueError, match="variant 'mid': expected one completion per item \\(2\\), found 1"):
        collect_judgements(ITEMS, {"long": COMPLETIONS["long"], "mid": ["x"]}, [LongerJudge()])
    with pytest.raises(ValueError, match="at least two variants"):
        collect_judgements(ITEMS, {"long": COMPLETIONS["long"]}, [LongerJudge()])
    with pytest.raises(ValueError, match="two judges are named 'longer'"):
        collect_judgements(ITEMS, COMPLETIONS, [LongerJudge(), LongerJudge()])

    class Broken:
        name = "broken"

        def compare(self, items, firsts, seconds):
            return [0.7] * len(items)

    with pytest.raises(ValueError, match="judge 'broken': expected a score 1, 0.5 or 0, found 0.7 on item 0"):
        collect_judgements(ITEMS, COMPLETIONS, [Broken()])
