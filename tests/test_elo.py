import math
import random
import numpy as np
import pytest

from minigrpo.eval.elo import NoFiniteMaximum, bootstrap_intervals, bradley_terry, online_elo

# ---- online Elo, worked by hand at K = 32 --------------------------------------------------------------------


def test_online_elo_one_game_between_equal_players():
    # E_a = 1 / (1 + 10^0) = 0.5, so the winner gains 32 * (1 - 0.5) = 16 and the loser loses 16
    assert online_elo([("a", "b", 1)]) == {"a": 1516.0, "b": 1484.0}


def test_online_elo_two_games_same_winner():
    # game 2: E_a = 1 / (1 + 10^((1484 - 1516) / 400)) = 1 / (1 + 10^-0.08) = 1 / 1.8317638 = 0.5459219
    #         a: 1516 + 32 * (1 - 0.5459219) = 1530.53050,  b: 1484 - 14.53050 = 1469.46950
    got = online_elo([("a", "b", 1), ("a", "b", 1)])
    assert got["a"] == pytest.approx(1530.53050, abs=1e-5)
    assert got["b"] == pytest.approx(1469.46950, abs=1e-5)


def test_online_elo_two_games_split_and_written_from_the_other_side():
    # game 2 written as (b, a, 1): b wins with E_b = 1 - 0.5459219 = 0.4540781,
    #         b: 1484 + 32 * 0.5459219 = 1501.46950,  a: 1516 - 17.46950 = 1498.53050
    got = online_elo([("a", "b", 1), ("b", "a", 1)])
    assert got["a"] == pytest.approx(1498.53050, abs=1e-5)
    assert got["b"] == pytest.approx(1501.46950, abs=1e-5)


def test_online_elo_tie_between_equal_players_changes_nothing():
    assert online_elo([("a", "b", 0.5)], k=10.0, initial=1000.0) == {"a": 1000.0, "b": 1000.0}


def test_online_elo_depends_on_order_and_averages_orderings():
    matches = [("a", "b", 1), ("b", "a", 1)]
    forward, backward = online_elo(matches), online_elo(matches[::-1])
    assert forward["a"] != pytest.approx(backward["a"])  # sequential Elo remembers the order
    # with many random orders of these two matches, each order comes up about half the time
    mean = online_elo(matches, orderings=400, seed=3)
    assert mean["a"] == pytest.approx((forward["a"] + backward["a"]) / 2, abs=0.5)
    assert online_elo(matches, orderings=5, seed=1) == online_elo(matches, orderings=5, seed=1)


# ---- Bradley-Terry ---------------------------------------------------------------------------------------------


def test_bradley_terry_two_players_closed_form():
    # with two players the likelihood is maximal at P(a beats b) = w_a / (w_a + w_b): R_a - R_b = 400 log10(w_a / w_b)
    r = bradley_terry([("a", "b", 1)] * 3 + [("a", "b", 0)])
    assert r["a"] - r["b"] == pytest.approx(400 * math.log10(3), abs=1e-7)  # 190.848...
    assert (r["a"] + r["b"]) / 2 == pytest.approx(1500.0, abs=1e-9)


def test_bradley_terry_tie_counts_half_a_win_for_each_side():
    # a: 2 wins + 1 tie = 2.5 points, b: 1 win + 1 tie = 1.5 points -> 400 log10(2.5 / 1.5) = 88.739
    r = bradley_terry([("a", "b", 1), ("a", "b", 1), ("b", "a", 0.5), ("b", "a", 1)], anchor=0.0)
    assert r["a"] - r["b"] == pytest.approx(400 * math.log10(2.5 / 1.5), abs=1e-7)
    assert r["a"] == pytest.approx(200 * math.log10(2.5 / 1.5), abs=1e-7)


def _gradient_ascent_fit(matches, steps=20000, lr=0.05):
    """Independent fit: plain gradient ascent on sum s ln sigma(r_a - r_b) + (1 - s) ln sigma(r_b - r_a)."""
    players = sorted({p for a, b, _ in matches for p in (a, b)})
    r = dict.fromkeys(players, 0.0)  # natural-log scale
    for _ in range(steps):
        grad = dict.fromkeys(players, 0.0)
        for a, b, s in matches:
            p = 1.0 / (1.0 + math.exp(r[b] - r[a]))
            grad[a] += s - p
            grad[b] -= s - p
        for q in players:
            r[q] += lr * grad[q]
    mean = sum(r.values()) / len(r)
    return {q: 1500.0 + 400.0 / math.log(10) * (r[q] - mean) for q in players}


