"""Elo ratings from pairwise matches: the Bradley-Terry maximum-likelihood fit, sequential (online) Elo, and
bootstrap confidence intervals that resample evaluated items.

A match is a tuple (a, b, score_a): players a != b (any hashable names, usually strings) and score_a = 1 (a won),
0.5 (tie) or 0 (b won). b's score is 1 - score_a.

Bradley-Terry on the Elo scale. Each player i has a rating R_i and

    P(i beats j) = 1 / (1 + 10^((R_j - R_i) / 400))

so 400 points of difference are odds of 10 to 1. With gamma_i = 10^(R_i / 400), W_i = the total score of i
(a tie counts half a win for each side) and n_ij = the number of matches between i and j, the log-likelihood

    L(gamma) = sum_i W_i ln gamma_i - sum_{i<j} n_ij ln(gamma_i + gamma_j)

is concave in theta_i = ln gamma_i. It is maximised by Newton's method (`_newton`: gradient W_i - sum_j n_ij p_ij,
minus the Hessian a weighted graph Laplacian, a step halved while it would lower L) until no rating moves by
more than `tol` Elo points; the ratings are then shifted so that their mean is `anchor` (only differences are
identified). L depends on the matches only through W and n: the fit does not depend on their order, nor on the
side a pair is written from.

When no finite maximum exists. With "i scored against j" meaning i won or tied at least one match against j,
a finite maximum exists exactly when every player can reach every other through a chain of such edges: the
directed comparison graph is strongly connected (Assumption 1 of Hunter (2004), "MM algorithms for generalized
Bradley-Terry models"). Otherwise some group of players won every match it played against the rest, or never
played them, and L keeps growing as the gap between the groups goes to infinity. With prior=0 (the default)
`bradley_terry` raises NoFiniteMaximum naming the two groups. With prior=p > 0 every pair of players gets p
virtual TIED matches (p/2 points to each side) added to the real ones: a weak pull toward equal ratings that
always makes the maximum finite. Tournaments use it (`tournament.py` passes prior=1 by default), because a
variant that never writes an explanation loses every match.

Online Elo: the rating system of chess, matches taken one after another,

    E_a = 1 / (1 + 10^((R_b - R_a) / 400)),   R_a += k (score_a - E_a),   R_b -= k (score_a - E_a)

which depends on the order of the matches; `online_elo` averages the final ratings over several random orders.
"""

from collections import defaultdict

import numpy as np

ELO_SCALE = 400.0  # points per factor of 10 in the odds


class NoFiniteMaximum(ValueError):
    """The Bradley-Terry log-likelihood has no finite maximum for these matches (see the module docstring)."""


def _check_match(match, index):
    try:
        a, b, score = match
    except (TypeError, ValueError):
        raise ValueError(f"match {index}: expected a tuple (a, b, score_a), found {match!r}") from None
    if a == b:
        raise ValueError(f"match {index}: a player cannot play itself, found ({a!r}, {b!r}, {score!r})")
    if score not in (0, 0.5, 1):
        raise ValueError(f"match {index}: expected score_a 1, 0.5 or 0, found {score!r} in ({a!r}, {b!r}, ...)")
    return a, b, float(score)


def match_table(matches):
    """(players, S, N): players in order of first appearance and two (P, P) tables,

    S[i, j] = i's total score against j (a tie 0.5 to each side), so W_i = sum_j S[i, j];
    N[i, j] = N[j, i] = the number of matches between i and j.
    """
    index, rows = {}, []
    for m, match in enumerate(matches):
        a, b, score = _check_match(match, m)
        for player in (a, b):
            index.setdefault(player, len(index))
        rows.append((index[a], index[b], score))
    if not rows:
        raise ValueError("expected at least one match (a, b, score_a), found none")
    n = len(index)
    a, b, score = (np.asarray(column) for column in zip(*rows))  # (M,) each, M matches
    S = np.zeros((n, n))  # (P, P) score of row player against column player
    N = np.zeros((n, n))  # (P, P) number of matches, symmetric
    np.add.at(S, (a, b), score)
    np.add.at(S, (b, a), 1.0 - score)
    np.add.at(N, (a, b), 1.0)
    np.add.at(N, (b, a), 1.0)
    return list(index), S, N


