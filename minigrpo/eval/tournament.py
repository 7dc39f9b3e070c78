"""A pairwise tournament between model variants on the same held-out items, rated with Elo as in the paper.

Input: N items, each variant's completion for every item ({variant: [text per item]}, cached: the tournament
never generates, so adding a judge costs no new generation), and one or more judges (`judges.py`).

1. Judgements. Every judge compares every pair of variants {a, b} on every item, in BOTH presentation orders:
   (a first, b second) and (b first, a second). Asking both cancels a judge's preference for a position.
2. Matches (`combine`):
     "separate"  each order is its own match: (first, second, score_first). 2 matches per (pair, item).
     "agree"     one match per (pair, item): a's score if both orders give a the same score, else a tie.
3. Ratings, per judge and pooled: Bradley-Terry Elo (`elo.bradley_terry` with `prior` virtual ties per pair,
   mean 1500) with a percentile bootstrap interval that resamples ITEMS (`elo.bootstrap_intervals`), online Elo
   averaged over `orderings` random orders, and the win/tie/loss matrix.
   Pooling ("averaged over judges"): the pooled ratings are ONE fit on the union of the matches of the pooled
   judges; every judge judges the same pairs, so each weighs the same. Judges marked circular are left out of the
   pool unless every judge is circular (then the pooled section says circular: true).
4. Position bias, per judge, over the (pair, item) units, with x = score of the text shown first when a is first
   and y = score of the text shown first when b is first:
     position_bias_rate  = fraction with x == y != 0.5: the judge preferred the same POSITION in both orders,
                           i.e. its verdict about the two texts flipped with the order (1.0 for "always first")
     consistency_rate    = fraction with x == 1 - y: the same verdict about the texts in both orders
     first_preferred_rate = fraction of all judgements (both orders) won by the text shown first
   The rest of the units (a tie in one order, a preference in the other) are neither.

The report is a plain dict of lists, floats and strings that `json.dumps` writes as is; `elo_view` gives the
{variant: {"rating": R, "ci": [lo, hi]}} that results.json stores under "elo". In a pipeline:

    texts = {"cpt": [...], "sft": [...], "grpo": [...]}                  # one greedy completion per eval item
    save_completions(out / "completions.json", eval_items, texts)         # a new judge later needs no generation
    report = run_tournament(eval_items, texts, [ReferenceJudge(), LMPairJudge(judge_lm, judge_tok)],
                            extract=lambda t: fmt.parse(t).explanation or "")
    results["elo"] = elo_view(report)
    (out / "tournament.json").write_text(json.dumps(report, indent=1))
    print(format_report(report)); plot_elo(results["elo"], out / "elo.png")     # plots.plot_elo
"""

import json
from pathlib import Path

from .elo import bootstrap_intervals, bradley_terry, online_elo

COMBINE = ("separate", "agree")


def _named_judges(judges):
    """{name: judge} from a dict or a list of judges with a `name` attribute; names must be unique."""
    if isinstance(judges, dict):
        named = dict(judges)
    else:
        named = {}
        for judge in judges:
            name = getattr(judge, "name", type(judge).__name__)
            if name in named:
                raise ValueError(f"two judges are named {name!r}; give them distinct `name`s or pass a dict")
            named[name] = judge
    if not named:
        raise ValueError("expected at least one judge, found none")
    return named


def collect_judgements(items, completions, judges, *, extract=None):
    """Ask every judge about every pair of variants on every item, in both orders.

    Args:
        items: the N held-out items (MCQItem), the same for every variant.
        completions: {variant: [N texts]}, at least two variants.
        judges: list of judges (or {name: judge}); each has compare(items, firsts, seconds) -> list of scores.
        extract: text -> what the judge sees (e.g. lambda t: fmt.parse(t).explanation or ""); None: the text.

    Returns:
        list of {"judge", "item" (index), "first", "second" (variant names), "score_first" (1, 0.5 or 0)}: for
        each judge, pairs (a, b) in the order of `completions` with a before b, each item, then the two orders.
        A judge gets all its judgements in one compare call (it batches them as it likes).
    """
    variants = list(completions)
    if len(variants) < 2:
        raise ValueError(f"a tournament needs at least two variants, found {variants}")
    for v, texts in completions.items():
        if len(texts) != len(items):
            raise ValueError(f"variant {v!r}: expected one completion per item ({len(items)}), found {len(texts)}")
    shown = {v: [extract(t) if extract else t for t in texts] for v, texts in completions.items()}
    slots = [(i, first, second) for ia, a in enumerate(variants) for b in variants[ia + 1:]
             for i in range(len(items)) for first, second in ((a, b), (b, a))]
    records = []
    for name, judge in _named_judges(judges).items():
        scores = list(judge.compare([items[i] for i, _, _ in slots], [shown[f][i] for i, f, _ in slots],
                                    [shown[s][i] for i, _, s in slots]))
        if len(scores) != len(slots):
            raise ValueError(f"judge {name!r} returned {len(scores)} scores for {len(slots)} judgements")
        for (i, first, second), score in zip(slots, scores):
            if score not in (0, 0.5, 1):
                raise ValueError(f"judge {name!r}: expected a score 1, 0.5 or 0, found {score!r} on item {i} "
                                 f"({first!r} first, {second!r} second)")
            records.append({"judge": name, "item": i, "first": first, "second": second, "score_first": float(score)})
    return records