THREE = ([("a", "b", 1)] * 3 + [("a", "b", 0)] + [("b", "c", 1)] * 2 + [("b", "c", 0.5)] + [("c", "b", 1)]
         + [("a", "c", 1)] * 2 + [("c", "a", 1)] + [("c", "a", 0.5)])


def test_bradley_terry_three_players_matches_an_independent_fit():
    ours = bradley_terry(THREE)
    oracle = _gradient_ascent_fit(THREE)
    for p in "abc":
        assert ours[p] == pytest.approx(oracle[p], abs=1e-6)
    assert ours["a"] > ours["b"] > ours["c"]
    assert sum(ours.values()) / 3 == pytest.approx(1500.0, abs=1e-9)


def test_bradley_terry_maximum_has_zero_gradient():
    # first-order condition of the MLE: each player's expected score equals its actual score
    r = bradley_terry(THREE)
    for p in "abc":
        actual = sum(s if a == p else 1 - s for a, b, s in THREE if p in (a, b))
        expected = sum(1 / (1 + 10 ** ((r[b] - r[a]) / 400)) if a == p else 1 / (1 + 10 ** ((r[a] - r[b]) / 400))
                       for a, b, s in THREE if p in (a, b))
        assert expected == pytest.approx(actual, abs=1e-8)


def test_bradley_terry_does_not_depend_on_match_order():
    shuffled = list(THREE)
    random.Random(0).shuffle(shuffled)
    a, b = bradley_terry(THREE), bradley_terry(shuffled)
    for p in "abc":
        assert a[p] == pytest.approx(b[p], abs=1e-8)


def test_bradley_terry_does_not_depend_on_the_side_a_pair_is_written_from():
    flipped = [(b, a, 1 - s) if i % 2 else (a, b, s) for i, (a, b, s) in enumerate(THREE)]
    a, b = bradley_terry(THREE), bradley_terry(flipped)
    for p in "abc":
        assert a[p] == pytest.approx(b[p], abs=1e-8)


def test_bradley_terry_all_ties_gives_equal_ratings():
    r = bradley_terry([("a", "b", 0.5), ("b", "c", 0.5), ("c", "a", 0.5)], anchor=1000.0)
    assert r == pytest.approx({"a": 1000.0, "b": 1000.0, "c": 1000.0}, abs=1e-9)


def test_bradley_terry_player_who_won_everything_has_no_finite_maximum():
    with pytest.raises(NoFiniteMaximum, match=r"\['a'\] won all 2 matches they played against \['b', 'c'\]"):
        bradley_terry([("a", "b", 1), ("b", "c", 1), ("c", "a", 0)])


def test_bradley_terry_player_who_lost_everything_has_no_finite_maximum():
    with pytest.raises(NoFiniteMaximum, match=r"\['a', 'b'\] won all 2 matches they played against \['c'\]"):
        bradley_terry([("a", "b", 1), ("b", "a", 0.5), ("c", "a", 0), ("b", "c", 1)])


def test_bradley_terry_disconnected_groups_have_no_finite_maximum():
    with pytest.raises(NoFiniteMaximum, match="never played"):
        bradley_terry([("a", "b", 1), ("b", "a", 1), ("c", "d", 0.5)])


def test_bradley_terry_prior_is_one_virtual_tie_per_pair():
    # a won its only game; one virtual tie: a has 1 + 0.5 points, b 0.5, in 2 games -> 400 log10(3)
    r = bradley_terry([("a", "b", 1)], prior=1.0)
    assert r["a"] - r["b"] == pytest.approx(400 * math.log10(3), abs=1e-7)


def test_bradley_terry_rejects_bad_matches():
    with pytest.raises(ValueError, match="match 1: expected score_a 1, 0.5 or 0, found 2"):
        bradley_terry([("a", "b", 1), ("a", "b", 2)])
    with pytest.raises(ValueError, match="cannot play itself"):
        bradley_terry([("a", "a", 1)])
    with pytest.raises(ValueError, match="at least one match"):
        bradley_terry([])