def _split_without_finite_maximum(S):
    """(winners, losers) index lists when the comparison graph is not strongly connected, else None.

    Edge i -> j when S[i, j] > 0 (i won or tied at least once against j). The set F of players that player 0
    reaches along edges has no edge leaving it: when F is not everyone, the others conceded nothing to F.
    Likewise the set B of players that reach player 0: when B is not everyone, B conceded nothing to the others.
    """
    edges = S > 0  # (P, P)

    def reach(adj):
        seen, stack = {0}, [0]
        while stack:
            for j in np.flatnonzero(adj[stack.pop()]):
                if int(j) not in seen:
                    seen.add(int(j))
                    stack.append(int(j))
        return seen

    everyone = set(range(len(S)))
    forward, backward = reach(edges), reach(edges.T)
    if forward != everyone:
        return sorted(everyone - forward), sorted(forward)
    if backward != everyone:
        return sorted(backward), sorted(everyone - backward)
    return None


def _log_likelihood(theta, S):
    """L = sum_{i != j} S_ij ln sigma(theta_i - theta_j), with sigma(x) = 1 / (1 + e^-x)."""
    diff = theta[:, None] - theta[None, :]  # (P, P)
    return float((S * -np.logaddexp(0.0, -diff)).sum())


def _newton(S, N, tol, max_iter):
    """Maximise L over theta (natural-log strengths, mean 0) by Newton steps with step halving.

        p_ij = sigma(theta_i - theta_j)
        g_i  = W_i - sum_j n_ij p_ij                              gradient, sums to 0
        M    = diag(sum_j n_ij p_ij p_ji) - [n_ij p_ij p_ji]      minus the Hessian (a weighted graph Laplacian)
        step = solution of (M + 1 1^T / P) step = g               the Newton step that keeps the mean at 0

    A step that would lower L is halved until it does not (Newton alone can overshoot when one player is
    far ahead). Stops when the largest |step| is below tol; RuntimeError after max_iter steps.
    """
    P = len(S)
    W = S.sum(axis=1)                      # (P,) total score of each player
    theta = np.zeros(P)                    # start from equal strengths
    ones = np.ones((P, P)) / P
    current = _log_likelihood(theta, S)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(theta[None, :] - theta[:, None]))  # (P, P) p_ij
        g = W - (N * p).sum(axis=1)                                  # (P,)
        C = N * p * p.T                                              # (P, P) n_ij p_ij p_ji
        M = np.diag(C.sum(axis=1)) - C
        step = np.linalg.solve(M + ones, g)
        for _halving in range(60):
            candidate = _log_likelihood(theta + step, S)
            if candidate >= current - 1e-12 * abs(current):
                break
            step = step / 2.0
        theta, current = theta + step, candidate
        if np.max(np.abs(step)) < tol:
            return theta - theta.mean()
    raise RuntimeError(f"bradley_terry: Newton's method still moved a rating after {max_iter} steps; raise max_iter "
                       f"or tol")


def bradley_terry(matches, *, anchor=1500.0, prior=0.0, tol=1e-9, max_iter=200):
    """Maximum-likelihood Bradley-Terry ratings on the Elo scale (formula in the module docstring).

    Args:
        matches: iterable of (a, b, score_a), score_a in {1, 0.5, 0}.
        anchor: the mean of the returned ratings.
        prior: virtual tied matches added between every pair of players (0: none; then a group that won or
            lost every match it played against the rest raises NoFiniteMaximum).
        tol: stop when no rating moves by more than this many Elo points in one Newton step.
        max_iter: Newton steps allowed before giving up with a RuntimeError.

    Returns:
        {player: rating}, players in order of first appearance.
    """
    players, S, N = match_table(matches)
    return fit_table(players, S, N, anchor=anchor, prior=prior, tol=tol, max_iter=max_iter)


def fit_table(players, S, N, *, anchor=1500.0, prior=0.0, tol=1e-9, max_iter=200):
    """`bradley_terry` on a `match_table`: S (P, P) scores, N (P, P) match counts of the P players."""
    if prior < 0:
        raise ValueError(f"prior: expected virtual ties >= 0, found {prior}")
    if len(players) == 1:
        return {players[0]: float(anchor)}
    if prior > 0:
        virtual = prior * (1.0 - np.eye(len(players)))  # (P, P) p virtual ties between each pair
        S, N = S + 0.5 * virtual, N + virtual
    else:
        split = _split_without_finite_maximum(S)
        if split is not None:
            won, lost = split
            played = int(N[np.ix_(won, lost)].sum())
            won, lost = [players[i] for i in won], [players[i] for i in lost]
            what = (f"{won} won all {played} matches they played against {lost} (no tie, no loss)" if played else
                    f"{won} never played {lost}")
            raise NoFiniteMaximum(
                f"no finite Bradley-Terry maximum: {what}, so the rating gap between the two groups is not "
                f"determined by the matches; add matches between them, or pass prior > 0 (virtual ties between "
                f"every pair)")
    theta = _newton(S, N, tol * np.log(10.0) / ELO_SCALE, max_iter)  # (P,) natural-log strengths
    ratings = ELO_SCALE / np.log(10.0) * theta
    ratings = ratings - ratings.mean() + anchor
    return {p: float(r) for p, r in zip(players, ratings)}