def _orders(records):
    """{(judge, item, a, b): [x, y]} with a the variant shown first in the first-seen order: x = score_first
    with a first, y = score_first with b first."""
    units = {}
    for r in records:
        key = (r["judge"], r["item"], r["second"], r["first"])
        if key in units:  # the other order of a pair already seen
            units[key][1] = r["score_first"]
        else:
            units[(r["judge"], r["item"], r["first"], r["second"])] = [r["score_first"], None]
    missing = [k for k, (x, y) in units.items() if y is None]
    if missing:
        judge, item, first, second = missing[0]
        raise ValueError(f"judge {judge!r}: judgements without the reverse order, e.g. item {item} with {first!r} "
                         f"first and {second!r} second")
    return units


def matches_by_item(records, n_items, combine="separate"):
    """One list of (a, b, score_a) matches per item (see `combine` in the module docstring)."""
    if combine not in COMBINE:
        raise ValueError(f"combine: expected one of {COMBINE}, found {combine!r}")
    out = [[] for _ in range(n_items)]
    if combine == "separate":
        for r in records:
            out[r["item"]].append((r["first"], r["second"], r["score_first"]))
    else:
        for (_, i, a, b), (x, y) in _orders(records).items():
            a_when_second = 1.0 - y
            out[i].append((a, b, x if x == a_when_second else 0.5))
    return out


def position_bias(records):
    """{"position_bias_rate", "consistency_rate", "first_preferred_rate", "units"} of one judge's records."""
    units = _orders(records).values()
    n = len(units)
    return {"position_bias_rate": sum(x == y != 0.5 for x, y in units) / n,
            "consistency_rate": sum(x == 1.0 - y for x, y in units) / n,
            "first_preferred_rate": sum(r["score_first"] == 1.0 for r in records) / len(records),
            "units": n}


def win_tie_loss(matches, variants):
    """{a: {b: [wins, ties, losses] of a against b}} over all matches, for every ordered pair a != b."""
    table = {a: {b: [0, 0, 0] for b in variants if b != a} for a in variants}
    for a, b, s in matches:
        column = {1.0: 0, 0.5: 1, 0.0: 2}[float(s)]
        table[a][b][column] += 1
        table[b][a][2 - column] += 1
    return table


def rate(per_item, variants, *, prior=1.0, n_boot=1000, level=0.95, seed=0, k=32.0, orderings=100):
    """Bradley-Terry ratings with bootstrap intervals, online Elo and the win/tie/loss matrix of one match set."""
    matches = [m for item in per_item for m in item]
    ratings = bradley_terry(matches, prior=prior)
    ci = bootstrap_intervals(per_item, prior=prior, n_boot=n_boot, level=level, seed=seed)
    online = online_elo(matches, k=k, orderings=orderings, seed=seed)
    return {"bradley_terry": {v: ratings[v] for v in variants},
            "ci": {v: list(ci[v]) for v in variants},
            "online_elo": {v: online[v] for v in variants},
            "wins_ties_losses": win_tie_loss(matches, variants),
            "n_matches": len(matches)}


