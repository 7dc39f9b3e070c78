"""Rate model variants from their cached held-out completions: the evaluation step the pipelines share.

A pipeline evaluates each variant once (`evaluate_policy` keeps every greedy completion) and writes

    <folder>/<variant>.json        `tournament.save_completions` of that variant alone, items in order

as soon as the variant is evaluated, so a crash in a later stage keeps what was generated. Rating then only
reads texts:

    save_variant_completions(run / "completions", items, "sft", result.completions)     # after each evaluation
    ...
    texts = load_variant_completions(run / "completions", items, ["cpt", "sft", "grpo_semantic"])
    rating = rate_variants(items, texts, judges, extract=explanation_of(fmt), plot=run / "elo.png")
    results.update(rating)     # "elo": {variant: {"rating": R, "ci": [lo, hi]}} pooled; "tournament": the report
    print(format_report(rating["tournament"]))

A new judge, or a variant trained later, costs no new generation: load the files and rate again. What the
report holds (per judge and pooled: Bradley-Terry Elo with intervals over items, online Elo, the win/tie/loss
matrix, position bias) and how circular judges are kept out of the pool is in `tournament.py`.
"""

import re
from pathlib import Path

from .plots import plot_elo
from .tournament import elo_view, load_completions, run_tournament, save_completions

_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


def completions_path(folder, variant):
    """<folder>/<variant>.json; the variant name must be a plain file name (letters, digits, _ . + -)."""
    if not _NAME.fullmatch(variant) or variant in (".", ".."):
        raise ValueError(f"variant name {variant!r}: expected letters, digits, '_', '.', '+' or '-' only "
                         f"(it names a file)")
    return Path(folder) / f"{variant}.json"


def save_variant_completions(folder, items, variant, texts):
    """Write one variant's completions (one per item, in item order) to completions_path; returns the path."""
    path = completions_path(folder, variant)
    save_completions(path, items, {variant: list(texts)})
    return path


def load_variant_completions(folder, items, variants):
    """{variant: [texts]} read back from `folder`, checked to be about `items`, in order."""
    out = {}
    for variant in variants:
        path = completions_path(folder, variant)
        if not path.exists():
            raise FileNotFoundError(f"no cached completions for variant {variant!r}: expected {path} "
                                    f"(written by save_variant_completions when the variant is evaluated)")
        texts = load_completions(path, items)
        if variant not in texts:
            raise ValueError(f"{path}: expected completions of variant {variant!r}, found {sorted(texts)}")
        out[variant] = texts[variant]
    return out


def explanation_of(fmt):
    """text -> the explanation section of a completion in format `fmt` ("" when it has none): what judges read."""
    def extract(text):
        return fmt.parse(text).explanation or ""
    return extract


def rate_variants(items, completions, judges, *, extract=None, plot=None, **tournament_options):
    """Run the tournament between the variants' completions and return {"elo": ..., "tournament": report}.

    Args:
        items: the held-out items, in the order of every variant's completions.
        completions: {variant: [text per item]}, e.g. from load_variant_completions; its order is the report's
            order of the variants (and of the Elo view's keys).
        judges: list of judges (or {name: judge}); see judges.py. Circular ones are shown, not pooled.
        extract: text -> what the judges read (explanation_of(fmt)); None: the whole completion.
        plot: a path for the bar chart of the pooled ratings with their intervals (plots.plot_elo); None: none.
        **tournament_options: passed to tournament.run_tournament (combine, prior, n_boot, level, seed, ...).

    "elo" is elo_view(report): {variant: {"rating": R, "ci": [lo, hi]}} of the pooled, non-circular judges.
    """
    report = run_tournament(items, completions, judges, extract=extract, **tournament_options)
    view = elo_view(report)
    if plot is not None:
        pooled = report["pooled"]
        plot_elo(view, plot, title=f"Elo, pooled over {', '.join(pooled['judges'])}"
                                   + (" [CIRCULAR]" if pooled["circular"] else "")
                                   + f" ({int(report['method']['ci_level'] * 100)}% bootstrap CI over items)")
    return {"elo": view, "tournament": report}