def online_elo(matches, *, k=32.0, initial=1500.0, orderings=1, seed=0):
    """Sequential Elo ratings (update rule in the module docstring), averaged over orders of the matches.

    orderings=1 takes the matches in the order given; orderings=n > 1 averages the final ratings of n random
    permutations drawn from numpy's default_rng(seed) (the given order is not one of them).
    Returns {player: rating}, players in order of first appearance; every player starts at `initial`.
    """
    matches = [_check_match(m, i) for i, m in enumerate(matches)]
    if not matches:
        raise ValueError("expected at least one match (a, b, score_a), found none")
    if orderings < 1:
        raise ValueError(f"orderings: expected >= 1, found {orderings}")
    players = list(dict.fromkeys(p for a, b, _ in matches for p in (a, b)))
    rng = np.random.default_rng(seed)
    total = defaultdict(float)
    for n in range(orderings):
        order = range(len(matches)) if orderings == 1 else rng.permutation(len(matches))
        ratings = dict.fromkeys(players, float(initial))
        for m in order:
            a, b, score = matches[m]
            expected = 1.0 / (1.0 + 10.0 ** ((ratings[b] - ratings[a]) / ELO_SCALE))
            ratings[a] += k * (score - expected)
            ratings[b] -= k * (score - expected)
        for p in players:
            total[p] += ratings[p]
    return {p: total[p] / orderings for p in players}


def bootstrap_intervals(matches_by_item, *, prior=0.0, anchor=1500.0, n_boot=1000, level=0.95, seed=0):
    """Percentile bootstrap intervals of Bradley-Terry ratings, resampling ITEMS (each with all its matches).

    The matches of one item are not independent (the same texts meet in every pair), so the unit resampled is
    the item: draw len(items) item indices with replacement (numpy default_rng(seed).integers), refit
    `bradley_terry(all their matches, prior=prior)`, and take the (1 - level) / 2 and (1 + level) / 2 quantiles
    (numpy's linear interpolation) of each player's ratings over the n_boot refits.

    The refit is the same fit on the same tables: each item's (S, N) is computed once and a resample's table
    is their sum weighted by how often each item was drawn. A player absent from a resample (it played only on
    items not drawn) is left out of that refit and of its quantiles. With prior=0 a resample without a finite
    maximum raises NoFiniteMaximum: tournaments pass prior > 0.

    Args:
        matches_by_item: sequence, one list of (a, b, score_a) matches per item.
        prior, anchor: as in `bradley_terry`.
        n_boot: resamples; level: coverage of the interval; seed: the resampling stream.

    Returns:
        {player: (low, high)}, players in order of first appearance.
    """
    per_item = [list(m) for m in matches_by_item]
    if not any(per_item):
        raise ValueError("bootstrap_intervals: expected at least one item with matches, found none")
    if not 0 < level < 1:
        raise ValueError(f"bootstrap_intervals: expected 0 < level < 1, found {level}")
    players, _, _ = match_table(m for item in per_item for m in item)
    index = {p: i for i, p in enumerate(players)}
    S_items = np.zeros((len(per_item), len(players), len(players)))  # (I, P, P) each item's scores
    N_items = np.zeros_like(S_items)                                   # (I, P, P) each item's match counts
    for i, item in enumerate(per_item):
        if item:
            names, S, N = match_table(item)
            rows = [index[p] for p in names]
            S_items[i][np.ix_(rows, rows)] = S
            N_items[i][np.ix_(rows, rows)] = N
    rng = np.random.default_rng(seed)
    draws = defaultdict(list)
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, len(per_item), size=len(per_item)), minlength=len(per_item))  # (I,)
        S, N = np.tensordot(counts, S_items, axes=1), np.tensordot(counts, N_items, axes=1)              # (P, P)
        active = np.flatnonzero(N.sum(axis=1) > 0)
        if len(active) == 0:
            continue
        fitted = fit_table([players[i] for i in active], S[np.ix_(active, active)], N[np.ix_(active, active)],
                           anchor=anchor, prior=prior)
        for player, rating in fitted.items():
            draws[player].append(rating)
    lo, hi = (1.0 - level) / 2.0, (1.0 + level) / 2.0
    return {p: (float(np.quantile(draws[p], lo)), float(np.quantile(draws[p], hi))) for p in players if draws[p]}