# ---- bootstrap over items ---------------------------------------------------------------------------------------


def _slow_bootstrap(items, prior, n_boot, level, seed):
    """The documented procedure written out plainly: draw item indices, concatenate matches, refit, quantiles."""
    rng = np.random.default_rng(seed)
    fits = []
    for _ in range(n_boot):
        chosen = rng.integers(0, len(items), size=len(items))
        fits.append(bradley_terry([m for i in chosen for m in items[i]], prior=prior))
    lo, hi = (1 - level) / 2, (1 + level) / 2
    return {p: (np.quantile([f[p] for f in fits], lo), np.quantile([f[p] for f in fits], hi)) for p in fits[0]}


def test_bootstrap_equals_refitting_on_resampled_items():
    rng = random.Random(0)
    items = [[("a", "b", rng.choice([1, 1, 0.5, 0])), ("b", "c", rng.choice([1, 1, 0])),
              ("a", "c", rng.choice([1, 0.5, 0]))] for _ in range(12)]
    fast = bootstrap_intervals(items, prior=1.0, n_boot=40, level=0.9, seed=5)
    slow = _slow_bootstrap(items, 1.0, 40, 0.9, 5)
    for p in "abc":
        assert fast[p] == pytest.approx(slow[p], abs=1e-8)


def test_bootstrap_resamples_items_not_matches():
    # item 0: a beats b three times; item 1: b beats a once. Two items drawn with replacement give only
    # (a wins, b wins) = (6, 0) w.p. 1/4, (3, 1) w.p. 1/2, (0, 2) w.p. 1/4; with one virtual tie the extremes are
    # a - mean = 200 log10(6.5 / 0.5) and 200 log10(0.5 / 2.5), and each is more than 2.5% of the resamples.
    # (Resampling the 4 matches instead would give 4 a-wins at most: 200 log10(4.5 / 0.5) on top.)
    items = [[("a", "b", 1)] * 3, [("b", "a", 1)]]
    ci = bootstrap_intervals(items, prior=1.0, n_boot=400, seed=0)
    assert ci["a"][0] == pytest.approx(1500 + 200 * math.log10(0.5 / 2.5), abs=1e-6)
    assert ci["a"][1] == pytest.approx(1500 + 200 * math.log10(6.5 / 0.5), abs=1e-6)


def test_bootstrap_is_seeded_and_brackets_the_fit():
    rng = random.Random(0)
    items = [[("a", "b", rng.choice([1, 1, 0.5, 0])), ("b", "c", rng.choice([1, 1, 0])),
              ("a", "c", rng.choice([1, 0.5, 0]))] for _ in range(30)]
    first = bootstrap_intervals(items, prior=1.0, n_boot=100, seed=7)
    assert first == bootstrap_intervals(items, prior=1.0, n_boot=100, seed=7)
    assert first != bootstrap_intervals(items, prior=1.0, n_boot=100, seed=8)
    point = bradley_terry([m for item in items for m in item], prior=1.0)
    for p, (lo, hi) in first.items():
        assert lo < point[p] < hi
    narrow = bootstrap_intervals(items, prior=1.0, n_boot=100, seed=7, level=0.5)
    for p in point:
        assert first[p][0] <= narrow[p][0] <= narrow[p][1] <= first[p][1]


def test_bootstrap_without_prior_reports_a_degenerate_resample():
    items = [[("a", "b", 1)], [("b", "a", 1)]]
    with pytest.raises(NoFiniteMaximum):
        bootstrap_intervals(items, n_boot=50, seed=0)


def test_bootstrap_leaves_out_a_player_absent_from_a_resample():
    # c plays only on item 2; resamples without item 2 fit a and b alone
    items = [[("a", "b", 1)], [("b", "a", 1)], [("a", "c", 0.5), ("b", "c", 0.5)]]
    ci = bootstrap_intervals(items, prior=1.0, n_boot=200, seed=1)
    assert set(ci) == {"a", "b", "c"}
    assert all(lo <= hi for lo, hi in ci.values())
