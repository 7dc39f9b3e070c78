"""Figures of the evaluation: Elo ratings with their intervals (like the paper's Figure 1), and the hacking report.

matplotlib is optional (the `plot` extra): without it each function prints a note and returns None.
"""


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[plot]'): no plot")
        return None
    return plt


def plot_elo(view, path, title="Elo rating (Bradley-Terry, 95% bootstrap CI over items)"):
    """Bar chart of {variant: {"rating": R, "ci": [lo, hi]}} (`tournament.elo_view`), highest first, with the
    interval as error bars and the mean rating as a dashed line; returns path."""
    plt = _pyplot()
    if plt is None:
        return None
    names = sorted(view, key=lambda v: -view[v]["rating"])
    ratings = [view[v]["rating"] for v in names]
    below = [r - view[v]["ci"][0] for v, r in zip(names, ratings)]
    above = [view[v]["ci"][1] - r for v, r in zip(names, ratings)]
    bottom = min(view[v]["ci"][0] for v in names) - 20
    fig, ax = plt.subplots(figsize=(1.4 * len(names) + 2, 4))
    ax.bar(names, [r - bottom for r in ratings], bottom=bottom, yerr=[below, above], capsize=6, color="tab:blue")
    for x, r in enumerate(ratings):
        ax.annotate(f"{r:.1f}", (x, r), textcoords="offset points", xytext=(12, 3), fontsize=9)
    ax.axhline(sum(ratings) / len(ratings), color="gray", lw=0.8, ls="--")
    ax.set_ylabel("Elo")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_hacking(report, path):
    """Mean score of each adversarial kind, one panel per reward (`hacking.hacking_report`); returns path."""
    plt = _pyplot()
    if plt is None:
        return None
    names, kinds = list(report["rewards"]), report["kinds"]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        means = [report["rewards"][name]["mean"][k] for k in kinds]
        colors = ["tab:green" if k in ("reference", "paraphrase") else "tab:red" for k in kinds]
        ax.barh(kinds, means, color=colors)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=10)
        ax.axvline(0, color="black", lw=0.6)
    axes[0][0].set_xlabel("mean reward (green: true explanations, red: hacks)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