def tournament_report(records, variants, n_items, *, circular=(), pool=None, combine="separate", prior=1.0,
                      n_boot=1000, level=0.95, seed=0, k=32.0, orderings=100):
    """The report of a set of judgements (module docstring): per judge, then pooled.

    circular: names of the circular judges (labelled in the report, left out of the default pool).
    pool: names of the judges to pool; None = the non-circular ones (all of them if every judge is circular).
    """
    names = list(dict.fromkeys(r["judge"] for r in records))
    settings = dict(prior=prior, n_boot=n_boot, level=level, seed=seed, k=k, orderings=orderings)
    report = {"variants": list(variants), "n_items": n_items,
              "method": {"combine": combine, "bt_prior_virtual_ties": prior, "ci_level": level, "n_boot": n_boot,
                         "bootstrap_unit": "item", "seed": seed, "online_k": k, "online_orderings": orderings},
              "judges": {}}
    for name in names:
        mine = [r for r in records if r["judge"] == name]
        report["judges"][name] = {"circular": name in circular, **position_bias(mine),
                                  **rate(matches_by_item(mine, n_items, combine), variants, **settings)}
    if pool is None:
        pool = [n for n in names if n not in circular] or names
    unknown = sorted(set(pool) - set(names))
    if unknown:
        raise ValueError(f"pool names judges {unknown} that gave no judgements; the judges are {names}")
    pooled = [r for r in records if r["judge"] in pool]
    report["pooled"] = {"judges": list(pool), "circular": any(n in circular for n in pool),
                        "how": "one Bradley-Terry fit on the union of the pooled judges' matches",
                        **rate(matches_by_item(pooled, n_items, combine), variants, **settings)}
    return report


def run_tournament(items, completions, judges, *, extract=None, pool=None, combine="separate", prior=1.0,
                   n_boot=1000, level=0.95, seed=0, k=32.0, orderings=100):
    """collect_judgements + tournament_report: the whole tournament as one JSON-ready dict."""
    named = _named_judges(judges)
    records = collect_judgements(items, completions, named, extract=extract)
    circular = [n for n, j in named.items() if getattr(j, "circular", False)]
    return tournament_report(records, list(completions), len(items), circular=circular, pool=pool, combine=combine,
                             prior=prior, n_boot=n_boot, level=level, seed=seed, k=k, orderings=orderings)


def elo_view(report, judge=None):
    """{variant: {"rating": R, "ci": [lo, hi]}} of the pooled ratings, or of one judge's."""
    section = report["pooled"] if judge is None else report["judges"][judge]
    return {v: {"rating": section["bradley_terry"][v], "ci": section["ci"][v]} for v in report["variants"]}


def format_report(report):
    """The report as text: one ratings table per judge and pooled, with the position-bias rates."""
    variants = report["variants"]
    width = max(len(v) for v in variants) + 2
    lines = [f"Elo tournament: {len(variants)} variants, {report['n_items']} items, "
             f"matches {report['method']['combine']}, {int(report['method']['ci_level'] * 100)}% CI over items"]
    sections = [(f"judge {n}" + (" [CIRCULAR]" if s["circular"] else ""), s) for n, s in report["judges"].items()]
    pooled = report["pooled"]
    sections.append((f"pooled over {', '.join(pooled['judges'])}" + (" [CIRCULAR]" if pooled["circular"] else ""),
                     pooled))
    for title, s in sections:
        lines += ["", title, f"{'variant':<{width}} {'BT Elo':>8} {'CI low':>8} {'CI high':>8} {'online':>8}"]
        for v in sorted(variants, key=lambda v: -s["bradley_terry"][v]):
            lo, hi = s["ci"][v]
            lines.append(f"{v:<{width}} {s['bradley_terry'][v]:>8.1f} {lo:>8.1f} {hi:>8.1f} {s['online_elo'][v]:>8.1f}")
        if "position_bias_rate" in s:
            lines.append(f"position bias {s['position_bias_rate']:.3f}, order consistency {s['consistency_rate']:.3f}, "
                         f"first preferred {s['first_preferred_rate']:.3f}")
    return "\n".join(lines)


def save_completions(path, items, completions):
    """Write {"item_ids": [...], "completions": {variant: [...]}} as one JSON file (UTF-8)."""
    for v, texts in completions.items():
        if len(texts) != len(items):
            raise ValueError(f"variant {v!r}: expected one completion per item ({len(items)}), found {len(texts)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"item_ids": [it.id for it in items], "completions": {v: list(t) for v, t in completions.items()}}
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def load_completions(path, items=None):
    """{variant: [texts]} from `save_completions`; with `items`, checks that the file is about those items, in order."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if items is not None:
        ids = [it.id for it in items]
        if data["item_ids"] != ids:
            diff = next((i for i, (a, b) in enumerate(zip(data["item_ids"], ids)) if a != b), min(len(ids),
                                                                                                 len(data["item_ids"])))
            raise ValueError(f"{path}: completions are for other items than the ones given: first difference at "
                             f"position {diff} ({len(data['item_ids'])} ids in the file, {len(ids)} items given)")
    return data["completions"]
